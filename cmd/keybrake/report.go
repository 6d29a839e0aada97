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

// reportFlags are the flags the four spend reports share.
type reportFlags struct {
	p         client.ReportParams
	agentName string
	csv       bool
}

func (f *reportFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.p.Since, "since", "", "start of the window, RFC 3339 or YYYY-MM-DD (default: 30 days ago)")
	fl.StringVar(&f.p.Until, "until", "", "end of the window; a day includes the whole day (default: now)")
	fl.BoolVar(&f.csv, "csv", false, "print CSV (every row) instead of a table")
}

// params fills the optional agent_name filter: set, even empty, it filters.
func (f *reportFlags) params(cmd *cobra.Command) client.ReportParams {
	p := f.p
	if cmd.Flags().Changed("agent-name") {
		p.AgentName = &f.agentName
	}
	return p
}

// reportOrCSV prints a report as CSV with --csv, else through call.
func reportOrCSV[T any](cmd *cobra.Command, g *globals, f *reportFlags, name string,
	fetch func(ctx context.Context, c *client.Client, p client.ReportParams) (T, error), human func(w *tabwriter.Writer, v T)) error {
	p := f.params(cmd)
	if f.csv {
		c, err := g.client()
		if err != nil {
			return err
		}
		return c.ReportCSV(cmd.Context(), name, p, g.stdout)
	}
	return call(cmd.Context(), g, func(ctx context.Context, c *client.Client) (T, error) { return fetch(ctx, c, p) }, human)
}

func reportSubcommands(g *globals) []*cobra.Command {
	return []*cobra.Command{reportRunsCmd(g), reportAgentsCmd(g), reportDailyCmd(g), reportAnomaliesCmd(g)}
}

func reportRunsCmd(g *globals) *cobra.Command {
	var f reportFlags
	var all bool
	cmd := &cobra.Command{
		Use:   "runs",
		Short: "What each run cost: one row per agent_run_label, newest first",
		Example: `  keybrake report runs --since 2024-06-01 --label-prefix acme:
  keybrake report runs --csv > runs.csv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var more bool
			shown := 0
			defer func() { g.hintMore(more, "runs", shown) }()
			return reportOrCSV(cmd, g, &f, "runs", func(ctx context.Context, c *client.Client, p client.ReportParams) ([]keybrake.RunRow, error) {
				var out []keybrake.RunRow
				for {
					page, err := c.ReportRuns(ctx, p)
					if err != nil {
						return nil, err
					}
					out = append(out, page.Data...)
					if !all || !page.HasMore {
						more, shown = page.HasMore, len(out)
						return out, nil
					}
					p.Cursor = page.NextCursor
				}
			}, func(w *tabwriter.Writer, rows []keybrake.RunRow) {
				fmt.Fprintln(w, "RUN\tAGENT\tKEYS\tCALLS\tALLOWED\tDENIED\tUNKNOWN\tSPENT\tCAP/DAY\tLAST CALL")
				for _, r := range rows {
					fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t$%s\t$%s\t%s\n", r.AgentRunLabel, r.AgentName, r.Keys, r.Calls,
						r.AllowedCalls, r.DeniedCalls, r.UnknownCalls, r.Spent, r.Cap, r.LastCall.Format(time.RFC3339))
				}
			})
		},
	}
	f.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.p.LabelPrefix, "label-prefix", "", "only runs whose label starts with this")
	fl.StringVar(&f.agentName, "agent-name", "", "only runs of this agent_name (empty: keys issued without one)")
	fl.IntVar(&f.p.Limit, "limit", 50, "rows per page")
	fl.BoolVar(&all, "all", false, "follow pages to the end")
	return cmd
}

func reportAgentsCmd(g *globals) *cobra.Command {
	var f reportFlags
	cmd := &cobra.Command{
		Use:   "agents",
		Short: "Which agent costs most: runs grouped by agent_name (or label prefix), most expensive first",
		Example: `  keybrake report agents
  keybrake report agents --group-by label_prefix --depth 2      # {tenant}:{agent}:… labels`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return reportOrCSV(cmd, g, &f, "agents", func(ctx context.Context, c *client.Client, p client.ReportParams) (*client.AgentsReport, error) {
				return c.ReportAgents(ctx, p)
			}, func(w *tabwriter.Writer, r *client.AgentsReport) {
				head := "AGENT"
				if r.GroupBy == keybrake.GroupByLabelPrefix {
					head = "LABEL PREFIX"
				}
				fmt.Fprintln(w, head+"\tRUNS\tCALLS\tSPENT\tAVG/RUN\tMAX/RUN")
				for _, row := range r.Data {
					name, _ := row[r.GroupBy].(string)
					if name == "" {
						name = "(none)"
					}
					fmt.Fprintf(w, "%s\t%v\t%v\t$%v\t$%v\t$%v\n", name, row["runs"], row["calls"], row["spent_usd"], row["avg_run_usd"], row["max_run_usd"])
				}
			})
		},
	}
	f.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.p.GroupBy, "group-by", "agent_name", "agent_name or label_prefix")
	fl.IntVar(&f.p.Depth, "depth", 0, "with --group-by label_prefix: how many parts of the label")
	fl.StringVar(&f.p.Sep, "sep", ":", "with --group-by label_prefix: the separator of the label's parts")
	fl.IntVar(&f.p.Limit, "limit", 50, "rows")
	return cmd
}

