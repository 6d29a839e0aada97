package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/keybrake/keybrake/pricing"
)

func pricingCmd(g *globals) *cobra.Command {
	var v vendorFlags
	cmd := &cobra.Command{
		Use:   "pricing",
		Short: "Print the effective price table (built-in defaults plus overrides)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			vc, err := v.config()
			if err != nil {
				return err
			}
			fx := vc.FX
			if fx == nil {
				fx = pricing.DefaultFX()
			}
			if g.json {
				rates := map[string]string{}
				for _, c := range fx.Currencies() {
					rates[c] = fx.RateString(c)
				}
				return g.printJSON(map[string]any{"fx_usd_per_unit": rates})
			}
			w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "CURRENCY\tUSD PER UNIT")
			for _, c := range fx.Currencies() {
				fmt.Fprintf(w, "%s\t%s\n", c, fx.RateString(c))
			}
			return w.Flush()
		},
	}
	addVendorFlags(cmd.Flags(), &v)
	return cmd
}
