package sqlite_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/keybrake/keybrake/store"
	"github.com/keybrake/keybrake/store/sqlite"
	"github.com/keybrake/keybrake/store/storetest"
)

// BenchmarkCalls measures Decide+Settle from 64 concurrent callers with
// group commit on (batch=64, the default) and off (batch=1: a transaction
// per call, as before issue 13), on one hot key and on 64 keys, with
// synchronous=FULL:
//
//	go test -run '^$' -bench Calls -benchtime 5s ./store/sqlite/
func BenchmarkCalls(b *testing.B) {
	for _, keys := range []int{1, 64} {
		for _, batch := range []int{64, 1} {
			b.Run(fmt.Sprintf("keys=%d/batch=%d", keys, batch), func(b *testing.B) {
				s, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "keybrake.db"), sqlite.Options{BatchSize: batch})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { s.Close() })
				storetest.BenchCalls(b, []store.Store{s}, keys)
			})
		}
	}
}
