package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/internal/demo"
)

// maxDemoCharges bounds the fan-out: each charge is a goroutine and a
// connection on this machine.
const maxDemoCharges = 10000

func demoCmd(g *globals) *cobra.Command {
	var o demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Play the Step Functions fan-out scenario against a local Stripe sandbox",
		Long: `Play the seed's scenario on this machine, with no secrets and no network:
start Keybrake on a temporary SQLite file in front of a built-in local Stripe
sandbox, issue a $50/day key for POST /v1/payment_intents labelled with a
Step Functions execution ARN, fan out 300 concurrent $1 charges with
Idempotency-Key <execution>-<index>, then report what was charged, what was
refused with cap_exhausted, the per-run summary, and a revoke.

With --ui it first plays a month of sandbox history across Stripe, Twilio
and Resend (real proxied calls, with the store's clock moved back a day at a
time), then leaves the server running with the web dashboard, and prints
its URL and the admin token to sign in with. Ctrl-C stops it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Charges < 1 || o.Charges > maxDemoCharges {
				return fmt.Errorf("--charges %d: want a number of concurrent charges from 1 to %d", o.Charges, maxDemoCharges)
			}
			if c, err := keybrake.ParseUSD(o.CapUSD); err != nil || c <= 0 {
				return fmt.Errorf("--cap %q: want a daily cap in dollars greater than 0, such as 50 or 12.50", o.CapUSD)
			}
			o.Stdout, o.Stderr, o.JSON = g.stdout, g.stderr, g.json
			return demo.Run(cmd.Context(), o)
		},
	}
	cmd.Flags().IntVar(&o.Charges, "charges", 300, "number of concurrent $1 charges")
	cmd.Flags().StringVar(&o.CapUSD, "cap", "50", "daily cap in dollars")
	cmd.Flags().BoolVar(&o.UI, "ui", false, "seed a month of history, then keep the server running with the dashboard at /ui/")
	cmd.Flags().StringVar(&o.Addr, "addr", "127.0.0.1:0", "listen address of the demo's Keybrake (default: a free local port)")
	return cmd
}
