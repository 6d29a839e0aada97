// Package proxy is Keybrake's vendor-facing HTTP handler. Each request goes
// through one pipeline (ServeHTTP):
//
//   - admit (admit.go): everything that needs no ledger, cheapest first —
//     the vault key (keys.go: credential and cache), the canonical target,
//     the catalogue operation and the allow-list, the headers and the scope
//     they name, and only then the body, which the vendor re-encodes and
//     the operation prices (operation.go: resolve, lookups, finalize);
//   - one ledger decision (deadline.go): status, expiry, rate limit, caps,
//     reservation, idempotency and the audit row, in one transaction;
//   - replay, deny (reply.go) or forward (forward.go): httputil.ReverseProxy
//     with the real credential and the headers Keybrake decided; the answer
//     is settled before the client sees it.
//
// Only a committed reservation is forwarded, and only the body that was
// priced.
package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"strings"
	"time"

	"github.com/keybrake/keybrake"
)

// Ledger is what the proxy needs from the store.
type Ledger interface {
	KeyByHash(ctx context.Context, secretHash string) (*keybrake.Key, error)
	// GetKey reads a key's current status, before a lookup reads a vendor
	// object for a key that may have been revoked.
	GetKey(ctx context.Context, id string) (*keybrake.KeyView, error)
	Decide(ctx context.Context, a keybrake.Attempt) (keybrake.Decision, error)
	Settle(ctx context.Context, st keybrake.Settlement) (keybrake.Usage, error)
}

// Config configures a Proxy. Zero durations and sizes take the defaults.
type Config struct {
	Ledger  Ledger
	Vendors []keybrake.Vendor
	Logger  *slog.Logger
	// Transport reaches the vendors; default is a tuned *http.Transport.
	Transport http.RoundTripper
	// MaxRequestBody bounds a client body (default 1 MiB): bodies are read
	// whole, to price them before anything is sent.
	MaxRequestBody int64
	// MaxStoredResponse bounds a response kept for idempotent replay and
	// read for settlement (default 1 MiB). Larger answers are streamed;
	// their cost is the estimate and replays of them are refused.
	MaxStoredResponse int64
	// UpstreamTimeout bounds one vendor call (default 60s). A call past it
	// has an unknown outcome.
	UpstreamTimeout time.Duration
	// DecisionTimeout bounds each store step before forwarding, the key
	// lookup and the decision (default 5s). Past it the call is refused
	// with 503 store_unavailable and nothing is forwarded. Settlement is not
	// bound by it: it retries for SettleTimeout, since money has moved.
	DecisionTimeout time.Duration
	// IdempotencyTTL is how long a completed answer is kept for replay
	// (default 24h).
	IdempotencyTTL time.Duration
	// Instance names this process in pending audit rows, so a replica's
	// restart can recover its own in-flight calls.
	Instance string
	// Observer, when set, is told how each request ended (metrics).
	Observer Observer
	// Sandboxed names the vendors answered by local sandboxes (serve
	// --sandbox): their answers carry Keybrake-Sandbox: true.
	Sandboxed []string
}

// Proxy is the vendor-facing handler.
type Proxy struct {
	cfg     Config
	vendors map[string]keybrake.Vendor
	order   []keybrake.Vendor
	keys    *keyCache
	rp      *httputil.ReverseProxy
	log     *slog.Logger
	sampler *logSampler // the log lines of requests with no valid key

	inflight inflight // forwarded, not yet settled
}

