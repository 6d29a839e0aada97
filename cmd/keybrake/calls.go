package main

import (
	"context"
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
)

func callsCmd(g *globals) *cobra.Command {
	var p client.ListCallsParams
	var all bool
	var export exportFlags
	cmd := &cobra.Command{
		Use:   "calls",
		Short: "Read the audit log, newest first",
		Example: `  keybrake calls --key vk_…
  keybrake calls --outcome unknown      # calls whose outcome is unknown (counted as spend)
  keybrake calls --since 2024-06-01 --csv > audit.csv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if export.format() != "" {
				return exportCalls(cmd.Context(), g, p, export.format())
			}
			return list(cmd.Context(), g, all, "calls", func(ctx context.Context, c *client.Client, cursor string) (*client.Page[client.Call], error) {
				p.Cursor = cursor
				return c.ListCalls(ctx, p)
			}, func(w *tabwriter.Writer, calls []client.Call) {
				fmt.Fprintln(w, "ID\tTIME\tKEY_ID\tMETHOD\tPATH\tOPERATION\tOUTCOME\tSTATUS\tEST\tACTUAL\tOBJECT\tITEM")
				for _, c := range calls {
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t$%s\t$%s\t%s\t%s\n", c.ID, c.Time.Format(time.RFC3339), c.KeyID,
						c.Method, c.Path, c.Operation, c.Outcome, c.Status, c.Estimated, c.Actual, c.ObjectID, c.Item)
				}
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&p.KeyID, "key", "", "only calls of this key_id")
	fl.StringVar(&p.AgentRunLabel, "label", "", "only calls of this agent_run_label")
	fl.StringVar(&p.Outcome, "outcome", "", "only this outcome: forwarded, unknown, replayed, denied_cap_exhausted, …")
	fl.IntVar(&p.Limit, "limit", 50, "rows per page")
	fl.BoolVar(&all, "all", false, "follow pages to the end")
	fl.StringVar(&p.Since, "since", "", "only calls at or after this time, RFC 3339 or YYYY-MM-DD")
	fl.StringVar(&p.Until, "until", "", "only calls before this time; a day includes the whole day")
	export.add(cmd)
	setsField(fl, "key", "key_id")
	setsField(fl, "label", "agent_run_label")
	return cmd
}

func reportCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "report AGENT_RUN_LABEL | runs | agents | daily | anomalies",
		Short: "Per-run spend summary: keys, calls allowed and denied, spend by endpoint; or one of the four spend reports",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(cmd.Context(), g, func(ctx context.Context, c *client.Client) (*keybrake.RunSummary, error) {
				return c.RunSummary(ctx, args[0])
			}, printRunSummary)
		},
	}
	cmd.AddCommand(reportSubcommands(g)...)
	return cmd
}

// printRunSummary renders a run summary as a short report.
func printRunSummary(w *tabwriter.Writer, s *keybrake.RunSummary) {
	fmt.Fprintf(w, "run\t%s\n", s.AgentRunLabel)
	fmt.Fprintf(w, "spent\t$%s (reserved $%s)\n", s.Spent, s.Reserved)
	fmt.Fprintf(w, "calls\t%d (%d allowed, %d denied; %d of the allowed with an unknown outcome)\n", s.Calls, s.Allowed, s.Denied, s.Unknown)
	if s.DeniedUSD > 0 {
		fmt.Fprintf(w, "refused\t$%s asked by the denied calls\n", s.DeniedUSD)
	}
	if s.FirstCall != nil {
		fmt.Fprintf(w, "first / last call\t%s / %s\n", s.FirstCall.Format(time.RFC3339), s.LastCall.Format(time.RFC3339))
	}
	for _, k := range s.Keys {
		fmt.Fprintf(w, "key\t%s (%s, %s) spent $%s\n", k.ID, k.Vendor, k.Status, k.Spent)
	}
	for _, e := range s.ByEndpoint {
		fmt.Fprintf(w, "endpoint\t%s %s: %d calls, $%s\n", e.Vendor, e.Endpoint, e.Calls, e.Spent)
	}
	codes := make([]string, 0, len(s.DeniedByCode))
	for c := range s.DeniedByCode {
		codes = append(codes, string(c))
	}
	sort.Strings(codes)
	for _, c := range codes {
		fmt.Fprintf(w, "denied\t%s: %d\n", c, s.DeniedByCode[keybrake.Code(c)])
	}
}

func deref(m *keybrake.Micros) keybrake.Micros {
	if m == nil {
		return 0
	}
	return *m
}

func derefInt(n *int64) int64 {
	if n == nil {
		return 0
	}
	return *n
}
