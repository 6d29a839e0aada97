package main

import (
	"fmt"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/keybrake/keybrake/pricing"
	"github.com/keybrake/keybrake/server"
)

func pricingCmd(g *globals) *cobra.Command {
	var v vendorFlags
	cmd := &cobra.Command{
		Use:   "pricing",
		Short: "Print the operation catalogue: every call Keybrake forwards and its price",
		Long: `Print the operation catalogue of every vendor: each operation Keybrake
forwards, with its method, path, price model and price, after the pricing
file (--pricing or KEYBRAKE_PRICING_FILE) and --fx-rate. A call that resolves
to no operation here is refused (unknown_operation); forbidden operations are
never forwarded. A malformed pricing file is reported with its line and
field, exactly as ` + "`keybrake serve`" + ` would refuse to start with it.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			t, err := v.prices()
			if err != nil {
				return err
			}
			vendors, err := server.BuildVendors(server.VendorConfig{}, t)
			if err != nil {
				return err
			}
			targets := make([]pricing.Target, len(vendors))
			for i, vd := range vendors {
				targets[i] = vd
			}
			view := t.ViewOf(targets...)
			if g.json {
				return g.printJSON(view)
			}
			return printCatalog(g, view)
		},
	}
	addVendorFlags(cmd.Flags(), &v)
	return cmd
}

func printCatalog(g *globals, v pricing.View) error {
	w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	source := v.Source
	if source == "built-in" {
		source = "built-in defaults"
	}
	fmt.Fprintf(w, "# prices from %s (USD); fx:", source)
	for _, c := range sortedKeys(v.FX) {
		fmt.Fprintf(w, " 1 %s = %s", c, v.FX[c])
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "OPERATION\tMETHOD\tPATH\tMODEL\tPRICE")
	for _, op := range v.Operations {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", op.Operation, op.Method, op.Path, op.Model, op.Price)
	}
	return w.Flush()
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
