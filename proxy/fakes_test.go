package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/canon"
	"github.com/keybrake/keybrake/pricing"
)

// The proxy's own behaviour, in isolation: a fake ledger that records every
// attempt and settlement, and a fake vendor ("fake", one priced operation
// and one free read) in front of an httptest upstream that records what it
// received.

// fakeLedger decides from the keys it holds: unknown → not found; revoked
// → key_revoked; an attempt's Denial → that denial; else allowed at the
// estimate.
type fakeLedger struct {
	mu       sync.Mutex
	keys     map[string]*keybrake.Key // by secret hash
	revoked  map[string]bool          // by key id
	attempts []keybrake.Attempt
	settled  []keybrake.Settlement
	lookups  int
	nextID   int64
	// onDecide, when set, runs at the start of every Decide, without the
	// lock (a test blocks a decision in it).
	onDecide func(ctx context.Context)
}

func newFakeLedger() *fakeLedger {
	return &fakeLedger{keys: map[string]*keybrake.Key{}, revoked: map[string]bool{}}
}

func (l *fakeLedger) add(k *keybrake.Key) string {
	secret := keybrake.NewVaultKey()
	l.mu.Lock()
	l.keys[keybrake.HashSecret(secret)] = k
	l.mu.Unlock()
	return secret
}

func (l *fakeLedger) KeyByHash(_ context.Context, hash string) (*keybrake.Key, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lookups++
	if k, ok := l.keys[hash]; ok {
		return k, nil
	}
	return nil, keybrake.ErrNotFound
}

func (l *fakeLedger) GetKey(_ context.Context, id string) (*keybrake.KeyView, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range l.keys {
		if k.ID == id {
			v := &keybrake.KeyView{Key: *k, Status: keybrake.StatusActive}
			if l.revoked[id] {
				v.Status = keybrake.StatusRevoked
			}
			return v, nil
		}
	}
	return nil, keybrake.ErrNotFound
}

func (l *fakeLedger) Decide(ctx context.Context, a keybrake.Attempt) (keybrake.Decision, error) {
	if l.onDecide != nil {
		l.onDecide(ctx)
	}
	if err := ctx.Err(); err != nil { // as a store would: canceled, nothing reserved
		return keybrake.Decision{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.attempts = append(l.attempts, a)
	l.nextID++
	d := keybrake.Decision{CallID: l.nextID, Status: keybrake.StatusActive}
	for _, k := range l.keys {
		if k.ID == a.KeyID {
			d.Key = k
		}
	}
	switch {
	case d.Key == nil:
		d.Err = keybrake.Errorf(keybrake.CodeInvalidVaultKey, "vault key is not valid")
	case l.revoked[a.KeyID]:
		d.Status, d.Err = keybrake.StatusRevoked, keybrake.Errorf(keybrake.CodeKeyRevoked, "vault key %s was revoked", a.KeyID)
	case a.Denial != nil:
		d.Err = a.Denial
	default:
		d.Allowed, d.Reserved = true, a.Estimate
	}
	return d, nil
}

func (l *fakeLedger) Settle(_ context.Context, st keybrake.Settlement) (keybrake.Usage, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.settled = append(l.settled, st)
	return keybrake.Usage{Spent: st.Actual}, nil
}

func (l *fakeLedger) Attempts() []keybrake.Attempt {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]keybrake.Attempt(nil), l.attempts...)
}

// fakeVendor: POST /v1/things priced from amount (US cents), GET
// /v1/things/* free. Prepare re-encodes the form (canon) and forwards the
// X-Fake-Account header on purpose, as Stripe does Stripe-Account.
type fakeVendor struct {
	base    *url.URL
	catalog *keybrake.Catalog
}

func newFakeVendor(t *testing.T, upstream string) *fakeVendor {
	u, err := keybrake.ParseBaseURL("fake", upstream, "")
	if err != nil {
		t.Fatal(err)
	}
	m := pricing.Minor{FX: pricing.DefaultFX(), Exponent: func(string) int { return 2 }}
	ops := []*keybrake.Operation{
		{Name: "things.create", Method: "POST", Pattern: keybrake.MustParsePattern("/v1/things"), Model: keybrake.ModelBody,
			Pricer: &pricing.Amount{Minor: m, Field: "amount", Currency: "currency", Settle: "amount"}},
		{Name: "things.retrieve", Method: "GET", Pattern: keybrake.MustParsePattern("/v1/things/*"), Model: keybrake.ModelFree},
	}
	return &fakeVendor{base: u, catalog: keybrake.MustCatalog("fake", nil, ops)}
}

