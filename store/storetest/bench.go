package storetest

import (
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
// default window (the last 30 days) and over all BenchDays days.
func BenchReports(b *testing.B, s store.Store, now time.Time) {
	for _, w := range []struct {
		name string
		days int
	}{{"30d", keybrake.DefaultReportDays}, {"90d", BenchDays}} {
		win := keybrake.Window{Since: now.AddDate(0, 0, -w.days), Until: now.Add(time.Minute)}
		b.Run("runs/"+w.name, func(b *testing.B) {
			for b.Loop() {
				if rows, _, err := s.ReportRuns(b.Context(), keybrake.RunsFilter{Window: win}); err != nil || len(rows) == 0 {
					b.Fatal(err, len(rows))
				}
			}
		})
		b.Run("agents/"+w.name, func(b *testing.B) {
			for b.Loop() {
				if rows, err := s.ReportAgents(b.Context(), keybrake.AgentsFilter{Window: win}); err != nil || len(rows) == 0 {
					b.Fatal(err, len(rows))
				}
			}
		})
		b.Run("agents_by_prefix/"+w.name, func(b *testing.B) {
			for b.Loop() {
				if rows, err := s.ReportAgents(b.Context(), keybrake.AgentsFilter{Window: win, GroupBy: keybrake.GroupByLabelPrefix, Depth: 1, Sep: "-"}); err != nil || len(rows) == 0 {
					b.Fatal(err, len(rows))
				}
			}
		})
		b.Run("daily/"+w.name, func(b *testing.B) {
			for b.Loop() {
				if rep, err := s.ReportDaily(b.Context(), keybrake.DailyFilter{Window: win}); err != nil || len(rep.Rows) == 0 {
					b.Fatal(err)
				}
			}
		})
		b.Run("anomalies/"+w.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.ReportAnomalies(b.Context(), keybrake.AnomalyFilter{Window: win}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("export_page", func(b *testing.B) {
		for b.Loop() {
			if rows, _, err := s.ListCalls(b.Context(), keybrake.CallFilter{Limit: keybrake.MaxPageSize}); err != nil || len(rows) == 0 {
				b.Fatal(err)
			}
		}
	})
}
