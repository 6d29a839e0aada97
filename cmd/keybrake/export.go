package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/keybrake/keybrake/client"
)

// exportFlags are calls' --csv and --ndjson: the whole filtered audit log,
// streamed.
type exportFlags struct{ csv, ndjson bool }

func (e *exportFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&e.csv, "csv", false, "export every matching row as CSV (streamed; progress on stderr)")
	cmd.Flags().BoolVar(&e.ndjson, "ndjson", false, "export every matching row as JSON lines (streamed; progress on stderr)")
	cmd.MarkFlagsMutuallyExclusive("csv", "ndjson")
}

func (e *exportFlags) format() string {
	switch {
	case e.csv:
		return "csv"
	case e.ndjson:
		return "ndjson"
	}
	return ""
}

// exportCalls streams the audit log to stdout, with a progress line on
// stderr at most once a second and a count at the end.
func exportCalls(ctx context.Context, g *globals, p client.ListCallsParams, format string) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	start, last := time.Now(), time.Now()
	n, err := c.ExportCalls(ctx, p, format, g.stdout, func(rows int64) {
		if time.Since(last) >= time.Second {
			last = time.Now()
			fmt.Fprintf(g.stderr, "keybrake: %d rows exported…\n", rows)
		}
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stderr, "keybrake: exported %d rows in %s\n", n, time.Since(start).Round(time.Millisecond))
	return nil
}
