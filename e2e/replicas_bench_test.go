package e2e

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/keybrake/keybrake/client"
)

// BenchmarkReplicasHotKey measures whole proxied calls (authenticate,
// reserve, forward to the sandbox vendor, settle, audit) per second on one
// hot key, through 1 and 3 real keybrake serve processes on one PostgreSQL
// database. Every call locks the same key row twice (decision, settlement),
// so this is the single-key ceiling; distinct keys do not contend.
//
//	KEYBRAKE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	  go test -run '^$' -bench ReplicasHotKey -benchtime 2000x ./e2e/
func BenchmarkReplicasHotKey(b *testing.B) {
	// Started once, outside the sub-benchmarks, which Go runs more than once.
	sets := map[int]*replicaSet{1: startReplicas(b, 1), 3: startReplicas(b, 3)}
	for _, n := range []int{1, 3} {
		rs := sets[n]
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			k := rs.issue(b, client.IssueParams{DailyUSDCap: "1000000000"})
			before := rs.stripe.Requests()
			var next atomic.Int64
			b.SetParallelism(32)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := int(next.Add(1)) % n
				for pb.Next() {
					res, err := rs.charge(r, k.VaultKey)
					if err != nil || res.status != http.StatusOK {
						b.Errorf("replica %d: %v %d %s", r+1, err, res.status, res.body)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
			if got := rs.stripe.Requests() - before; got != b.N {
				b.Errorf("vendor received %d calls, want %d", got, b.N)
			}
		})
	}
}
