// Package proxy is Keybrake's vendor-facing HTTP handler. For each request it
// authenticates the vault key, checks the raw request target is canonical,
// resolves it to one operation of the vendor's catalogue (a path that
// resolves to none does not exist), matches the key's allow-list, has the
// operation price the call, and asks the ledger for one atomic decision
// (status, expiry, caps, reservation, idempotency). Only a committed
// reservation is forwarded, through httputil.ReverseProxy with the real
// credential; the answer is settled and audited before the client sees it.
package proxy

import (
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
	p := &Proxy{cfg: cfg, vendors: map[string]keybrake.Vendor{}, keys: newKeyCache(10000), log: cfg.Logger}
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
	}
	return p, nil
}

// call is one request's state, from authentication to the log line.
type call struct {
	start    time.Time
	key      *keybrake.Key
	vendor   keybrake.Vendor
	method   string
	path     string // vendor path, without a /{vendor} prefix
	query    string
	rule     string
	item     string
	idemKey  string
	op       *keybrake.Operation
	quote    *keybrake.Quote
	prepared *keybrake.Prepared
	decision keybrake.Decision
	upstream context.Context
	sent     time.Time // when the call went to the vendor

	// filled as the request ends
	status   int
	outcome  keybrake.Outcome
	code     keybrake.Code
	actual   keybrake.Micros
	objectID string
	usage    *keybrake.Usage
}

type callKey struct{}

// ServeHTTP handles one proxied request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &call{start: time.Now(), method: r.Method}
	defer p.logCall(c)

	attempt := keybrake.Attempt{Method: r.Method, Instance: p.cfg.Instance}
	c.item = headerValue(r.Header.Get("Keybrake-Item"), 128)
	attempt.Item = c.item

	// 1. The vault key. Malformed keys are refused without a store lookup.
	secret, ok := credential(r)
	if ok {
		key, err := p.lookupKey(r.Context(), secret)
		if err != nil {
			p.fail(w, c, p.unavailable(err), err)
			return
		}
		c.key = key
	}
	target := r.RequestURI
	first, _, _ := strings.Cut(strings.TrimPrefix(target, "/"), "/")
	if c.key == nil {
		// Answer in the shape of the vendor the path names, so an SDK
		// with a mistyped key still sees invalid_vault_key.
		c.vendor = p.vendorOfPath(first, target)
		if c.vendor != nil {
			attempt.Vendor = c.vendor.Name()
		}
		c.path = target
		attempt.Path = truncate(target, 512)
		attempt.Denial = keybrake.Errorf(keybrake.CodeInvalidVaultKey, "missing or invalid vault key: send Authorization: Bearer <vault_key>")
		p.decideAndDeny(w, r, c, attempt)
		return
	}
	attempt.KeyID = c.key.ID
	c.vendor = p.vendors[c.key.Vendor]

	// Which form: /{vendor}/<vendor path> or the vendor's own path at the root.
	prefixed := false
	if v, ok := p.vendors[first]; ok {
		prefixed = true
		attempt.Vendor = v.Name()
		if v.Name() != c.key.Vendor {
			c.path = target
			attempt.Path = truncate(target, 512)
			attempt.Denial = keybrake.Errorf(keybrake.CodeVendorMismatch, "vault key %s is for %s, not %s", c.key.ID, c.key.Vendor, v.Name())
			p.decideAndDeny(w, r, c, attempt)
			return
		}
	}
	attempt.Vendor = c.key.Vendor
	if c.vendor == nil {
		attempt.Denial = keybrake.Errorf(keybrake.CodeVendorNotConfigured, "vendor %q of this key is not served by this Keybrake", c.key.Vendor)
		p.decideAndDeny(w, r, c, attempt)
		return
	}

	// 2. Canonical or rejected, on the raw target.
	path, query, err := keybrake.CanonicalTarget(target)
	if err == nil && prefixed {
		path = strings.TrimPrefix(path, "/"+first)
		if path == "" {
			err = keybrake.Errorf(keybrake.CodeNonCanonicalPath, "no vendor path after /%s", first)
		}
	}
	if err != nil {
		c.path = truncate(target, 512)
		attempt.Path = c.path
		attempt.Denial = asError(err)
		p.decideAndDeny(w, r, c, attempt)
		return
	}
	c.path, c.query = path, query
	attempt.Path = path

	// 3. The catalogue, then the allow-list. A root path no vendor of the
	// key owns is refused like any other disallowed endpoint.
	if !prefixed && !c.vendor.Owns(path) {
		attempt.Denial = keybrake.Errorf(keybrake.CodeEndpointNotAllowed, "%s %s is not a %s API path", r.Method, path, c.vendor.Name())
		p.decideAndDeny(w, r, c, attempt)
		return
	}
	op, params, denial := p.resolve(c, r.Method, path)
	if op != nil {
		attempt.Operation = op.Name
	}
	if denial != nil {
		attempt.Denial = denial
		p.decideAndDeny(w, r, c, attempt)
		return
	}
	attempt.Rule = c.rule
	if !c.vendor.Configured() {
		attempt.Denial = keybrake.Errorf(keybrake.CodeVendorNotConfigured, "%s has no credential configured on this Keybrake; nothing was forwarded", c.vendor.Name())
		p.decideAndDeny(w, r, c, attempt)
		return
	}

	// 4. Price the call: read the body, have the vendor encode it and the
	// operation price it (looking up the object it acts on, if need be).
	if k := r.Header.Get("Idempotency-Key"); k != "" {
		if len(k) > 255 || !printable(k) {
			attempt.Denial = keybrake.Errorf(keybrake.CodeInvalidIdempotencyKey, "Idempotency-Key must be 1 to 255 printable ASCII characters")
			p.decideAndDeny(w, r, c, attempt)
			return
		}
		c.idemKey = k
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, p.cfg.MaxRequestBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			attempt.Denial = keybrake.Errorf(keybrake.CodeRequestTooLarge, "request body is larger than %d bytes", p.cfg.MaxRequestBody)
		} else {
			attempt.Denial = keybrake.Errorf(keybrake.CodeInvalidRequest, "request body could not be read")
		}
		p.decideAndDeny(w, r, c, attempt)
		return
	}
	if e := p.price(r.Context(), c, op, params, &keybrake.VendorRequest{Method: r.Method, Path: path, Query: query, Header: r.Header, Body: body}, &attempt); e != nil {
		attempt.Denial = e
		p.decideAndDeny(w, r, c, attempt)
		return
	}
	if c.idemKey != "" {
		attempt.IdempotencyKey = c.idemKey
		attempt.Fingerprint = fingerprint(r.Method, c.vendor.Name(), path, query, body)
		attempt.VendorDedupes = c.vendor.DedupesIdempotency()
		attempt.IdempotencyTTL = p.cfg.IdempotencyTTL
	}

	// 5. One transaction decides, reserves and audits.
	d, err := p.decide(r.Context(), attempt)
	if err != nil {
		p.fail(w, c, p.unavailable(err), err)
		return
	}
	c.decision = d
	c.usage = &d.Usage
	switch {
	case d.Replay != nil:
		p.replay(w, c, d)
	case !d.Allowed:
		p.deny(w, c, d)
	default:
		if p.finalize(w, c) {
			p.forward(w, r, c)
		}
	}
}

