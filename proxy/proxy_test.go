package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
)

const formCT = "application/x-www-form-urlencoded"

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestPricedCallForwardsWhatWasPriced(t *testing.T) {
	f := newFixture(t)
	k, secret := f.key(t)
	w := f.do("POST", "/v1/things", strings.NewReader("metadata%5Bb%5D=2&currency=usd&amount=150"),
		hdr("Authorization", "Bearer "+secret, "Content-Type", formCT, "Idempotency-Key", "run-1-0"))
	if w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	a := f.ledger.Attempts()
	if len(a) != 1 || a[0].Estimate != 1_500_000 || a[0].Operation != "things.create" || a[0].Rule != "things.create" || a[0].IdempotencyKey != "run-1-0" {
		t.Fatalf("attempt %+v", a)
	}
	if f.upstream.requests() != 1 || f.upstream.body[0] != "amount=150&currency=usd&metadata[b]=2" {
		t.Fatalf("the vendor received %q, not the re-encoded body that was priced", f.upstream.body)
	}
	if got := f.upstream.got[0].Header.Get("Idempotency-Key"); got != k.ID+":run-1-0" {
		t.Fatalf("vendor Idempotency-Key %q", got)
	}
	// The vendor echoed its key; the client gets its own back.
	if w.Header().Get("Idempotency-Key") != "run-1-0" {
		t.Fatalf("client Idempotency-Key %q", w.Header().Get("Idempotency-Key"))
	}
	if st := f.ledger.settled; len(st) != 1 || st[0].Actual != 1_500_000 || st[0].Response == nil ||
		st[0].Response.Header.Get("Idempotency-Key") != "run-1-0" {
		t.Fatalf("settled %+v", st)
	}
}

// A body Keybrake reads one way and a vendor another is refused, naming the
// key; nothing reaches the vendor, and the refusal is audited.
func TestAmbiguousBodiesRefused(t *testing.T) {
	f := newFixture(t)
	_, secret := f.key(t)
	for _, body := range []string{
		"amount=100&currency=usd&[amount]=900000", "amount=100&currency=usd&amount]=900000",
		"amount=100&currency=usd&]amount=900000", "amount=100&amount[]=9&currency=usd", "amount=100&currency=usd;amount=9",
	} {
		w := f.do("POST", "/v1/things", strings.NewReader(body), hdr("Authorization", "Bearer "+secret, "Content-Type", formCT))
		if w.Code != 400 || errCode(t, w) != keybrake.CodeUnpriceableRequest {
			t.Errorf("%q: %d %s", body, w.Code, w.Body)
		}
	}
	if f.upstream.requests() != 0 {
		t.Fatalf("the vendor received %d requests", f.upstream.requests())
	}
	for _, a := range f.ledger.Attempts() {
		if a.Denial == nil || a.Denial.Code != keybrake.CodeUnpriceableRequest {
			t.Errorf("attempt recorded %+v", a.Denial)
		}
	}
}

// Two values of a header Keybrake reads: refused before the body, audited,
// nothing forwarded.
func TestAmbiguousHeadersRefused(t *testing.T) {
	f := newFixture(t)
	_, secret := f.key(t)
	for _, h := range [][]string{
		{"Content-Type", formCT, "Content-Type", "application/json"},
		{"Content-Encoding", "identity", "Content-Encoding", "gzip"},
		{"Content-Encoding", "identity, gzip"},
		{"Idempotency-Key", "a", "Idempotency-Key", "b"},
		{"Stripe-Account", "acct_1", "Stripe-Account", "acct_2"},
		{"Stripe-Account", "acct_1,acct_2"},
		{"Stripe-Context", "acct_1", "Stripe-Context", "acct_2"},
		{"Stripe-Version", "2024-06-20", "Stripe-Version", "2020-08-27"},
	} {
		head := hdr(append([]string{"Authorization", "Bearer " + secret}, h...)...)
		if head.Get("Content-Type") == "" {
			head.Set("Content-Type", formCT)
		}
		body := &untouched{t: t, r: strings.NewReader("amount=100&currency=usd")}
		w := f.do("POST", "/v1/things", body, head)
		if w.Code != 400 || errCode(t, w) != keybrake.CodeAmbiguousHeader {
			t.Errorf("%v: %d %s", h, w.Code, w.Body)
		}
		body.mustNotBeRead(h)
	}
	two := hdr("Authorization", "Bearer "+secret, "Authorization", "Bearer "+secret, "Content-Type", formCT)
	if w := f.do("POST", "/v1/things", strings.NewReader("amount=100&currency=usd"), two); w.Code != 400 || errCode(t, w) != keybrake.CodeAmbiguousHeader {
		t.Errorf("two Authorization headers: %d %s", w.Code, w.Body)
	}
	if f.upstream.requests() != 0 {
		t.Fatalf("the vendor received %d requests", f.upstream.requests())
	}
	if n := len(f.ledger.Attempts()); n != 8 { // the Authorization pair presented no key to audit
		t.Fatalf("%d attempts audited, want 8", n)
	}
}

