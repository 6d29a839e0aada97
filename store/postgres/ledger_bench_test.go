package postgres_test

import (
	"fmt"
	"testing"

	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/store"
	"github.com/keybrake/keybrake/store/postgres"
	"github.com/keybrake/keybrake/store/postgres/pgtest"
	"github.com/keybrake/keybrake/store/storetest"
)

// BenchmarkCalls measures Decide+Settle from 64 concurrent callers with
// group commit on (batch=64, the default) and off (batch=1: a transaction
// per call, as before issue 13), on one hot key and on 64 keys, for one
// replica and for three (independent stores, each with a pool of 10, as
// three keybrake serve processes would have):
//
//	KEYBRAKE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	  go test -run '^$' -bench Calls -benchtime 5s ./store/postgres/
func BenchmarkCalls(b *testing.B) {
	base := kbtest.PostgresURL(b)
	for _, keys := range []int{1, 64} {
		for _, replicas := range []int{1, 3} {
			for _, batch := range []int{64, 1} {
				b.Run(fmt.Sprintf("keys=%d/replicas=%d/batch=%d", keys, replicas, batch), func(b *testing.B) {
					url, _ := pgtest.Schema(b, base)
					stores := make([]store.Store, replicas)
					for i := range stores {
						s, err := postgres.Open(b.Context(), url, postgres.Options{MaxConns: 10, BatchSize: batch})
						if err != nil {
							b.Fatal(err)
						}
						b.Cleanup(func() { s.Close() })
						stores[i] = s
					}
					storetest.BenchCalls(b, stores, keys)
				})
			}
		}
	}
}
