package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keybrake/keybrake/client"
)

func keyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Issue, list, show and revoke vault keys",
		Args:  cobra.NoArgs, // "key frobnicate" is an error, not a help page
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(keyIssueCmd(g), keyListCmd(g), keyShowCmd(g), keyRevokeCmd(g))
	return cmd
}

func keyIssueCmd(g *globals) *cobra.Command {
	var p client.IssueParams
	var meta []string
	var alerts, idemKey string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "issue",
		Short: "Issue a vault key (its secret is printed once)",
		Example: `  keybrake key issue --vendor stripe --daily-usd-cap 50 \
    --endpoint "POST /v1/payment_intents" --expires-in 2h \
    --label arn:aws:states:us-east-1:123456789012:execution:billing:run-42
  VAULT_KEY=$(keybrake key issue -q --daily-usd-cap 50 --endpoint payment_intents.create)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, m := range meta {
				k, v, ok := strings.Cut(m, "=")
				if !ok {
					return fmt.Errorf("--metadata %q: want key=value", m)
				}
				if p.Metadata == nil {
					p.Metadata = map[string]string{}
				}
				p.Metadata[k] = v
			}
			if err := required(cmd, map[string]string{
				"daily-usd-cap": "the dollars the key may spend per UTC day, e.g. --daily-usd-cap 50",
				"endpoint":      `what the key may call, e.g. --endpoint "POST /v1/payment_intents" (keybrake pricing lists the operations)`,
			}); err != nil {
				return err
			}
			if quiet && g.json {
				return errors.New("--quiet prints only the vault key and --json the whole answer: choose one")
			}
			var err error
			if p.AlertThresholds, err = thresholdsFlag(alerts); err != nil {
				return err
			}
			var opts []client.Option
			if idemKey != "" {
				opts = append(opts, client.IdempotencyKey(idemKey))
			}
			return call(cmd.Context(), g, func(ctx context.Context, c *client.Client) (*client.Key, error) {
				return c.IssueKey(ctx, p, opts...)
			}, func(w *tabwriter.Writer, k *client.Key) {
				if quiet {
					fmt.Fprintln(w, k.VaultKey)
					return
				}
				fmt.Fprintf(w, "key_id\t%s\n", k.ID)
				fmt.Fprintf(w, "vault_key\t%s\t(shown once: store it now)\n", k.VaultKey)
				fmt.Fprintf(w, "vendor\t%s\n", k.Vendor)
				fmt.Fprintf(w, "daily_usd_cap\t$%s\n", k.DailyUSDCap)
				fmt.Fprintf(w, "allowed_endpoints\t%s\n", strings.Join(k.AllowedEndpoints, ", "))
				printGrants(w, k)
				fmt.Fprintf(w, "expires_at\t%s\n", k.ExpiresAt.Format(time.RFC3339))
				if k.AgentRunLabel != "" {
					fmt.Fprintf(w, "agent_run_label\t%s\n", k.AgentRunLabel)
				}
				printPolicy(w, k.KeyPolicy)
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&p.Vendor, "vendor", "stripe", "vendor the key is for")
	fl.StringVar(&p.DailyUSDCap, "daily-usd-cap", "", "dollars the key may spend per UTC day (required)")
	fl.StringArrayVar(&p.AllowedEndpoints, "endpoint", nil, "allowed endpoint `RULE`: \"METHOD /path\" with * for one segment, or an operation name such as payment_intents.create (see keybrake pricing); repeatable (required)")
	fl.StringVar(&p.ExpiresIn, "expires-in", "1h", `lifetime, e.g. "30m" or "2h"`)
	fl.StringVar(&p.AgentRunLabel, "label", "", "agent_run_label, e.g. a Step Functions execution ARN")
	fl.StringVar(&p.AgentName, "agent-name", "", "agent_name")
	fl.StringVar(&p.TotalUSDCap, "total-usd-cap", "", "lifetime cap in dollars")
	fl.StringVar(&p.MaxUSDPerCall, "max-usd-per-call", "", "largest single call in dollars")
	fl.StringArrayVar(&meta, "metadata", nil, "key=value metadata; repeatable")
	addPolicyFlags(fl, &p.KeyPolicy)
	fl.StringVar(&alerts, "alert-thresholds", "", `percents of the daily cap that fire key.spend_threshold, e.g. 50,90; "none" for no alerts (default 50,80,100)`)
	fl.StringVar(&idemKey, "idempotency-key", "", "sent as Idempotency-Key: a retry with the same key and flags gets the same key_id and vault_key back, not a second key")
	fl.BoolVarP(&quiet, "quiet", "q", false, "print only the vault key, as in VAULT_KEY=$(keybrake key issue -q …)")
	setsField(fl, "endpoint", "allowed_endpoints")
	setsField(fl, "label", "agent_run_label")
	return cmd
}

func keyListCmd(g *globals) *cobra.Command {
	var p client.ListKeysParams
	var all, quiet bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List vault keys, newest first",
		Example: `  KEY_ID=$(keybrake key list --label run-1 -q)`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if quiet && g.json {
				return errors.New("--quiet prints only key ids and --json whole keys: choose one")
			}
			return list(cmd.Context(), g, all, "keys", func(ctx context.Context, c *client.Client, cursor string) (*client.Page[client.Key], error) {
				p.Cursor = cursor
				return c.ListKeys(ctx, p)
			}, func(w *tabwriter.Writer, keys []client.Key) {
				if quiet {
					for _, k := range keys {
						fmt.Fprintln(w, k.ID)
					}
					return
				}
				fmt.Fprintln(w, "KEY_ID\tVENDOR\tSTATUS\tSPENT\tCAP/DAY\tCALLS\tALLOWED\tDENIED\tEXPIRES\tLABEL")
				for _, k := range keys {
					fmt.Fprintf(w, "%s\t%s\t%s\t$%s\t$%s\t%d\t%d\t%d\t%s\t%s\n", k.ID, k.Vendor, k.Status, deref(k.SpentUSD), k.DailyUSDCap,
						derefInt(k.Calls), derefInt(k.AllowedCalls), derefInt(k.DeniedCalls), k.ExpiresAt.Format(time.RFC3339), k.AgentRunLabel)
				}
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&p.AgentRunLabel, "label", "", "only keys with this agent_run_label")
	fl.StringVar(&p.Status, "status", "", "only active, revoked or expired keys")
	fl.IntVar(&p.Limit, "limit", 50, "keys per page")
	fl.BoolVar(&all, "all", false, "follow pages to the end")
	fl.BoolVarP(&quiet, "quiet", "q", false, "print only the key ids, one a line")
	setsField(fl, "label", "agent_run_label")
	return cmd
}

func keyShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show KEY_ID",
		Short: "Show a key's policy, status and spend",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(cmd.Context(), g, func(ctx context.Context, c *client.Client) (*client.Key, error) {
				return c.GetKey(ctx, args[0])
			}, func(w *tabwriter.Writer, k *client.Key) {
				fmt.Fprintf(w, "key_id\t%s\n", k.ID)
				fmt.Fprintf(w, "status\t%s\n", k.Status)
				fmt.Fprintf(w, "vendor\t%s\n", k.Vendor)
				fmt.Fprintf(w, "allowed_endpoints\t%s\n", strings.Join(k.AllowedEndpoints, ", "))
				printGrants(w, k)
				fmt.Fprintf(w, "daily_usd_cap\t$%s\n", k.DailyUSDCap)
				if k.TotalUSDCap != nil {
					fmt.Fprintf(w, "total_usd_cap\t$%s\n", *k.TotalUSDCap)
				}
				if k.MaxUSDPerCall != nil {
					fmt.Fprintf(w, "max_usd_per_call\t$%s\n", *k.MaxUSDPerCall)
				}
				printPolicy(w, k.KeyPolicy)
				fmt.Fprintf(w, "spent_usd\t$%s\n", deref(k.SpentUSD))
				fmt.Fprintf(w, "spent_today_usd\t$%s\n", deref(k.SpentTodayUSD))
				fmt.Fprintf(w, "reserved_usd\t$%s\n", deref(k.ReservedUSD))
				fmt.Fprintf(w, "remaining_usd\t$%s\n", deref(k.RemainingUSD))
				fmt.Fprintf(w, "calls\t%d (%d allowed, %d denied)\n", derefInt(k.Calls), derefInt(k.AllowedCalls), derefInt(k.DeniedCalls))
				fmt.Fprintf(w, "created_at\t%s\n", k.CreatedAt.Format(time.RFC3339))
				fmt.Fprintf(w, "expires_at\t%s\n", k.ExpiresAt.Format(time.RFC3339))
				if k.RevokedAt != nil {
					fmt.Fprintf(w, "revoked_at\t%s\n", k.RevokedAt.Format(time.RFC3339))
				}
				if k.AgentRunLabel != "" {
					fmt.Fprintf(w, "agent_run_label\t%s\n", k.AgentRunLabel)
				}
			})
		},
	}
}

func keyRevokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke KEY_ID",
		Short: "Revoke a key: its very next call is refused",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(cmd.Context(), g, func(ctx context.Context, c *client.Client) (*client.Revocation, error) {
				return c.RevokeKey(ctx, args[0])
			}, func(w *tabwriter.Writer, r *client.Revocation) {
				fmt.Fprintf(w, "%s revoked at %s\n", r.ID, r.RevokedAt.Format(time.RFC3339))
			})
		},
	}
}
