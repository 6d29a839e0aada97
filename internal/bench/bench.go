// Package bench holds the parts the proxy benchmarks share: a local
// upstream that answers like Stripe's POST /v1/payment_intents and counts
// what it received, the plain httputil.ReverseProxy Keybrake is measured
// against, and an in-memory ledger (the proxy path with no store). The Go
// benchmarks in proxy/ and the load harness in scripts/bench use the same
// pieces, so a ratio measured by one means the same as a ratio measured by
// the other.
//
// Nothing here is used in production; it imports no Keybrake package but
// the domain, so proxy's tests can import it.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keybrake/keybrake"
)

// Upstream answers POST /v1/payment_intents like Stripe does (a
// payment_intent object echoing amount and currency, Request-Id header)
// and counts the requests it received and the sum of their amounts, in
// minor units, so a benchmark can check that what a key recorded is what
// the vendor was asked for. GET /__bench/stats reports the counts.
type Upstream struct {
	requests atomic.Int64
	amount   atomic.Int64 // sum of the amount fields received, minor units
	bad      atomic.Int64 // requests without a readable amount
}

// UpstreamStats is what GET /__bench/stats answers.
type UpstreamStats struct {
	Requests int64 `json:"requests"`
	Amount   int64 `json:"amount"`
	Bad      int64 `json:"bad"`
}

// Stats reads the counters.
func (u *Upstream) Stats() UpstreamStats {
	return UpstreamStats{Requests: u.requests.Load(), Amount: u.amount.Load(), Bad: u.bad.Load()}
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/__bench/stats" {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(u.Stats()) //nolint:errcheck
		return
	}
	buf := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(buf)
	buf.Reset()
	buf.ReadFrom(r.Body) //nolint:errcheck // a short body reads as bad below
	form, err := url.ParseQuery(buf.String())
	amount, aerr := strconv.ParseInt(form.Get("amount"), 10, 64)
	n := u.requests.Add(1)
	if err != nil || aerr != nil {
		u.bad.Add(1)
	} else {
		u.amount.Add(amount)
	}
	currency := form.Get("currency")
	out := buf.AvailableBuffer()[:0]
	out = append(out, `{"id":"pi_bench`...)
	out = strconv.AppendInt(out, n, 10)
	out = append(out, `","object":"payment_intent","amount":`...)
	out = strconv.AppendInt(out, amount, 10)
	out = append(out, `,"amount_received":0,"capture_method":"automatic","currency":"`...)
	out = append(out, currency...)
	out = append(out, `","livemode":false,"status":"requires_payment_method"}`...)
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Request-Id"] = []string{"req_bench"}
	h["Content-Length"] = []string{strconv.Itoa(len(out))}
	w.Write(out) //nolint:errcheck
}

// NewTransport is the transport the plain proxy uses: keep-alive
// connections to one upstream host, enough idle ones for every client
// connection.
func NewTransport() *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
	}
}

// NewReverseProxy is the baseline: a plain httputil.ReverseProxy with
// Rewrite and a tuned transport, forwarding everything to target.
func NewReverseProxy(target *url.URL, rt http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = target.Host
		},
		Transport: rt,
	}
}

// MemLedger is a ledger in memory: exact (one mutex around every
// decision and settlement, as a store's transaction would be), enforcing
// status and the daily and total caps, with no durability. It is the
// proxy path with the store taken out.
type MemLedger struct {
	mu     sync.Mutex
	byHash map[string]*memKey
	byID   map[string]*memKey
	calls  map[int64]memCall
	nextID int64
}

type memKey struct {
	key   *keybrake.Key
	usage keybrake.Usage
}

type memCall struct {
	k        *memKey
	reserved keybrake.Micros
}

// NewMemLedger returns an empty ledger.
func NewMemLedger() *MemLedger {
	return &MemLedger{byHash: map[string]*memKey{}, byID: map[string]*memKey{}, calls: map[int64]memCall{}}
}

// Add issues k and returns its vault key.
func (l *MemLedger) Add(k *keybrake.Key) string {
	secret := keybrake.NewVaultKey()
	l.mu.Lock()
	defer l.mu.Unlock()
	mk := &memKey{key: k}
	l.byHash[keybrake.HashSecret(secret)], l.byID[k.ID] = mk, mk
	return secret
}

// KeyByHash implements proxy.Ledger.
func (l *MemLedger) KeyByHash(_ context.Context, hash string) (*keybrake.Key, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if mk, ok := l.byHash[hash]; ok {
		return mk.key, nil
	}
	return nil, keybrake.ErrNotFound
}

// GetKey implements proxy.Ledger.
func (l *MemLedger) GetKey(_ context.Context, id string) (*keybrake.KeyView, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	mk, ok := l.byID[id]
	if !ok {
		return nil, keybrake.ErrNotFound
	}
	return &keybrake.KeyView{Key: *mk.key, Status: keybrake.StatusActive, Usage: mk.usage}, nil
}

// Decide implements proxy.Ledger: deny what the proxy denied, then check
// the caps and reserve the estimate.
func (l *MemLedger) Decide(_ context.Context, a keybrake.Attempt) (keybrake.Decision, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextID++
	d := keybrake.Decision{CallID: l.nextID, Status: keybrake.StatusActive}
	mk, ok := l.byID[a.KeyID]
	if !ok {
		d.Err = keybrake.Errorf(keybrake.CodeInvalidVaultKey, "vault key is not valid")
		return d, nil
	}
	d.Key, d.Usage = mk.key, mk.usage
	if a.Denial != nil {
		d.Err = a.Denial
		return d, nil
	}
	u := mk.usage
	if mk.key.DailyCap > 0 && u.SpentToday+u.ReservedToday+a.Estimate > mk.key.DailyCap {
		d.Err, d.CapName, d.Cap, d.Requested = keybrake.Errorf(keybrake.CodeCapExhausted, "daily cap"), "daily", mk.key.DailyCap, a.Estimate
		return d, nil
	}
	mk.usage.Reserved += a.Estimate
	mk.usage.ReservedToday += a.Estimate
	mk.usage.Calls++
	l.calls[d.CallID] = memCall{k: mk, reserved: a.Estimate}
	d.Allowed, d.Reserved, d.Usage = true, a.Estimate, mk.usage
	return d, nil
}

// Settle implements proxy.Ledger: a 2xx is spent at its actual cost, an
// unknown outcome at its reservation, anything else released.
func (l *MemLedger) Settle(_ context.Context, st keybrake.Settlement) (keybrake.Usage, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.calls[st.CallID]
	if !ok {
		return keybrake.Usage{}, keybrake.ErrNotFound
	}
	delete(l.calls, st.CallID)
	spent := keybrake.Micros(0)
	switch {
	case st.Outcome == keybrake.OutcomeUnknown:
		spent = c.reserved
	case st.Status >= 200 && st.Status < 300:
		spent = st.Actual
	}
	u := &c.k.usage
	u.Reserved -= c.reserved
	u.ReservedToday -= c.reserved
	u.Spent += spent
	u.SpentToday += spent
	return *u, nil
}

// Totals sums every key's spend and what is still reserved.
func (l *MemLedger) Totals() (spent, reserved keybrake.Micros) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, mk := range l.byID {
		spent += mk.usage.Spent
		reserved += mk.usage.Reserved
	}
	return spent, reserved
}
