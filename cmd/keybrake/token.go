package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keybrake/keybrake/client"
)

func tokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke scoped issuer tokens (for IssueVaultKey Lambdas and workers)",
		Long: `An issuer token can only issue keys within its ceilings (daily cap, vendors,
endpoints, lifetime), and read and revoke the keys it issued. It cannot read the
audit log, other tokens' keys, or create tokens. Give one to each Lambda or
worker that issues vault keys, instead of the admin token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(tokenCreateCmd(g), tokenListCmd(g), tokenRevokeCmd(g))
	return cmd
}

func tokenCreateCmd(g *globals) *cobra.Command {
	var p client.TokenParams
	var idemKey string
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create an issuer token (its secret is printed once)",
		Example: `  keybrake token create --name sfn-billing --max-daily-usd-cap 500 --vendors stripe \
    --endpoints "POST /v1/payment_intents" --max-expires-in 6h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := required(cmd, map[string]string{
				"name":              "a name for the token, e.g. --name sfn-billing",
				"max-daily-usd-cap": "the largest daily cap its keys may have, e.g. --max-daily-usd-cap 500",
				"vendors":           "the vendors its keys may be for, e.g. --vendors stripe",
				"endpoints":         `what its keys may allow, e.g. --endpoints "POST /v1/payment_intents"`,
			}); err != nil {
				return err
			}
			var opts []client.Option
			if idemKey != "" {
				opts = append(opts, client.IdempotencyKey(idemKey))
			}
			return call(cmd.Context(), g, func(ctx context.Context, c *client.Client) (*client.Token, error) {
				return c.CreateToken(ctx, p, opts...)
			}, func(w *tabwriter.Writer, t *client.Token) {
				fmt.Fprintf(w, "token_id\t%s\n", t.ID)
				fmt.Fprintf(w, "token\t%s\t(shown once: store it in Secrets Manager or SSM now)\n", t.Token)
				fmt.Fprintf(w, "name\t%s\n", t.Name)
				fmt.Fprintf(w, "max_daily_usd_cap\t$%s\n", t.MaxDailyUSD)
				fmt.Fprintf(w, "vendors\t%s\n", strings.Join(t.Vendors, ", "))
				fmt.Fprintf(w, "endpoints\t%s\n", strings.Join(t.Endpoints, ", "))
				fmt.Fprintf(w, "max_expires_in\t%s\n", t.MaxExpiresIn)
				if t.MaxOutstandingUSD != nil {
					fmt.Fprintf(w, "max_outstanding_usd\t$%s\n", *t.MaxOutstandingUSD)
				}
				printScope(w, t.ScopeFields)
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&p.Name, "name", "", "a name for the token, e.g. sfn-billing (required)")
	fl.StringVar(&p.MaxDailyUSD, "max-daily-usd-cap", "", "largest daily_usd_cap a key may have (required)")
	fl.StringVar(&p.MaxTotalUSD, "max-total-usd-cap", "", "if set, keys must have a total_usd_cap at most this")
	fl.StringSliceVar(&p.Vendors, "vendors", nil, "vendors keys may be for, comma-separated (required)")
	fl.StringArrayVar(&p.Endpoints, "endpoints", nil, `endpoints keys may allow, "METHOD /path"; repeatable (required)`)
	fl.StringVar(&p.MaxExpiresIn, "max-expires-in", "6h", "longest expires_in a key may have")
	fl.StringVar(&idemKey, "idempotency-key", "", "sent as Idempotency-Key: a retry with the same key and flags gets the same token back")
	fl.StringVar(&p.MaxOutstandingUSD, "max-outstanding-usd", "", "if set, the daily caps of the token's active keys may add up to at most this")
	addScopeFlags(fl, &p.ScopeFields, "its keys")
	return cmd
}

func tokenListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List issuer tokens",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(cmd.Context(), g, func(ctx context.Context, c *client.Client) ([]client.Token, error) {
				page, err := c.ListTokens(ctx)
				if err != nil {
					return nil, err
				}
				return page.Data, nil
			}, func(w *tabwriter.Writer, tokens []client.Token) {
				fmt.Fprintln(w, "TOKEN_ID\tNAME\tSTATUS\tMAX/DAY\tVENDORS\tENDPOINTS\tMAX EXPIRES\tCREATED")
				for _, t := range tokens {
					fmt.Fprintf(w, "%s\t%s\t%s\t$%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Status, t.MaxDailyUSD,
						strings.Join(t.Vendors, ","), strings.Join(t.Endpoints, ", "), t.MaxExpiresIn, t.CreatedAt.Format(time.RFC3339))
				}
			})
		},
	}
}

func tokenRevokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke TOKEN_ID",
		Short: "Revoke an issuer token (keys it issued keep working until they expire)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(cmd.Context(), g, func(ctx context.Context, c *client.Client) (*client.Token, error) {
				return c.RevokeToken(ctx, args[0])
			}, func(w *tabwriter.Writer, t *client.Token) {
				fmt.Fprintf(w, "%s (%s) revoked at %s\n", t.ID, t.Name, t.RevokedAt.Format(time.RFC3339))
			})
		},
	}
}
