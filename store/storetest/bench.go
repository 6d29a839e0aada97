package storetest

import (
	"errors"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
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

// BenchCalls measures the ledger's share of proxied calls: each op is one
// Decide and one Settle (a 2xx at the estimate), from 64 concurrent callers
// (as wrk -c64), spread over keys keys and over the given stores (one per
// replica, sharing a database). It reports calls/s and the p50 and p99 of
// one call's two store round trips. The caps are never reached.
func BenchCalls(b *testing.B, stores []store.Store, keys int) {
	rules, err := keybrake.ParseRules([]string{rulePI})
	if err != nil {
		b.Fatal(err)
	}
	ks := make([]*keybrake.Key, keys)
	for i := range ks {
		k, err := stores[0].CreateKey(b.Context(), &keybrake.Key{ID: keybrake.NewID("key_"), Vendor: "stripe",
			DailyCap: 1 << 50, Rules: rules}, keybrake.HashSecret(keybrake.NewVaultKey()), time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		ks[i] = k
	}
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		n := int(next.Add(1))
		s, k := stores[n%len(stores)], ks[n%len(ks)]
		a := keybrake.Attempt{KeyID: k.ID, Vendor: "stripe", Method: "POST", Path: pathPI, Rule: rulePI,
			Estimate: 10_000, Instance: instance}
		var mine []time.Duration
		for pb.Next() {
			start := time.Now()
			d, err := s.Decide(b.Context(), a)
			if err != nil || !d.Allowed {
				b.Errorf("Decide: %v %v", err, d.Err)
				return
			}
			// As a PaymentIntent create settles: the object it made and
			// the vendor's request id go on the audit row.
			id := strconv.FormatInt(d.CallID, 10)
			if _, err := s.Settle(b.Context(), keybrake.Settlement{CallID: d.CallID,
				Outcome: keybrake.OutcomeForwarded, Status: 200, Actual: 10_000,
				ObjectID: "pi_bench" + id, VendorRequestID: "req_bench" + id}); err != nil {
				b.Errorf("Settle: %v", err)
				return
			}
			mine = append(mine, time.Since(start))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
	}
	b.ReportMetric(0, "ns/op")
}
