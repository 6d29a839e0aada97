package proxy

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/keybrake/keybrake"
)

// admit decides everything about a request that needs no ledger, cheapest
// check first, so that abuse costs the attacker and not Keybrake: the
// credential; the key's status as far as this replica knows it (a key the
// ledger already called revoked is refused before its body is read); the
// vendor and the canonical path; the operation and the allow-list; the
// headers, and the scope they name; and only then the body, which is read
// bounded, parsed bounded, re-encoded, scope-checked and priced.
//
// It fills c.a, the one Attempt the ledger decides. A non-nil result is a
// refusal: with c.key set the ledger still records it (and re-reads the
// key's status first, so a revoked key reads as revoked); without, no valid
// key was presented and the refusal is only counted (see reject).
func (p *Proxy) admit(w http.ResponseWriter, r *http.Request, c *call) *keybrake.Error {
	target := r.RequestURI
	first, _, _ := strings.Cut(strings.TrimPrefix(target, "/"), "/")
	c.a.Path = truncate(target, 512)
	c.a.Item = headerValue(r.Header.Get("Keybrake-Item"), 128)

	// 1. The vault key. Malformed keys are refused without a store lookup.
	if e := p.authenticate(r, c); e != nil || c.key == nil {
		// Answer in the shape of the vendor the path names, so an SDK with
		// a mistyped key still sees invalid_vault_key.
		if c.vendor = p.vendorOfPath(first, target); c.vendor != nil {
			c.a.Vendor = c.vendor.Name()
		}
		if e == nil {
			e = keybrake.Errorf(keybrake.CodeInvalidVaultKey, "missing or invalid vault key: send Authorization: Bearer <vault_key>")
		}
		return e
	}
	c.a.KeyID, c.a.Vendor = c.key.ID, c.key.Vendor
	c.vendor = p.vendors[c.key.Vendor]
	if p.keys.revoked(c.hash) {
		return keybrake.Errorf(keybrake.CodeKeyRevoked, "vault key %s was revoked", c.key.ID)
	}

	// 2. Which form: /{vendor}/<vendor path> or the vendor's own path at
	// the root. Then canonical or rejected, on the raw target.
	prefixed := false
	if v, ok := p.vendors[first]; ok {
		prefixed = true
		if v.Name() != c.key.Vendor {
			c.a.Vendor = v.Name()
			return keybrake.Errorf(keybrake.CodeVendorMismatch, "vault key %s is for %s, not %s", c.key.ID, c.key.Vendor, v.Name())
		}
	}
	if c.vendor == nil {
		return keybrake.Errorf(keybrake.CodeVendorNotConfigured, "vendor %q of this key is not served by this Keybrake", c.key.Vendor)
	}
	path, query, err := keybrake.CanonicalTarget(target)
	if err == nil && prefixed {
		path = strings.TrimPrefix(path, "/"+first)
		if path == "" {
			err = keybrake.Errorf(keybrake.CodeNonCanonicalPath, "no vendor path after /%s", first)
		}
	}
	if err != nil {
		return asError(err)
	}
	c.a.Path, c.query = path, query

	// 3. The catalogue, then the allow-list. A root path no vendor of the
	// key owns is refused like any other disallowed endpoint.
	if !prefixed && !c.vendor.Owns(path) {
		return keybrake.Errorf(keybrake.CodeEndpointNotAllowed, "%s %s is not a %s API path", r.Method, path, c.vendor.Name())
	}
	if e := p.resolve(c, r.Method, path); e != nil {
		return e
	}
	if !c.vendor.Configured() {
		return keybrake.Errorf(keybrake.CodeVendorNotConfigured, "%s has no credential configured on this Keybrake; nothing was forwarded", c.vendor.Name())
	}

	// 4. The headers: one value each of those Keybrake reads, a valid
	// Idempotency-Key, and the scope the request line and headers name.
	if e := keybrake.CheckSingleHeaders(r.Header, r.TransferEncoding); e != nil {
		return e
	}
	if k := r.Header.Get("Idempotency-Key"); k != "" {
		if len(k) > 255 || !printable(k) {
			return keybrake.Errorf(keybrake.CodeInvalidIdempotencyKey, "Idempotency-Key must be 1 to 255 printable ASCII characters")
		}
		c.a.IdempotencyKey = k
	}
	req := &keybrake.VendorRequest{Method: r.Method, Path: path, Query: query, Header: r.Header}
	if sc, ok := c.vendor.(keybrake.Scoper); ok {
		if e := sc.ScopeRequest(c.key.Scope, c.op, c.params, req); e != nil {
			return e
		}
	}

	// 5. Only now the body: read whole (bounded), then encoded, scoped and
	// priced by the vendor and the operation.
	body, e := p.readBody(w, r)
	if e != nil {
		return e
	}
	req.Body = body
	if e := p.price(r.Context(), c, req); e != nil {
		return e
	}
	if c.a.IdempotencyKey != "" {
		c.a.VendorIdempotencyKey = keybrake.VendorIdempotencyKey(c.key.IdempotencyNamespace(), c.a.IdempotencyKey)
		c.a.Fingerprint = fingerprint(r.Method, c.vendor.Name(), path, query, body)
		c.a.VendorDedupes = c.vendor.DedupesIdempotency()
		c.a.IdempotencyTTL = p.cfg.IdempotencyTTL
	}
	return nil
}