// untouched is a request body that must not be read.
type untouched struct {
	t    *testing.T
	r    io.Reader
	read bool
}

func (u *untouched) Read(p []byte) (int, error) { u.read = true; return u.r.Read(p) }

func (u *untouched) mustNotBeRead(what any) {
	u.t.Helper()
	if u.read {
		u.t.Errorf("%v: the body was read", what)
	}
}

// A key the ledger called revoked: the next request is refused before its
// body is read or the key looked up again, still recorded by the ledger.
func TestRevokedKeyRefusedBeforeItsBody(t *testing.T) {
	f := newFixture(t)
	k, secret := f.key(t)
	auth := hdr("Authorization", "Bearer "+secret, "Content-Type", formCT)
	if w := f.do("POST", "/v1/things", strings.NewReader("amount=100&currency=usd"), auth); w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	f.ledger.mu.Lock()
	f.ledger.revoked[k.ID] = true
	f.ledger.mu.Unlock()
	// The first request after the revoke is read and priced (this replica
	// does not know yet); the ledger refuses it.
	if w := f.do("POST", "/v1/things", strings.NewReader("amount=100&currency=usd"), auth); w.Code != 401 || errCode(t, w) != keybrake.CodeKeyRevoked {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	lookups := f.ledger.lookups
	body := &untouched{t: t, r: strings.NewReader(`{"a":[` + strings.Repeat("0,", 100_000) + `0]}`)}
	w := f.do("POST", "/v1/things", body, auth)
	if w.Code != 401 || errCode(t, w) != keybrake.CodeKeyRevoked {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	body.mustNotBeRead("a revoked key's body")
	a := f.ledger.Attempts()
	if last := a[len(a)-1]; last.Denial == nil || last.Denial.Code != keybrake.CodeKeyRevoked || last.KeyID != k.ID {
		t.Fatalf("last attempt %+v", last)
	}
	if f.ledger.lookups != lookups || f.upstream.requests() != 1 {
		t.Fatalf("lookups %d (was %d), vendor requests %d", f.ledger.lookups, lookups, f.upstream.requests())
	}
}

// Requests with no valid key never reach the ledger: counted by code, one
// log line per code per second.
func TestNoValidKeyIsCountedNotAudited(t *testing.T) {
	f := newFixture(t)
	unknown := keybrake.NewVaultKey()
	for i := 0; i < 5; i++ {
		for _, auth := range []string{"", "Bearer sk_live_x", "Bearer " + unknown} {
			w := f.do("POST", "/v1/things", strings.NewReader("amount=100&currency=usd"), hdr("Authorization", auth, "Content-Type", formCT))
			if w.Code != 401 || errCode(t, w) != keybrake.CodeInvalidVaultKey || w.Header().Get("Keybrake-Call-Id") != "" {
				t.Fatalf("%q: %d %s %v", auth, w.Code, w.Body, w.Header())
			}
		}
	}
	if n := len(f.ledger.Attempts()); n != 0 {
		t.Fatalf("%d requests with no valid key reached the ledger", n)
	}
	// The unknown (well-formed) key was looked up once; malformed ones never.
	if f.ledger.lookups != 1 {
		t.Fatalf("%d key lookups for 5 requests with one unknown key", f.ledger.lookups)
	}
	if f.upstream.requests() != 0 {
		t.Fatal("the vendor received a request")
	}
	f.stats.mu.Lock()
	n := len(f.stats.all)
	for _, s := range f.stats.all {
		if s.KeyKnown || s.Code != keybrake.CodeInvalidVaultKey {
			t.Errorf("stats %+v", s)
		}
	}
	f.stats.mu.Unlock()
	if n != 15 {
		t.Fatalf("%d requests observed, want 15", n)
	}
	if lines := f.logLines("proxied request"); len(lines) != 1 {
		t.Fatalf("%d log lines for 15 requests within a second, want 1", len(lines))
	}
}

func TestLogSampler(t *testing.T) {
	s := newLogSampler(time.Second)
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at       time.Duration
		code     keybrake.Code
		ok       bool
		suppress int64
	}{
		{0, "invalid_vault_key", true, 0},
		{100 * time.Millisecond, "invalid_vault_key", false, 0},
		{200 * time.Millisecond, "invalid_vault_key", false, 0},
		{300 * time.Millisecond, "ambiguous_header", true, 0}, // another code has its own budget
		{1100 * time.Millisecond, "invalid_vault_key", true, 2},
		{1200 * time.Millisecond, "invalid_vault_key", false, 0},
		{5 * time.Second, "invalid_vault_key", true, 1},
	}
	for i, st := range steps {
		ok, n := s.allow(st.code, t0.Add(st.at))
		if ok != st.ok || n != st.suppress {
			t.Errorf("step %d: allow=%v suppressed=%d, want %v %d", i, ok, n, st.ok, st.suppress)
		}
	}
}

// A Connection header naming the headers Keybrake decided cannot strip
// them: they are set again, after ReverseProxy drops what Connection names.
func TestConnectionCannotStripDecidedHeaders(t *testing.T) {
	f := newFixture(t)
	k, secret := f.key(t)
	w := f.do("POST", "/v1/things", strings.NewReader("amount=100&currency=usd"), hdr(
		"Authorization", "Bearer "+secret, "Content-Type", formCT, "Idempotency-Key", "run-1-0", "X-Fake-Account", "acct_9",
		"Connection", "Idempotency-Key, Content-Type, X-Fake-Account, Authorization, X-Other", "X-Other", "dropped"))
	if w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	h := f.upstream.got[0].Header
	if h.Get("Idempotency-Key") != k.ID+":run-1-0" || h.Get("Content-Type") != formCT || h.Get("X-Fake-Account") != "acct_9" ||
		h.Get("Authorization") != "Bearer real-secret" {
		t.Fatalf("the vendor received %v", h)
	}
	if h.Get("X-Other") != "" {
		t.Fatalf("a header Connection names, that Keybrake does not rely on, still goes: %v", h)
	}
}

// The mapping from a vendor's answer to the settlement, in every case.
func TestSettlementMapping(t *testing.T) {
	v := newFakeVendor(t, "http://127.0.0.1:1")
	quoted := &keybrake.Quote{Amount: 300, Settle: func(r *keybrake.VendorResponse) (keybrake.Micros, bool) {
		if r.Truncated {
			return 0, false
		}
		return 200, true
	}}
	cut := errors.New("connection reset")
	cases := []struct {
		name      string
		status    int
		header    http.Header
		truncated bool
		readErr   error
		idem      bool
		retryOf   int64

		outcome keybrake.Outcome
		actual  keybrake.Micros
		release bool
		stored  bool
	}{
		{name: "2xx settles at the answer", status: 200, outcome: keybrake.OutcomeForwarded, actual: 200},
		{name: "2xx with a key is stored", status: 201, idem: true, outcome: keybrake.OutcomeForwarded, actual: 200, stored: true},
		{name: "2xx truncated keeps the reservation", status: 200, truncated: true, idem: true, outcome: keybrake.OutcomeForwarded, actual: 300},
		{name: "2xx cut off keeps the reservation", status: 200, readErr: cut, idem: true, outcome: keybrake.OutcomeForwarded, actual: 300},
		{name: "4xx releases", status: 402, idem: true, outcome: keybrake.OutcomeForwarded, stored: true},
		{name: "4xx cut off is unknown", status: 402, readErr: cut, idem: true, outcome: keybrake.OutcomeUnknown},
		{name: "409 frees the key", status: 409, idem: true, outcome: keybrake.OutcomeForwarded, release: true, stored: true},
		{name: "429 frees the key", status: 429, outcome: keybrake.OutcomeForwarded, release: true},
		{name: "409 on a retry of an unknown attempt stays unknown", status: 409, idem: true, retryOf: 3, outcome: keybrake.OutcomeUnknown},
		{name: "429 on a retry of an unknown attempt stays unknown", status: 429, idem: true, retryOf: 3, outcome: keybrake.OutcomeUnknown},
		{name: "a vendor replay on a retry settles at the answer", status: 200, idem: true, retryOf: 3, header: http.Header{"Idempotent-Replayed": {"true"}},
			outcome: keybrake.OutcomeForwarded, actual: 200, stored: true},
		{name: "500 is unknown", status: 500, idem: true, outcome: keybrake.OutcomeUnknown},
		{name: "503 is unknown", status: 503, outcome: keybrake.OutcomeUnknown},
		{name: "3xx releases", status: 302, outcome: keybrake.OutcomeForwarded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &call{vendor: v, quote: quoted, decision: keybrake.Decision{CallID: 7, Reserved: 300, RetryOf: tc.retryOf}}
			if tc.idem {
				c.a.IdempotencyKey = "k"
			}
			h := tc.header
			if h == nil {
				h = http.Header{}
			}
			st := c.settlement(tc.status, h, []byte(`{"id":"thing_1"}`), tc.truncated, tc.readErr)
			if st.CallID != 7 || st.Status != tc.status || st.Outcome != tc.outcome || st.ReleaseIdempotency != tc.release || (st.Response != nil) != tc.stored {
				t.Fatalf("settlement %+v", st)
			}
			if tc.status >= 200 && tc.status < 300 && st.Actual != tc.actual {
				t.Fatalf("actual %d, want %d", st.Actual, tc.actual)
			}
		})
	}
}