func reportDailyCmd(g *globals) *cobra.Command {
	var f reportFlags
	cmd := &cobra.Command{
		Use:   "daily",
		Short: "The daily trend per vendor, with this month's projection",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return reportOrCSV(cmd, g, &f, "daily", func(ctx context.Context, c *client.Client, p client.ReportParams) (*client.DailyReport, error) {
				return c.ReportDaily(ctx, p)
			}, func(w *tabwriter.Writer, r *client.DailyReport) {
				fmt.Fprintln(w, "DAY\tVENDOR\tCALLS\tALLOWED\tDENIED\tSPENT")
				for _, row := range r.Rows {
					fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t$%s\n", row.Day, row.Vendor, row.Calls, row.AllowedCalls, row.DeniedCalls, row.Spent)
				}
				vendors := make([]string, 0, len(r.ProjectedMonth))
				for v := range r.ProjectedMonth {
					vendors = append(vendors, v)
				}
				sort.Strings(vendors)
				for _, v := range vendors {
					fmt.Fprintf(w, "projected %s\t%s\t\t\t\t$%s\n", r.Month, v, r.ProjectedMonth[v])
				}
			})
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&f.p.Vendor, "vendor", "", "only this vendor")
	return cmd
}

func reportAnomaliesCmd(g *globals) *cobra.Command {
	var f reportFlags
	cmd := &cobra.Command{
		Use:   "anomalies",
		Short: "Runs that spent over factor × the median of their agent's other runs",
		Example: `  keybrake report anomalies --factor 3
  keybrake report anomalies --min-usd 50          # also any run above $50`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return reportOrCSV(cmd, g, &f, "anomalies", func(ctx context.Context, c *client.Client, p client.ReportParams) (*client.AnomaliesReport, error) {
				return c.ReportAnomalies(ctx, p)
			}, func(w *tabwriter.Writer, r *client.AnomaliesReport) {
				fmt.Fprintln(w, "RUN\tAGENT\tSPENT\tBASELINE\tFACTOR\tCALLS\tLAST CALL")
				for _, row := range r.Data {
					base, factor := "-", "-"
					if row.Baseline != nil {
						base = "$" + row.Baseline.String()
					}
					if row.Factor != nil {
						factor = row.Factor.String() + "×"
					}
					fmt.Fprintf(w, "%s\t%s\t$%s\t%s\t%s\t%d\t%s\n", row.AgentRunLabel, row.AgentName, row.Spent, base, factor, row.Calls, row.LastCall.Format(time.RFC3339))
				}
			})
		},
	}
	f.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.p.Factor, "factor", "", "how many times the median is anomalous (default 3)")
	fl.StringVar(&f.p.MinUSD, "min-usd", "", "also list runs above this many dollars")
	fl.StringVar(&f.agentName, "agent-name", "", "only runs of this agent_name")
	fl.IntVar(&f.p.Limit, "limit", 50, "rows")
	return cmd
}