// New builds a Proxy.
func New(cfg Config) (*Proxy, error) {
	if cfg.Ledger == nil {
		return nil, errors.New("proxy: no ledger")
	}
	if len(cfg.Vendors) == 0 {
		return nil, errors.New("proxy: no vendors")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	if cfg.MaxRequestBody <= 0 {
		cfg.MaxRequestBody = 1 << 20
	}
	if cfg.MaxStoredResponse <= 0 {
		cfg.MaxStoredResponse = 1 << 20
	}
	if cfg.UpstreamTimeout <= 0 {
		cfg.UpstreamTimeout = 60 * time.Second
	}
	if cfg.IdempotencyTTL <= 0 {
		cfg.IdempotencyTTL = 24 * time.Hour
	}
	if cfg.DecisionTimeout <= 0 {
		cfg.DecisionTimeout = DefaultDecisionTimeout
	}
	if cfg.Transport == nil {
		cfg.Transport = NewTransport(cfg.UpstreamTimeout)
	}
	p := &Proxy{cfg: cfg, vendors: map[string]keybrake.Vendor{}, keys: newKeyCache(10000), log: cfg.Logger,
		sampler: newLogSampler(time.Second)}
	for _, v := range cfg.Vendors {
		if _, dup := p.vendors[v.Name()]; dup {
			return nil, errors.New("proxy: vendor " + v.Name() + " registered twice")
		}
		p.vendors[v.Name()] = v
		p.order = append(p.order, v)
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      cfg.Transport,
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.upstreamError,
		ErrorLog:       slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		// Without a pool, ReverseProxy allocates a 32 KiB copy buffer for
		// every response: more than half the bytes a call allocated.
		BufferPool: copyBuffers{},
	}
	return p, nil
}

// call is one request's state, from authentication to the log line. It
// holds the Attempt the ledger decides, the one copy of the method, path,
// rule, operation, item and Idempotency-Key; the rest is what the proxy
// needs to forward, settle and answer.
type call struct {
	start time.Time
	a     keybrake.Attempt

	hash     string // the presented secret's hash, the key cache's index
	key      *keybrake.Key
	vendor   keybrake.Vendor
	query    string
	op       *keybrake.Operation
	params   []string // the path's values for the operation's "*" segments
	body     []byte   // the client's body, as read
	quote    *keybrake.Quote
	prepared *keybrake.Prepared
	decision keybrake.Decision
	upstream context.Context
	sent     time.Time     // when the call went to the vendor
	answer   *bytes.Buffer // the vendor's answer, pooled (see modifyResponse)

	// filled as the request ends
	status   int
	outcome  keybrake.Outcome
	code     keybrake.Code
	actual   keybrake.Micros
	objectID string
	usage    *keybrake.Usage
}

type callKey struct{}

// ServeHTTP handles one proxied request: admit it (everything that needs no
// ledger), have the ledger decide it in one transaction, then replay, deny
// or forward.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &call{start: time.Now(), a: keybrake.Attempt{Method: r.Method, Instance: p.cfg.Instance}}
	defer p.logCall(c)

	if denial := p.admit(w, r, c); denial != nil {
		if c.key == nil {
			p.reject(w, c, denial)
			return
		}
		c.a.Denial = denial
	}
	d, err := p.decide(r.Context(), c.a)
	if err != nil {
		p.undecided(w, c, err)
		return
	}
	c.decision = d
	if d.Key != nil {
		c.usage = &d.Usage
	}
	if d.Status == keybrake.StatusRevoked {
		p.keys.markRevoked(c.hash)
	}
	switch {
	case d.Replay != nil:
		p.replay(w, c, d)
	case !d.Allowed:
		p.deny(w, c, d)
	case p.finalize(w, c):
		p.forward(w, r, c)
	}
}

// vendorOfPath guesses the vendor a request is meant for, from a
// /{vendor} prefix or a root path a vendor owns; nil if none.
func (p *Proxy) vendorOfPath(first, target string) keybrake.Vendor {
	if v, ok := p.vendors[first]; ok {
		return v
	}
	path, _, _ := strings.Cut(target, "?")
	for _, v := range p.order {
		if v.Owns(path) {
			return v
		}
	}
	return nil
}

func fingerprint(method, vendor, path, query string, body []byte) string {
	h := sha256.New()
	bodySum := sha256.Sum256(body)
	io.WriteString(h, method+"\n"+vendor+"\n"+path+"\n"+query+"\n")
	h.Write(bodySum[:])
	return hex.EncodeToString(h.Sum(nil))
}

func asError(err error) *keybrake.Error {
	var e *keybrake.Error
	if errors.As(err, &e) {
		return e
	}
	return keybrake.Errorf(keybrake.CodeInvalidRequest, "%v", err)
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// headerValue keeps a client-supplied header for the audit log only if it
// is short printable ASCII.
func headerValue(v string, max int) string {
	if len(v) > max || !printable(v) {
		return ""
	}
	return v
}

// truncate shortens s to n bytes and replaces anything but printable ASCII,
// so a hostile request target cannot inject control bytes into the audit log.
func truncate(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	if printable(s) {
		return s
	}
	b := []byte(s)
	for i, ch := range b {
		if ch < 0x20 || ch > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}