// The body bound: a declared length over it is refused before a byte is
// read; a body that turns out longer is refused too.
func TestBodyBound(t *testing.T) {
	f := newFixture(t)
	_, secret := f.key(t)
	body := &untouched{t: t, r: strings.NewReader("amount=1")}
	req := httptest.NewRequest("POST", "/v1/things", body)
	req.Header = hdr("Authorization", "Bearer "+secret, "Content-Type", formCT)
	req.ContentLength = 2 << 20
	w := httptest.NewRecorder()
	f.p.ServeHTTP(w, req)
	if w.Code != 413 || errCode(t, w) != keybrake.CodeRequestTooLarge {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	body.mustNotBeRead("a body declared over the bound")
	long := "amount=100&currency=usd&metadata[x]=" + url.QueryEscape(strings.Repeat("x", 1<<20))
	if w := f.do("POST", "/v1/things", strings.NewReader(long), hdr("Authorization", "Bearer "+secret, "Content-Type", formCT)); w.Code != 413 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if f.upstream.requests() != 0 {
		t.Fatal("the vendor received a request")
	}
}

// A client that hangs up while its call is being decided does not cancel
// the decision: a cancellation landing during the store's commit would
// leave a reservation committed that nobody settles. The decided call is
// forwarded and settled like any other, so nothing stays reserved.
func TestClientHangUpDoesNotCancelTheDecision(t *testing.T) {
	f := newFixture(t)
	_, secret := f.key(t)
	ctx, hangUp := context.WithCancel(context.Background())
	var decideErr error
	f.ledger.onDecide = func(dctx context.Context) {
		hangUp() // the client leaves mid-decision
		decideErr = dctx.Err()
	}
	r := httptest.NewRequest("POST", "/v1/things", strings.NewReader("amount=150&currency=usd")).WithContext(ctx)
	r.Header.Set("Authorization", "Bearer "+secret)
	r.Header.Set("Content-Type", formCT)
	w := httptest.NewRecorder()
	f.p.ServeHTTP(w, r)
	if decideErr != nil {
		t.Fatalf("the decision saw the client's cancellation: %v", decideErr)
	}
	if w.Code != 200 || f.upstream.requests() != 1 {
		t.Fatalf("%d %s; vendor received %d", w.Code, w.Body, f.upstream.requests())
	}
	if st := f.ledger.settled; len(st) != 1 || st[0].Actual != 1_500_000 {
		t.Fatalf("settled %+v: the reservation would stay pending", st)
	}
}
