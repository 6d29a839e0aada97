package storetest

import (
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/store"
)

// The shape of the audit log the report benchmarks seed: runs of
// BenchCallsPerRun calls each, one key per run, spread evenly over
// BenchDays days ending now, across BenchAgents agent names; one call in
// ten is Twilio, one in twenty a cap denial.
const (
	BenchCallsPerRun = 100
	BenchAgents      = 500
	BenchDays        = 90
)

// BenchRows is the number of audit rows to seed: KEYBRAKE_BENCH_ROWS, or 10
// million.
func BenchRows(b *testing.B) int {
	if v := os.Getenv("KEYBRAKE_BENCH_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < BenchCallsPerRun {
			b.Fatalf("KEYBRAKE_BENCH_ROWS=%q: want a number of rows", v)
		}
		return n
	}
	return 10_000_000
}

// BenchReports times each report on a store seeded as above, over the
// default window (the last 30 days) and over all BenchDays days. Each runs
// once before the timed loop, to warm the caches; that first run is
// reported as cold_s.
func BenchReports(b *testing.B, s store.Store, now time.Time) {
	run := func(name string, f func() error) {
		b.Run(name, func(b *testing.B) {
			t0 := time.Now()
			if err := f(); err != nil {
				b.Fatal(err)
			}
			cold := time.Since(t0)
			for b.Loop() {
				if err := f(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(cold.Seconds(), "cold_s")
		})
	}
	nonEmpty := func(n int, err error) error {
		if err == nil && n == 0 {
			return errors.New("the report is empty")
		}
		return err
	}
	for _, w := range []struct {
		name string
		days int
	}{{"30d", keybrake.DefaultReportDays}, {"90d", BenchDays}} {
		win := keybrake.Window{Since: now.AddDate(0, 0, -w.days), Until: now.Add(time.Minute)}
		run("runs/"+w.name, func() error {
			rows, _, err := s.ReportRuns(b.Context(), keybrake.RunsFilter{Window: win})
			return nonEmpty(len(rows), err)
		})
		run("agents/"+w.name, func() error {
			rows, err := s.ReportAgents(b.Context(), keybrake.AgentsFilter{Window: win})
			return nonEmpty(len(rows), err)
		})
		run("agents_by_prefix/"+w.name, func() error {
			rows, err := s.ReportAgents(b.Context(), keybrake.AgentsFilter{Window: win, GroupBy: keybrake.GroupByLabelPrefix, Depth: 1, Sep: "-"})
			return nonEmpty(len(rows), err)
		})
		run("daily/"+w.name, func() error {
			rep, err := s.ReportDaily(b.Context(), keybrake.DailyFilter{Window: win})
			if err != nil {
				return err
			}
			return nonEmpty(len(rep.Rows), nil)
		})
		run("anomalies/"+w.name, func() error {
			_, err := s.ReportAnomalies(b.Context(), keybrake.AnomalyFilter{Window: win})
			return err
		})
	}
	run("export_page", func() error {
		rows, _, err := s.ListCalls(b.Context(), keybrake.CallFilter{Limit: keybrake.MaxPageSize})
		return nonEmpty(len(rows), err)
	})
}
