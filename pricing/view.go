package pricing

import (
	"github.com/keybrake/keybrake"
)

// View is the effective catalogue as `keybrake pricing --json` prints it:
// every operation of every vendor with its price model and price, every
// amount a decimal string of dollars.
type View struct {
	Source     string            `json:"source"` // pricing file, or "built-in"
	FX         map[string]string `json:"fx_usd_per_unit"`
	Operations []OperationView   `json:"operations"`
}

// OperationView is one catalogue entry.
type OperationView struct {
	Operation string              `json:"operation"` // vendor-qualified: stripe.payment_intents.create
	Vendor    string              `json:"vendor"`
	Name      string              `json:"name"`
	Method    string              `json:"method"`
	Path      string              `json:"path"`
	Model     keybrake.PriceModel `json:"price_model"`
	Price     string              `json:"price"`
	Fixed     *keybrake.Micros    `json:"fixed_usd,omitempty"`
	Settings  map[string]any      `json:"settings,omitempty"`
	Note      string              `json:"note"`
	Added     bool                `json:"added_by_pricing_file,omitempty"`
}

// ViewOf renders the table's FX and the vendors' catalogues.
func (t *Table) ViewOf(vendors ...Target) View {
	v := View{Source: t.Source, FX: map[string]string{}, Operations: []OperationView{}}
	if v.Source == "" {
		v.Source = "built-in"
	}
	for _, c := range t.FX.Currencies() {
		v.FX[c] = t.FX.RateString(c)
	}
	for _, vendor := range vendors {
		for _, op := range vendor.Catalog().Operations() {
			ov := OperationView{Operation: op.FullName(), Vendor: op.Vendor, Name: op.Name, Method: op.Method,
				Path: op.Path(), Model: op.Model, Price: Describe(op), Note: op.Note, Added: op.Added}
			if op.HasFixed {
				f := op.Fixed
				ov.Fixed = &f
			}
			if c, ok := op.Pricer.(Configurable); ok {
				if ps := c.Params(); len(ps) > 0 {
					ov.Settings = ParamsView(ps)
				}
			}
			v.Operations = append(v.Operations, ov)
		}
	}
	return v
}
