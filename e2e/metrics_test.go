package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/server"
)

// scrape GETs a /metrics URL and parses it with Prometheus's own text
// parser.
func scrape(t *testing.T, url, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// sample finds the value of the series of name whose labels include want.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func wantSample(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string, want float64) {
	t.Helper()
	got, ok := sample(fams, name, labels)
	if !ok || got != want {
		t.Errorf("%s%v = %v (found %v), want %v", name, labels, got, ok, want)
	}
}

// The counters move with real proxied calls, and what they say matches
// what the vendor received and what the key recorded.
func TestMetricsMoveWithProxiedCalls(t *testing.T) {
	env := kbtest.Start(t)
	metricsURL := env.URL + "/metrics"
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "3", AgentRunLabel: "run-metrics-canary-label"})

	// Without the admin token /metrics answers 401, and it is not a proxied
	// call: no audit row is written for it.
	before := env.Stripe.Requests()
	r := env.Do(t, "", "GET", "/metrics", "", "")
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("/metrics without a token: %d %s", r.Status, r.Body)
	}
	if r := env.Do(t, k.VaultKey, "GET", "/metrics", "", ""); r.Status != http.StatusUnauthorized {
		t.Fatalf("/metrics with a vault key: %d", r.Status)
	}
	if n := len(calls(t, env, client.ListCallsParams{})); n != 0 {
		t.Fatalf("/metrics was audited as %d call(s)", n)
	}
	base := scrape(t, metricsURL, kbtest.AdminToken)
	wantSample(t, base, "keybrake_spend_usd_total", map[string]string{"vendor": "stripe"}, 0)
	wantSample(t, base, "keybrake_active_keys", nil, 1)

	for i := 0; i < 2; i++ {
		if r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=150&currency=usd"); r.Status != 200 {
			t.Fatalf("charge: %d %s", r.Status, r.Body)
		}
	}
	expectDenied(t, env.Stripe, before+2, env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=150&currency=usd"),
		http.StatusTooManyRequests, "cap_exhausted")
	expectDenied(t, env.Stripe, before+2, env.Do(t, mistype(k.VaultKey), "POST", "/v1/payment_intents", formCT, "amount=150&currency=usd"),
		http.StatusUnauthorized, "invalid_vault_key")
	expectDenied(t, env.Stripe, before+2, env.Do(t, "", "GET", "/v1/charges", "", ""), http.StatusUnauthorized, "invalid_vault_key")

	fams := scrape(t, metricsURL, kbtest.AdminToken)
	wantSample(t, fams, "keybrake_proxy_requests_total", map[string]string{"vendor": "stripe", "outcome": "forwarded", "code": ""}, 2)
	wantSample(t, fams, "keybrake_proxy_requests_total", map[string]string{"vendor": "stripe", "outcome": "denied", "code": "cap_exhausted"}, 1)
	wantSample(t, fams, "keybrake_rejected_requests_total", map[string]string{"code": "invalid_vault_key"}, 2)
	wantSample(t, fams, "keybrake_request_duration_seconds", map[string]string{"vendor": "stripe"}, 3)
	wantSample(t, fams, "keybrake_upstream_duration_seconds", map[string]string{"vendor": "stripe"}, 2)
	wantSample(t, fams, "keybrake_reserved_usd", map[string]string{"vendor": "stripe"}, 0)
	wantSample(t, fams, "keybrake_active_keys", nil, 1)
	wantSample(t, fams, "keybrake_store_gauges_up", nil, 1)
	if n, _ := sample(fams, "keybrake_store_duration_seconds", map[string]string{"op": "decide"}); n < 3 {
		t.Errorf("store decide observations: %v, want at least 3", n)
	}
	if n, _ := sample(fams, "keybrake_store_duration_seconds", map[string]string{"op": "settle"}); n != 2 {
		t.Errorf("store settle observations: %v, want 2", n)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("%s missing: the Go and process collectors are not registered", name)
		}
	}

	// Spend in the metrics is what the vendor charged and the key recorded.
	var charged keybrake.Micros
	for _, pi := range env.Stripe.Intents() {
		charged += keybrake.Micros(pi.Amount) * 10_000
	}
	v := getKey(t, env, k.ID)
	spent, _ := sample(fams, "keybrake_spend_usd_total", map[string]string{"vendor": "stripe"})
	if charged != 3*keybrake.MicrosPerUSD || *v.SpentUSD != charged || spent != 3.0 {
		t.Errorf("vendor charged $%s, key recorded $%s, metrics say $%v", charged, v.SpentUSD, spent)
	}

	// Bounded labels: no key id, run label or secret in any series.
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if val := l.GetValue(); strings.Contains(val, k.ID) || strings.Contains(val, "canary") || strings.Contains(val, "kbvk") {
					t.Errorf("%s carries a label %s=%q", name, l.GetName(), val)
				}
			}
		}
	}

	// An issuer token is not the admin token.
	tok, err := env.Admin.CreateToken(context.Background(), client.TokenParams{Name: "t", MaxDailyUSD: "10", Vendors: []string{"stripe"},
		Endpoints: []string{"POST /v1/payment_intents"}, MaxExpiresIn: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if r := env.Do(t, tok.Token, "GET", "/metrics", "", ""); r.Status != http.StatusUnauthorized {
		t.Fatalf("/metrics with an issuer token: %d", r.Status)
	}
}

// --metrics-addr serves /metrics on its own listener, unauthenticated; the
// admin listener then refers to it, and the proxy listener never serves it.
func TestMetricsOnTheirOwnListener(t *testing.T) {
	env := kbtest.Start(t, kbtest.Options{Configure: func(cfg *server.Config) {
		cfg.AdminAddr = "127.0.0.1:0"
		cfg.Observe.MetricsAddr = "127.0.0.1:0"
	}})
	k := env.Issue(t, client.IssueParams{})
	if r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd"); r.Status != 200 {
		t.Fatalf("charge: %d", r.Status)
	}
	fams := scrape(t, "http://"+env.Server.MetricsAddr()+"/metrics", "")
	wantSample(t, fams, "keybrake_proxy_requests_total", map[string]string{"vendor": "stripe", "outcome": "forwarded"}, 1)
	wantSample(t, fams, "keybrake_spend_usd_total", map[string]string{"vendor": "stripe"}, 1)

	for _, base := range []string{"http://" + env.Server.AdminAddr(), env.URL} {
		req, _ := http.NewRequest("GET", base+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+kbtest.AdminToken)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s/metrics: %d, want 404", base, resp.StatusCode)
		}
	}
	if n := len(calls(t, env, client.ListCallsParams{})); n != 1 {
		t.Fatalf("audit rows: %d, want only the charge", n)
	}
}

