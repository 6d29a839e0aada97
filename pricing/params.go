package pricing

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"

	"github.com/keybrake/keybrake"
)

// Configurable is a pricer whose settings a pricing file may override, under
// the operation's name: operations.twilio.messages.create.sms. The pricer
// declares them; the file parser, `keybrake pricing` and the docs read the
// same declaration, so a setting exists in one place.
type Configurable interface {
	Params() Params
}

// Params are the settings of one pricer, or of a group of them.
type Params []Param

// Param is one named setting. Value points at the setting itself:
//
//	*keybrake.Micros  a dollar amount ("0.0083")
//	*CountryPrices    {default: "0.10", countries: {US: "0.0083", "+1876": "0.12"}}
//	*time.Duration    a duration ("10m", "1h") or whole seconds
//	*int              a non-negative integer
//	Params            a group of settings, written as a mapping
type Param struct {
	Name  string
	Doc   string
	Value any
}

func (ps Params) names() string {
	var n []string
	for _, p := range ps {
		n = append(n, p.Name)
	}
	return strings.Join(n, ", ")
}

// params reads a mapping of settings.
func (p *fileParser) params(n ast.Node, field string, ps Params) error {
	entries, err := p.mapping(n, field)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := p.setting(e, field, ps, ps.names()); err != nil {
			return err
		}
	}
	return nil
}

// setting reads one entry into the setting it names; want lists the
// accepted names for the error.
func (p *fileParser) setting(e entry, field string, ps Params, want string) error {
	f := join(field, e.key)
	for i := range ps {
		if ps[i].Name == e.key {
			return p.param(e.value, f, ps[i].Value)
		}
	}
	return p.err(e.keyNode, f, "unknown field (want %s)", want)
}

func (p *fileParser) param(n ast.Node, field string, v any) error {
	switch x := v.(type) {
	case *keybrake.Micros:
		m, err := p.money(n, field)
		if err != nil {
			return err
		}
		*x = m
	case *CountryPrices:
		return p.countries(n, field, x)
	case *time.Duration:
		d, err := p.duration(n, field)
		if err != nil {
			return err
		}
		*x = d
	case *int:
		s, ok := scalarText(n)
		i, err := strconv.Atoi(strings.TrimSpace(s))
		if !ok || err != nil || i < 0 || i > 1000 {
			return p.err(n, field, "want a whole number from 0 to 1000, got %s", describe(n))
		}
		*x = i
	case Params:
		return p.params(n, field, x)
	default:
		return fmt.Errorf("pricing: setting %s has unsupported type %T", field, v)
	}
	return nil
}

// duration reads "10m", "1h30m" or whole seconds.
func (p *fileParser) duration(n ast.Node, field string) (time.Duration, error) {
	s, ok := scalarText(n)
	s = strings.TrimSpace(s)
	if !ok || s == "" {
		return 0, p.err(n, field, "want a duration such as \"10m\" or whole seconds, got %s", describe(n))
	}
	if secs, err := strconv.Atoi(s); err == nil {
		if secs <= 0 {
			return 0, p.err(n, field, "must be greater than 0")
		}
		return time.Duration(secs) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, p.err(n, field, "%q is not a positive duration (want \"10m\", \"1h\" or whole seconds)", s)
	}
	return d, nil
}

// ParamsView renders settings for `keybrake pricing --json`: dollar amounts
// as decimal strings, price lists as {countries, default}.
func ParamsView(ps Params) map[string]any {
	out := map[string]any{}
	for _, p := range ps {
		switch x := p.Value.(type) {
		case *keybrake.Micros:
			out[p.Name] = *x
		case *CountryPrices:
			out[p.Name] = countryView(*x)
		case *time.Duration:
			out[p.Name] = x.String()
		case *int:
			out[p.Name] = *x
		case Params:
			out[p.Name] = ParamsView(x)
		}
	}
	return out
}

// CountryView is a destination price list; Default is absent when
// destinations without a price are refused.
type CountryView struct {
	Countries map[string]keybrake.Micros `json:"countries"`
	Default   *keybrake.Micros           `json:"default"`
}

func countryView(c CountryPrices) CountryView {
	v := CountryView{Countries: map[string]keybrake.Micros{}}
	for k, p := range c.ByKey {
		v.Countries[k] = p
	}
	if c.HasDefault {
		d := c.Default
		v.Default = &d
	}
	return v
}
