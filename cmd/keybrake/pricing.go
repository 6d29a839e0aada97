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
		Long: `Print the effective price table: the built-in defaults, overridden by the
pricing file (--pricing or KEYBRAKE_PRICING_FILE) and then by --fx-rate.
A malformed pricing file is reported with its line and field, exactly as
` + "`keybrake serve`" + ` would refuse to start with it.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			t, err := v.prices()
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(t.View())
			}
			return printPrices(g, t)
		},
	}
	addVendorFlags(cmd.Flags(), &v)
	return cmd
}

func printPrices(g *globals, t *pricing.Table) error {
	w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	source := t.Source
	if source == "" {
		source = "built-in defaults"
	}
	fmt.Fprintf(w, "# prices from %s (USD)\n", source)
	fmt.Fprintln(w, "VENDOR\tITEM\tPRICE")
	for _, c := range t.FX.Currencies() {
		fmt.Fprintf(w, "stripe\tfx: 1 %s\t%s\n", c, t.FX.RateString(c))
	}
	endpoints := func(vendor string, eps pricing.Endpoints) {
		for _, ep := range eps {
			fmt.Fprintf(w, "%s\tper call: %s\t%s\n", vendor, ep.Rule.String(), ep.Price)
		}
	}
	endpoints("stripe", t.Stripe.Endpoints)
	countries := func(what string, c pricing.CountryPrices) {
		for _, k := range c.Keys() {
			fmt.Fprintf(w, "twilio\t%s to %s\t%s\n", what, k, c.ByKey[k])
		}
		if c.HasDefault {
			fmt.Fprintf(w, "twilio\t%s to other destinations\t%s\n", what, c.Default)
		} else {
			fmt.Fprintf(w, "twilio\t%s to other destinations\trefused (no default)\n", what)
		}
	}
	countries("SMS segment", t.Twilio.SMS)
	countries("MMS message", t.Twilio.MMS)
	fmt.Fprintf(w, "twilio\tcall (reserved maximum)\t%s\n", t.Twilio.CallMax)
	endpoints("twilio", t.Twilio.Endpoints)
	fmt.Fprintf(w, "resend\temail (per recipient)\t%s\n", t.Resend.PerEmail)
	endpoints("resend", t.Resend.Endpoints)
	return w.Flush()
}