// decideAndDeny records a refusal decided before the ledger. The ledger
// still checks the key's status first, so a revoked key reads as revoked.
func (p *Proxy) decideAndDeny(w http.ResponseWriter, r *http.Request, c *call, a keybrake.Attempt) {
	d, err := p.decide(r.Context(), a)
	if err != nil {
		// The refusal stands even if it cannot be recorded.
		p.log.Error("audit row for a denial not written", "err", err.Error(), "code", string(a.Denial.Code))
		p.writeError(w, c, &keybrake.ErrorReply{Code: a.Denial.Code, Message: a.Denial.Message, Field: a.Denial.Field})
		return
	}
	c.decision = d
	if d.Key != nil {
		c.usage = &d.Usage
	}
	p.deny(w, c, d)
}

func (p *Proxy) deny(w http.ResponseWriter, c *call, d keybrake.Decision) {
	e := d.Err
	if e == nil {
		e = keybrake.Errorf(keybrake.CodeInternal, "request refused")
	}
	reply := &keybrake.ErrorReply{Code: e.Code, Message: e.Message, Field: e.Field, CallID: d.CallID}
	if d.Key != nil {
		reply.KeyID = d.Key.ID
	}
	if e.Code == keybrake.CodeCapExhausted {
		capUSD, req := d.Cap, d.Requested
		spent, reserved := d.Usage.SpentToday, d.Usage.ReservedToday
		if d.CapName == "total" {
			spent, reserved = d.Usage.Spent, d.Usage.Reserved
		}
		reply.CapName, reply.CapUSD, reply.SpentUSD, reply.ReservedUSD, reply.RequestedUSD = d.CapName, &capUSD, &spent, &reserved, &req
	}
	p.writeError(w, c, reply)
}

// fail answers a request the ledger could not decide: nothing was forwarded.
func (p *Proxy) fail(w http.ResponseWriter, c *call, e *keybrake.Error, cause error) {
	p.log.Error("ledger unavailable", "err", cause.Error())
	p.writeError(w, c, &keybrake.ErrorReply{Code: e.Code, Message: e.Message})
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