// authenticate reads the presented vault key and finds its policy (from
// the cache when possible). c.key stays nil for a missing, malformed or
// unknown key; the error is for a credential that cannot be read at all or
// a store that cannot be asked.
func (p *Proxy) authenticate(r *http.Request, c *call) *keybrake.Error {
	if len(r.Header.Values("Authorization")) > 1 {
		e := keybrake.Errorf(keybrake.CodeAmbiguousHeader, "Authorization is given more than once; send one vault key")
		e.Field = "Authorization"
		return e
	}
	secret, ok := credential(r.Header)
	if !ok {
		return nil
	}
	c.hash = keybrake.HashSecret(secret)
	key, err := p.lookupKey(r.Context(), c.hash)
	if err != nil {
		e := p.unavailable(err)
		e.Err = err
		return e
	}
	c.key = key
	return nil
}

// readBody reads the client's body whole, bounded by MaxRequestBody: a
// declared length over the bound is refused before a byte is read, and the
// buffer is sized from the declared length, so a body costs its size once.
func (p *Proxy) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *keybrake.Error) {
	max := p.cfg.MaxRequestBody
	tooBig := func() *keybrake.Error { // built only when refused: Errorf formats
		return keybrake.Errorf(keybrake.CodeRequestTooLarge, "request body is larger than %d bytes", max)
	}
	if r.ContentLength > max {
		return nil, tooBig()
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooBig()
		}
		return nil, keybrake.Errorf(keybrake.CodeInvalidRequest, "request body could not be read")
	}
	return buf.Bytes(), nil
}

// price encodes the request for forwarding, checks the scope of what it
// names, and has its operation price it, filling the attempt's
// reservation. A lookup-priced operation first re-reads the key's status,
// so a revoked or expired key does not make Keybrake read a vendor object
// for it; each object a lookup reads is checked against the scope too.
func (p *Proxy) price(ctx context.Context, c *call, req *keybrake.VendorRequest) *keybrake.Error {
	if err := keybrake.CheckBody(req); err != nil {
		return asError(err)
	}
	prep, err := c.vendor.Prepare(req)
	if err != nil {
		return asError(err)
	}
	if prep.UpstreamPath == "" {
		prep.UpstreamPath = req.Path
	}
	c.prepared, c.body = prep, req.Body
	sc, scoped := c.vendor.(keybrake.Scoper)
	if scoped {
		if e := sc.ScopeBody(c.key.Scope, c.op, c.params, req, prep); e != nil {
			return e
		}
	}
	if c.op.Model == keybrake.ModelLookup {
		if e := p.stillActive(ctx, c); e != nil {
			return e
		}
	}
	fetch := &lookup{p: p, vendor: c.vendor, header: prep.FetchHeader}
	q, err := c.op.Quote(ctx, &keybrake.PriceCall{
		Method: req.Method, Path: req.Path, Params: c.params, Query: req.Query, Header: req.Header,
		Body: prep.Body, Form: prep.Form, Fetch: fetch,
	})
	if err != nil {
		var e *keybrake.Error
		if errors.As(err, &e) && e.Code == keybrake.CodeLookupFailed {
			p.log.Warn("lookup failed; the call was refused", "vendor", c.vendor.Name(), "operation", c.op.Name, "err", err.Error())
		}
		return asError(err)
	}
	c.quote = q
	c.a.Estimate, c.a.Step, c.a.Floor = q.Amount, q.Step, q.Floor
	c.a.ObjectID, c.a.Exposure = headerValue(q.ObjectID, 128), q.Exposure && q.ObjectID != ""
	if scoped { // after the price is known, so a refusal records what was asked
		for _, obj := range fetch.read {
			if e := sc.ScopeObject(c.key.Scope, c.op, obj.path, obj.body); e != nil {
				return e
			}
		}
	}
	return nil
}
