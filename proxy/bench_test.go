package proxy

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/internal/bench"
	"github.com/keybrake/keybrake/pricing"
	"github.com/keybrake/keybrake/vendors/stripe"
)

// The proxy path alone, against a plain httputil.ReverseProxy: the same
// Stripe-like upstream (internal/bench, over loopback HTTP), the same
// request (POST /v1/payment_intents with a form body, no Idempotency-Key),
// served in process so that a profile shows the proxy's own work. Keybrake
// runs with the in-memory ledger and the real Stripe vendor, and writes its
// JSON log line to io.Discard (formatted, not written).
//
//	go test -run '^$' -bench 'Proxy' -benchmem ./proxy/
//	go test -run '^$' -bench '^BenchmarkProxy$' -cpuprofile cpu.out -memprofile mem.out ./proxy/
//
// scripts/bench measures the same over real sockets with wrk.

const benchForm = "amount=1&currency=usd"

func benchUpstream(b *testing.B) (*bench.Upstream, *url.URL) {
	up := &bench.Upstream{}
	srv := httptest.NewServer(up)
	b.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return up, u
}

func serveBench(b *testing.B, h http.Handler, secret string) {
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		body := []byte(benchForm)
		for pb.Next() {
			r := httptest.NewRequest("POST", "/v1/payment_intents", bytes.NewReader(body))
			r.Header.Set("Authorization", "Bearer "+secret)
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != 200 {
				b.Fatalf("%d %s", w.Code, w.Body)
			}
		}
	})
}

func BenchmarkReverseProxy(b *testing.B) {
	_, u := benchUpstream(b)
	serveBench(b, bench.NewReverseProxy(u, bench.NewTransport()), keybrake.NewVaultKey())
}

// BenchmarkReverseProxyPooled is the baseline given the one trick Keybrake
// uses that a plain ReverseProxy does not have by default, a BufferPool:
// the ratio to it is the cost of Keybrake's own work alone.
func BenchmarkReverseProxyPooled(b *testing.B) {
	_, u := benchUpstream(b)
	rp := bench.NewReverseProxy(u, bench.NewTransport())
	rp.BufferPool = copyBuffers{}
	serveBench(b, rp, keybrake.NewVaultKey())
}

func BenchmarkProxy(b *testing.B) {
	up, u := benchUpstream(b)
	sv, err := stripe.New(u.String(), "sk_test_bench", pricing.DefaultFX())
	if err != nil {
		b.Fatal(err)
	}
	rules, err := keybrake.ParseRules([]string{"payment_intents.create"})
	if err != nil {
		b.Fatal(err)
	}
	ledger := bench.NewMemLedger()
	secret := ledger.Add(&keybrake.Key{ID: keybrake.NewID("vk_"), Vendor: "stripe", DailyCap: 1_000_000 * keybrake.MicrosPerUSD,
		Rules: rules, CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)})
	p, err := New(Config{Ledger: ledger, Vendors: []keybrake.Vendor{sv}, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	serveBench(b, p, secret)
	b.StopTimer()
	// Exact even here: what the key recorded is what the upstream received.
	spent, reserved := ledger.Totals()
	if st := up.Stats(); reserved != 0 || spent != keybrake.Micros(st.Amount)*keybrake.MicrosPerUSD/100 {
		b.Fatalf("recorded %s (reserved %s), upstream received %d cents", spent, reserved, st.Amount)
	}
}