// The store's group commit is visible in /metrics: every decision and
// settlement was carried by exactly one committed batch, so the batches'
// op counts add up to the store's decisions and settlements.
func TestBatchMetricsCountEveryOp(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "100"})
	const n = 40
	errs := make(chan string, n)
	for range n {
		go func() {
			r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd")
			if r.Status != 200 {
				errs <- string(r.Body)
				return
			}
			errs <- ""
		}()
	}
	for range n {
		if e := <-errs; e != "" {
			t.Fatalf("charge: %s", e)
		}
	}
	fams := scrape(t, env.URL+"/metrics", kbtest.AdminToken)
	decides, _ := sample(fams, "keybrake_store_duration_seconds", map[string]string{"op": "decide"})
	settles, _ := sample(fams, "keybrake_store_duration_seconds", map[string]string{"op": "settle"})
	if decides != n || settles != n {
		t.Fatalf("store ops: %v decisions, %v settlements, want %d each", decides, settles, n)
	}
	var ops, batches float64
	for _, m := range fams["keybrake_store_batch_ops"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "result" && l.GetValue() == "committed" {
				ops, batches = m.GetHistogram().GetSampleSum(), float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	if ops != decides+settles {
		t.Errorf("committed batches carried %v ops, want %v (every decision and settlement)", ops, decides+settles)
	}
	if batches < 1 || batches > ops {
		t.Errorf("%v committed batches for %v ops", batches, ops)
	}
	if got, _ := sample(fams, "keybrake_store_batch_duration_seconds", map[string]string{"result": "committed"}); got != batches {
		t.Errorf("batch durations observed %v times, want %v", got, batches)
	}
	if _, failed := sample(fams, "keybrake_store_batch_ops", map[string]string{"result": "failed"}); failed {
		t.Errorf("a failed batch was reported; none failed")
	}
	t.Logf("%v ops in %v batches", ops, batches)
}
