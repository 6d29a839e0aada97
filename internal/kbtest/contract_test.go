package kbtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/server"
)

// exchange runs one request through Contract.Middleware in front of a
// handler that answers as told, and returns what the middleware reported.
func exchange(t *testing.T, handler http.HandlerFunc, method, target, token, body string) []string {
	t.Helper()
	c, err := LoadContract(AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	var failures []string
	h := c.Middleware(func(msg string) { failures = append(failures, msg) }, handler)
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	h.ServeHTTP(httptest.NewRecorder(), req)
	return failures
}

func answer(status int, contentType, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) //nolint:errcheck
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Cache-Control", "no-store")
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="keybrake-admin"`)
		}
		w.WriteHeader(status)
		io.WriteString(w, body) //nolint:errcheck
	}
}

const goodKey = `{"key_id":"vk_1","vendor":"stripe","status":"active","daily_usd_cap":"50.00","allowed_endpoints":["POST /v1/payment_intents"],
"agent_run_label":"run-1","created_at":"2026-12-02T01:00:00Z","expires_at":"2026-12-02T02:00:00Z","alert_thresholds":[50,80,100],
"spent_usd":"0.00","spent_today_usd":"0.00","reserved_usd":"0.00","remaining_usd":"50.00","calls":0,"allowed_calls":0,"denied_calls":0}`

// The middleware must pass a correct exchange and catch each kind of
// drift: it is what makes "the spec cannot drift" true, so it is tested
// against answers that are wrong on purpose.
func TestContractMiddleware(t *testing.T) {
	issue := `{"vendor":"stripe","daily_usd_cap":"50","allowed_endpoints":["POST /v1/payment_intents"],"expires_in":"1h"}`
	cases := []struct {
		name                 string
		handler              http.HandlerFunc
		method, target, body string
		token                string
		want                 []string // substrings of the one failure; none: no failure
	}{
		{name: "a documented answer passes", handler: answer(200, "application/json", goodKey),
			method: "GET", target: "/vault/keys/vk_1", token: AdminToken},
		{name: "an issuer token on a route that accepts it passes", handler: answer(200, "application/json", goodKey),
			method: "GET", target: "/vault/keys/vk_1", token: keybrake.NewIssuerToken()},
		{name: "an undocumented field in an answer", handler: answer(200, "application/json", strings.Replace(goodKey, `"vendor"`, `"surprise":1,"vendor"`, 1)),
			method: "GET", target: "/vault/keys/vk_1", token: AdminToken,
			want: []string{"GET /vault/keys/vk_1 → 200", "surprise"}},
		{name: "a missing required field", handler: answer(200, "application/json", strings.Replace(goodKey, `"status":"active",`, ``, 1)),
			method: "GET", target: "/vault/keys/vk_1", token: AdminToken,
			want: []string{"GET /vault/keys/vk_1 → 200", "status"}},
		{name: "money as a float", handler: answer(200, "application/json", strings.Replace(goodKey, `"daily_usd_cap":"50.00"`, `"daily_usd_cap":50`, 1)),
			method: "GET", target: "/vault/keys/vk_1", token: AdminToken,
			want: []string{"daily_usd_cap"}},
		{name: "an error code the response does not list", handler: answer(404, "application/json", `{"code":"cap_exhausted","message":"x"}`),
			method: "GET", target: "/vault/keys/vk_1", token: AdminToken,
			want: []string{"GET /vault/keys/vk_1 → 404", "cap_exhausted"}},
		{name: "an undocumented status", handler: answer(418, "application/json", `{"code":"internal_error","message":"x"}`),
			method: "GET", target: "/vault/keys/vk_1", token: AdminToken,
			want: []string{"→ 418", "status is not supported"}},
		{name: "a 401 without its WWW-Authenticate header", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(401)
			io.WriteString(w, `{"code":"unauthorized","message":"x"}`) //nolint:errcheck
		}, method: "GET", target: "/vault/keys", want: []string{"→ 401", "WWW-Authenticate"}},
		{name: "a refused bad request passes", handler: answer(400, "application/json", `{"code":"invalid_request","message":"vendor is required","field":"vendor"}`),
			method: "POST", target: "/vault/keys", body: `{"daily_usd_cap":"50"}`, token: AdminToken},
		{name: "an accepted request the spec refuses", handler: answer(201, "application/json", goodKey),
			method: "POST", target: "/vault/keys", body: `{"daily_usd_cap":"50","colour":"red"}`, token: AdminToken,
			want: []string{"POST /vault/keys → 201", "the spec refuses"}},
		{name: "an issuer token accepted on an admin-only route", handler: answer(200, "application/json", `{"data":[],"has_more":false}`),
			method: "GET", target: "/vault/tokens", token: keybrake.NewIssuerToken(),
			want: []string{"GET /vault/tokens → 200", "the spec refuses"}},
		{name: "an issued key without its secret", handler: answer(201, "application/json", goodKey),
			method: "POST", target: "/vault/keys", body: issue, token: AdminToken,
			want: []string{"vault_key"}},
		{name: "an undocumented route that answers", handler: answer(200, "application/json", `{}`),
			method: "GET", target: "/vault/secrets", token: AdminToken,
			want: []string{"no operation GET /vault/secrets"}},
		{name: "an unknown route's 404 passes", handler: answer(404, "application/json", `{"code":"not_found","message":"no admin route"}`),
			method: "GET", target: "/vault/secrets", token: AdminToken},
		{name: "a run label holding an escaped slash is routed", handler: answer(200, "application/json", `{"agent_run_label":"a/b","keys":[],"calls":0,"allowed_calls":0,"denied_calls":0,"unknown_calls":0,"spent_usd":"0.00","reserved_usd":"0.00","by_endpoint":[],"denied_by_code":{},"first_call_at":null,"last_call_at":null,"denied_usd":"0.00"}`),
			method: "GET", target: "/vault/runs/arn:aws:states:x%2Fy", token: AdminToken},
		{name: "an NDJSON line off the schema", handler: answer(200, "application/x-ndjson",
			`{"id":1,"time":"2026-12-02T01:00:00Z","method":"POST","path":"/v1/x","outcome":"forwarded","http_status":200,"estimated_usd":"1.00","actual_usd":"1.00","latency_ms":3}`+"\n"+
				`{"id":2,"time":"2026-12-02T01:00:00Z","method":"POST","path":"/v1/x","outcome":"teleported","http_status":200,"estimated_usd":"1.00","actual_usd":"1.00","latency_ms":3}`+"\n"),
			method: "GET", target: "/vault/calls?format=ndjson", token: AdminToken,
			want: []string{"NDJSON line 2", "teleported"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := exchange(t, tc.handler, tc.method, tc.target, tc.token, tc.body)
			if len(tc.want) == 0 {
				if len(got) > 0 {
					t.Fatalf("a correct exchange was reported: %v", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("want one failure, got %d: %v", len(got), got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got[0], w) {
					t.Errorf("failure %q does not say %q", got[0], w)
				}
			}
		})
	}
}

// recordingTB is a testing.TB whose Errorf is recorded instead of failing
// the test: for checking that Start reports drift to the test.
type recordingTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recordingTB) errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}

// The check is on in every Start: a real server whose answers gain an
// undocumented field fails the test that made the call, through the
// harness, while the same server unaltered passes.
func TestStartChecksEveryAdminCall(t *testing.T) {
	rec := &recordingTB{TB: t}
	addField := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rw := httptest.NewRecorder()
			h.ServeHTTP(rw, r)
			body := rw.Body.Bytes()
			if r.URL.Path == "/vault/keys" && r.Method == http.MethodGet {
				body = bytes.Replace(body, []byte(`"has_more"`), []byte(`"total_count":1,"has_more"`), 1)
			}
			for k, v := range rw.Header() {
				w.Header()[k] = v
			}
			w.Header().Del("Content-Length")
			w.WriteHeader(rw.Code)
			w.Write(body) //nolint:errcheck
		})
	}
	env := Start(rec, Options{Configure: func(c *server.Config) { c.WrapAdmin = addField }})
	ctx := context.Background()
	env.Issue(t, client.IssueParams{AgentRunLabel: "contract-on"})
	if errs := rec.errors(); len(errs) != 0 {
		t.Fatalf("an unaltered issue was reported: %v", errs)
	}
	page, err := env.Admin.ListKeys(ctx, client.ListKeysParams{})
	if err != nil || len(page.Data) != 1 {
		t.Fatalf("list keys: %v, %+v", err, page)
	}
	errs := rec.errors()
	if len(errs) != 1 || !strings.Contains(errs[0], "GET /vault/keys → 200") || !strings.Contains(errs[0], "total_count") {
		t.Fatalf("the undocumented total_count was not reported as one failure naming the call: %q", errs)
	}
}

// GET /vault/openapi.json serves the embedded spec to both tokens, and
// nothing to a caller without one.
func TestOpenAPIServed(t *testing.T) {
	env := Start(t)
	ctx := context.Background()
	doc, err := env.Admin.OpenAPI(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		OpenAPI string                     `json:"openapi"`
		Paths   map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &v); err != nil || !strings.HasPrefix(v.OpenAPI, "3.1.") || v.Paths["/vault/openapi.json"] == nil {
		t.Fatalf("not the OpenAPI 3.1 document: %v, %q, %d paths", err, v.OpenAPI, len(v.Paths))
	}
	tok, err := env.Admin.CreateToken(ctx, client.TokenParams{Name: "spec-reader", MaxDailyUSD: "10", Vendors: []string{"stripe"},
		Endpoints: []string{"POST /v1/payment_intents"}, MaxExpiresIn: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	asIssuer, err := client.New("http://"+env.Server.AdminAddr(), tok.Token).OpenAPI(ctx)
	if err != nil || !bytes.Equal(asIssuer, doc) {
		t.Fatalf("an issuer token gets %d bytes (%v), the admin %d", len(asIssuer), err, len(doc))
	}
	for _, bad := range []string{"", "wrong-token"} {
		_, err := client.New("http://"+env.Server.AdminAddr(), bad).OpenAPI(ctx)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized || ce.Code != "unauthorized" {
			t.Errorf("token %q: want 401 unauthorized, got %v", bad, err)
		}
	}
}

// The proxy in front of a child process's admin API checks what passes
// through it, and a dead target cuts the connection without a report.
func TestContractProxy(t *testing.T) {
	c, err := LoadContract(AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	target := httptest.NewServer(answer(200, "application/json", strings.Replace(goodKey, `"vendor"`, `"surprise":1,"vendor"`, 1)))
	u, _ := url.Parse(target.URL)
	var mu sync.Mutex
	var failures []string
	proxy := httptest.NewServer(c.Proxy(func(msg string) { mu.Lock(); failures = append(failures, msg); mu.Unlock() }, u))
	defer proxy.Close()

	if _, err := client.New(proxy.URL, AdminToken).GetKey(context.Background(), "vk_1"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(failures) != 1 || !strings.Contains(failures[0], "GET /vault/keys/vk_1 → 200") || !strings.Contains(failures[0], "surprise") {
		t.Errorf("the proxied drift was not reported: %q", failures)
	}
	failures = nil
	mu.Unlock()

	target.Close()
	_, err = client.New(proxy.URL, AdminToken).GetKey(context.Background(), "vk_1")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 0 {
		t.Errorf("a dead target: want a transport error, got %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failures) != 0 {
		t.Errorf("a dead target was reported as drift: %q", failures)
	}
}

// BenchmarkContractCheck is what the check costs each admin call in tests.
func BenchmarkContractCheck(b *testing.B) {
	c, err := LoadContract(AdminToken)
	if err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/vault/keys/vk_1", nil)
	req.Header.Set("Authorization", "Bearer "+AdminToken)
	h := http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"no-store"}}
	for b.Loop() {
		if err := c.Check(req, nil, 200, h, []byte(goodKey)); err != nil {
			b.Fatal(err)
		}
	}
}
