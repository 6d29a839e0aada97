package postgres_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/store"
	"github.com/keybrake/keybrake/store/postgres"
	"github.com/keybrake/keybrake/store/postgres/pgtest"
)

// BenchmarkHotKey measures one hot key on PostgreSQL: every decision locks
// the key's row, so all replicas serialise on it. "replicas" is the number
// of independent stores (each with its own connection pool, as each
// keybrake serve process has) sharing the database.
//
//	KEYBRAKE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	  go test -run '^$' -bench HotKey -benchtime 5s ./store/postgres/
//
// reserve: one Decide (status, caps, reservation, audit row) per op.
// call: Decide then Settle, the two transactions of one proxied call.
func BenchmarkHotKey(b *testing.B) {
	base := kbtest.PostgresURL(b)
	for _, mode := range []string{"reserve", "call"} {
		for _, replicas := range []int{1, 3} {
			b.Run(fmt.Sprintf("%s/replicas=%d", mode, replicas), func(b *testing.B) {
				url, _ := pgtest.Schema(b, base)
				stores := make([]store.Store, replicas)
				for i := range stores {
					s, err := postgres.Open(b.Context(), url, postgres.Options{})
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { s.Close() })
					stores[i] = s
				}
				rules, _ := keybrake.ParseRules([]string{"POST /v1/payment_intents"})
				k, err := stores[0].CreateKey(b.Context(), &keybrake.Key{ID: keybrake.NewID("key_"), Vendor: "stripe",
					DailyCap: 1 << 50, Rules: rules}, keybrake.HashSecret(keybrake.NewVaultKey()), time.Hour)
				if err != nil {
					b.Fatal(err)
				}
				a := keybrake.Attempt{KeyID: k.ID, Vendor: "stripe", Method: "POST", Path: "/v1/payment_intents",
					Rule: "POST /v1/payment_intents", Estimate: 10_000, Instance: "inst_bench"}
				var next atomic.Int64
				b.SetParallelism(16) // 16 × GOMAXPROCS callers in flight
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					s := stores[int(next.Add(1))%replicas]
					for pb.Next() {
						d, err := s.Decide(b.Context(), a)
						if err != nil || !d.Allowed {
							b.Errorf("Decide: %v %v", err, d.Err)
							return
						}
						if mode == "call" {
							if _, err := s.Settle(b.Context(), keybrake.Settlement{CallID: d.CallID,
								Outcome: keybrake.OutcomeForwarded, Status: 200, Actual: 10_000}); err != nil {
								b.Errorf("Settle: %v", err)
								return
							}
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), mode+"s/s")
			})
		}
	}
}
