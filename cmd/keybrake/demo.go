package main

import (
	"github.com/spf13/cobra"

	"github.com/keybrake/keybrake/internal/demo"
)

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
