package e2e

import (
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// BenchmarkCallsUnderKeylessFlood measures legitimate priced calls while 64
// clients send requests with unknown (well-formed) and malformed keys, the
// issue's flood (before: 24,387 audit rows in 10 s, legitimate p99 from 52
// to 163 ms). Those requests are no longer audited; the benchmark reports
// the legitimate calls' p50 and p99 and the audit rows written.
//
//	go test -run XXX -bench KeylessFlood -benchtime 2000x ./e2e/
func BenchmarkCallsUnderKeylessFlood(b *testing.B) {
	for _, flood := range []bool{false, true} {
		name := "quiet"
		if flood {
			name = "flood"
		}
		b.Run(name, func(b *testing.B) {
			env := kbtest.Start(b)
			k := env.Issue(b, client.IssueParams{DailyUSDCap: "1000000000", ExpiresIn: "2h"})
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: time.Minute}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			if flood {
				for w := 0; w < 64; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						keys := []string{keybrake.NewVaultKey(), "sk_live_guess", ""}
						for i := 0; ; i++ {
							select {
							case <-stop:
								return
							default:
							}
							req, _ := http.NewRequest("POST", env.URL+"/v1/payment_intents", strings.NewReader("amount=100&currency=usd"))
							if key := keys[i%len(keys)]; key != "" {
								req.Header.Set("Authorization", "Bearer "+key)
							}
							if resp, err := hc.Do(req); err == nil {
								resp.Body.Close()
							}
						}
					}()
				}
			}
			var mu sync.Mutex
			var lat []time.Duration
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest("POST", env.URL+"/v1/payment_intents", strings.NewReader("amount=100&currency=usd"))
					req.Header.Set("Authorization", "Bearer "+k.VaultKey)
					req.Header.Set("Content-Type", formCT)
					t0 := time.Now()
					resp, err := hc.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatalf("status %d", resp.StatusCode)
					}
					mu.Lock()
					lat = append(lat, time.Since(t0))
					mu.Unlock()
				}
			})
			b.StopTimer()
			close(stop)
			wg.Wait()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			page, err := env.Admin.ListCalls(b.Context(), client.ListCallsParams{Limit: 1})
			if err == nil && len(page.Data) > 0 {
				b.ReportMetric(float64(page.Data[0].ID), "audit-rows")
			}
		})
	}
}
