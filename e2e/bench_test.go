package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// BenchmarkProxiedCall measures one priced call through the whole stack:
// HTTP in, authenticate, canonical check, rule match, price, one store
// transaction to decide and reserve, forward to a local upstream, one
// transaction to settle, HTTP out. Run it with
//
//	go test -run XXX -bench ProxiedCall -benchtime 3000x ./e2e/
//
// and compare runs with benchstat.
func BenchmarkProxiedCall(b *testing.B) {
	for _, mode := range []struct {
		name string
		idem bool
	}{{"plain", false}, {"idempotency-key", true}} {
		b.Run(mode.name, func(b *testing.B) {
			env := kbtest.Start(b)
			k := env.Issue(b, client.IssueParams{DailyUSDCap: "1000000000", ExpiresIn: "2h"})
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: time.Minute}
			var seq atomicCounter
			b.SetParallelism(16) // 32 concurrent callers on 2 cores, like a Map state's fan-out
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest("POST", env.URL+"/v1/payment_intents", strings.NewReader("amount=100&currency=usd"))
					req.Header.Set("Authorization", "Bearer "+k.VaultKey)
					req.Header.Set("Content-Type", formCT)
					if mode.idem {
						req.Header.Set("Idempotency-Key", "bench-"+seq.next())
					}
					resp, err := hc.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
		})
	}
}