func (v *fakeVendor) Name() string                 { return "fake" }
func (v *fakeVendor) Owns(path string) bool        { return strings.HasPrefix(path, "/v1/") }
func (v *fakeVendor) Catalog() *keybrake.Catalog   { return v.catalog }
func (v *fakeVendor) DedupesIdempotency() bool     { return true }
func (v *fakeVendor) Configured() bool             { return true }
func (v *fakeVendor) RequestID(http.Header) string { return "" }

func (v *fakeVendor) Prepare(req *keybrake.VendorRequest) (*keybrake.Prepared, error) {
	p := &keybrake.Prepared{Body: req.Body, Header: http.Header{}}
	if a := req.Header.Get("X-Fake-Account"); a != "" {
		p.Header.Set("X-Fake-Account", a)
	}
	if req.Method != http.MethodPost {
		return p, nil
	}
	form, err := canon.ParseBracketForm(req.Body, canon.DefaultLimits)
	if err != nil {
		return nil, err
	}
	if p.Body, err = form.Encode(); err != nil {
		return nil, err
	}
	p.Form, p.ContentType = form.Values(), "application/x-www-form-urlencoded"
	return p, nil
}

func (v *fakeVendor) Direct(out *http.Request, p *keybrake.Prepared) {
	keybrake.Aim(out, v.base, p)
	out.Header.Set("Authorization", "Bearer real-secret")
}

func (v *fakeVendor) ObjectID(resp *keybrake.VendorResponse) string {
	var obj struct{ ID string }
	json.Unmarshal(resp.Body, &obj) //nolint:errcheck
	return obj.ID
}

func (v *fakeVendor) ErrorResponse(r *keybrake.ErrorReply) (http.Header, any) { return nil, r }

// recorder is the fake upstream: it answers {"id","amount"} and keeps
// every request.
type recorder struct {
	mu   sync.Mutex
	got  []*http.Request
	body []string
	srv  *httptest.Server
}

func newRecorder(t *testing.T) *recorder {
	rec := &recorder{}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(b))
		rec.mu.Lock()
		rec.got, rec.body = append(rec.got, r), append(rec.body, string(b))
		n := len(rec.got)
		rec.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if k := r.Header.Get("Idempotency-Key"); k != "" {
			w.Header().Set("Idempotency-Key", k) // as Stripe echoes it
		}
		amount, _ := strconv.Atoi(form.Get("amount"))
		json.NewEncoder(w).Encode(map[string]any{"id": "thing_" + strconv.Itoa(n), "amount": amount, "currency": "usd"}) //nolint:errcheck
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

func (r *recorder) requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// fixture is a proxy with a fake ledger, a fake vendor and its upstream.
type fixture struct {
	p        *Proxy
	ledger   *fakeLedger
	upstream *recorder
	logs     *bytes.Buffer
	stats    *statsRecorder
	logMu    *sync.Mutex
}

type statsRecorder struct {
	mu  sync.Mutex
	all []RequestStats
}

func (s *statsRecorder) Request(r RequestStats)         { s.mu.Lock(); s.all = append(s.all, r); s.mu.Unlock() }
func (s *statsRecorder) Upstream(string, time.Duration) {}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{ledger: newFakeLedger(), upstream: newRecorder(t), logs: &bytes.Buffer{}, stats: &statsRecorder{}, logMu: &sync.Mutex{}}
	p, err := New(Config{
		Ledger: f.ledger, Vendors: []keybrake.Vendor{newFakeVendor(t, f.upstream.srv.URL)},
		Logger:   slog.New(slog.NewJSONHandler(lockedWriter{f.logMu, f.logs}, nil)),
		Observer: f.stats, UpstreamTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.p = p
	return f
}

// key adds a key for POST /v1/things and GET /v1/things/* and returns its
// secret.
func (f *fixture) key(t *testing.T) (*keybrake.Key, string) {
	rules, err := keybrake.ParseRules([]string{"things.create", "things.retrieve"})
	if err != nil {
		t.Fatal(err)
	}
	k := &keybrake.Key{ID: keybrake.NewID("vk_"), Vendor: "fake", DailyCap: 100 * keybrake.MicrosPerUSD, Rules: rules,
		ExpiresAt: time.Now().Add(time.Hour)}
	return k, f.ledger.add(k)
}

// do serves one request through the proxy, in process.
func (f *fixture) do(method, target string, body io.Reader, header http.Header) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, body)
	for k, v := range header {
		r.Header[k] = v
	}
	w := httptest.NewRecorder()
	f.p.ServeHTTP(w, r)
	return w
}

func (f *fixture) logLines(msg string) []map[string]any {
	f.logMu.Lock()
	defer f.logMu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(f.logs.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func errCode(t *testing.T, w *httptest.ResponseRecorder) keybrake.Code {
	t.Helper()
	var e keybrake.ErrorReply
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q: %v", w.Body.String(), err)
	}
	return e.Code
}
