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

func webhookCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "webhook",
		Short: "Create, list and delete webhooks, and read their deliveries",
		Long: `A webhook receives signed events: key.spend_threshold, key.cap_exhausted,
key.revoked and run.spend_anomaly. Each delivery carries
Keybrake-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(webhookCreateCmd(g), webhookListCmd(g), webhookDeleteCmd(g), webhookDeliveriesCmd(g))
	return cmd
}

func webhookCreateCmd(g *globals) *cobra.Command {
	var p client.WebhookParams
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Register a receiver (its signing secret is printed once)",
		Example: `  keybrake webhook create --url https://hooks.example.com/keybrake \
    --event key.spend_threshold --event key.cap_exhausted --description "#billing-alerts"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := required(cmd, map[string]string{"url": "the receiver's http(s) URL, e.g. --url https://hooks.example.com/keybrake"}); err != nil {
				return err
			}
			return call(cmd.Context(), g, func(ctx context.Context, c *client.Client) (*client.Webhook, error) {
				return c.CreateWebhook(ctx, p)
			}, func(w *tabwriter.Writer, h *client.Webhook) {
				fmt.Fprintf(w, "webhook_id\t%s\n", h.ID)
				fmt.Fprintf(w, "secret\t%s\t(shown once: give it to the receiver to verify Keybrake-Signature)\n", h.Secret)
				fmt.Fprintf(w, "url\t%s\n", h.URL)
				fmt.Fprintf(w, "events\t%s\n", strings.Join(h.Events, ", "))
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&p.URL, "url", "", "the receiver's http(s) URL (required)")
	fl.StringSliceVar(&p.Events, "event", []string{"*"}, "event type to send; repeatable (default: all)")
	fl.StringVar(&p.Description, "description", "", "a note for people")
	setsField(fl, "event", "events")
	return cmd
}

func webhookListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List webhooks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(cmd.Context(), g, func(ctx context.Context, c *client.Client) ([]client.Webhook, error) {
				page, err := c.ListWebhooks(ctx)
				if err != nil {
					return nil, err
				}
				return page.Data, nil
			}, func(w *tabwriter.Writer, hooks []client.Webhook) {
				fmt.Fprintln(w, "WEBHOOK_ID\tURL\tEVENTS\tCREATED\tDESCRIPTION")
				for _, h := range hooks {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", h.ID, h.URL, strings.Join(h.Events, ","), h.CreatedAt.Format(time.RFC3339), h.Description)
				}
			})
		},
	}
}

func webhookDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete WEBHOOK_ID",
		Short: "Delete a webhook (its undelivered events are canceled)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(cmd.Context(), g, func(ctx context.Context, c *client.Client) (map[string]any, error) {
				return map[string]any{"webhook_id": args[0], "deleted": true}, c.DeleteWebhook(ctx, args[0])
			}, func(w *tabwriter.Writer, _ map[string]any) {
				fmt.Fprintf(w, "%s deleted\n", args[0])
			})
		},
	}
}

func webhookDeliveriesCmd(g *globals) *cobra.Command {
	var limit int
	var all bool
	cmd := &cobra.Command{
		Use:   "deliveries WEBHOOK_ID",
		Short: "A webhook's deliveries, newest first, with each attempt",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return list(cmd.Context(), g, all, "deliveries", func(ctx context.Context, c *client.Client, cursor string) (*client.Page[client.Delivery], error) {
				return c.ListDeliveries(ctx, args[0], limit, cursor)
			}, func(w *tabwriter.Writer, list []client.Delivery) {
				fmt.Fprintln(w, "EVENT_ID\tTYPE\tSTATE\tATTEMPTS\tLAST STATUS\tLAST ERROR\tNEXT ATTEMPT")
				for _, d := range list {
					next := ""
					if d.NextAttemptAt != nil {
						next = d.NextAttemptAt.Format(time.RFC3339)
					}
					status := ""
					if d.LastStatus != 0 {
						status = fmt.Sprint(d.LastStatus)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", d.EventID, d.EventType, d.State, d.Attempts, status, d.LastError, next)
				}
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 50, "deliveries per page")
	cmd.Flags().BoolVar(&all, "all", false, "follow pages to the end")
	return cmd
}
