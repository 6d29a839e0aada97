package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/keybrake/keybrake"
)

// resolve is deny by default: the call must resolve to one operation of the
// vendor's catalogue, that operation must not be forbidden, and the key's
// allow-list must admit it (a path rule literally, or an operation rule by
// name). It records the operation, its path parameters and the rule on c.
func (p *Proxy) resolve(c *call, method, path string) *keybrake.Error {
	op, params := c.vendor.Catalog().Resolve(method, path)
	switch {
	case op == nil:
		return keybrake.Errorf(keybrake.CodeUnknownOperation,
			"%s %s is not an operation Keybrake knows for %s, so it is not forwarded whatever the allow-list says (see `keybrake pricing` for the catalogue)",
			method, path, c.vendor.Name())
	case op.Model == keybrake.ModelForbidden:
		c.a.Operation = op.Name
		return keybrake.Errorf(keybrake.CodeOperationForbidden, "%s %s is %s, which Keybrake never forwards: %s", method, path, op.Name, op.Note)
	}
	c.op, c.params, c.a.Operation = op, params, op.Name
	rule, ok := c.key.Rules.Allow(op, method, path)
	if !ok {
		return keybrake.Errorf(keybrake.CodeEndpointNotAllowed, "%s %s (%s) is not in the allow-list of vault key %s", method, path, op.Name, c.key.ID)
	}
	c.a.Rule = rule.String()
	return nil
}

// stillActive refuses a call for a key that is no longer active, read from
// the store (the decision re-checks it in its own transaction).
func (p *Proxy) stillActive(ctx context.Context, c *call) *keybrake.Error {
	v, err := p.cfg.Ledger.GetKey(ctx, c.key.ID)
	if err != nil {
		return keybrake.Errorf(keybrake.CodeStoreUnavailable, "the ledger is unavailable; nothing was forwarded")
	}
	switch v.Status {
	case keybrake.StatusRevoked:
		return keybrake.Errorf(keybrake.CodeKeyRevoked, "vault key %s was revoked", c.key.ID)
	case keybrake.StatusExpired:
		return keybrake.Errorf(keybrake.CodeKeyExpired, "vault key %s expired", c.key.ID)
	}
	return nil
}

// finalize fixes the body of a bounded call from what the ledger reserved
// (the TimeLimit Keybrake sets), so the vendor runs exactly what was paid
// for. On failure the reservation is released and the call refused.
func (p *Proxy) finalize(w http.ResponseWriter, c *call) bool {
	if c.quote == nil || c.quote.Finalize == nil {
		return true
	}
	body, err := c.quote.Finalize(c.decision.Reserved)
	if err == nil {
		c.prepared.Body = body
		return true
	}
	c.upstream = context.Background()
	p.settle(c, keybrake.Settlement{CallID: c.decision.CallID, Outcome: keybrake.OutcomeForwarded, Status: http.StatusBadRequest,
		Code: keybrake.CodeUnpriceableRequest, Latency: time.Since(c.start)})
	e := asError(err)
	p.writeError(w, c, &keybrake.ErrorReply{Code: keybrake.CodeUnpriceableRequest, Message: e.Message, KeyID: c.key.ID, CallID: c.decision.CallID})
	return false
}

// settledCost is what a 2xx answer says the call cost: what the quote reads
// from it, or the reservation when it reads nothing. ok=false means the
// answer did not say, and the reservation stands.
func (c *call) settledCost(resp *keybrake.VendorResponse) (keybrake.Micros, bool) {
	if c.quote == nil || c.quote.Settle == nil {
		return c.decision.Reserved, true
	}
	if m, ok := c.quote.Settle(resp); ok {
		return m, true
	}
	return c.decision.Reserved, false
}

// Bounds of one lookup: a vendor object is small, and a lookup holds a
// client waiting before anything is reserved.
const (
	maxLookupBody = 1 << 20
	lookupTimeout = 10 * time.Second
	maxLookups    = 2
)

// lookup is the keybrake.Fetcher of one call: GET a vendor path with the
// real credential, over the proxy's transport, bounded in time, size and
// number.
type lookup struct {
	p      *Proxy
	vendor keybrake.Vendor
	header http.Header
	n      int
	read   []fetched // what it read, for the scope check
}

type fetched struct {
	path string
	body []byte
}

func (l *lookup) Fetch(ctx context.Context, path string) ([]byte, error) {
	if err := keybrake.CheckCanonicalPath(path); err != nil {
		return nil, fmt.Errorf("lookup %q: %w", path, err)
	}
	if l.n++; l.n > maxLookups {
		return nil, fmt.Errorf("lookup %s: more than %d lookups for one call", path, maxLookups)
	}
	ctx, cancel := context.WithTimeout(ctx, min(lookupTimeout, l.p.cfg.UpstreamTimeout))
	defer cancel()
	prep, err := l.vendor.Prepare(&keybrake.VendorRequest{Method: http.MethodGet, Path: path, Header: l.header})
	if err != nil {
		return nil, err
	}
	if prep.UpstreamPath == "" {
		prep.UpstreamPath = path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://vendor.invalid/", nil)
	if err != nil {
		return nil, err
	}
	for k, v := range l.header {
		req.Header[k] = append([]string(nil), v...)
	}
	l.vendor.Direct(req, prep)
	resp, err := l.p.cfg.Transport.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("lookup %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxLookupBody+1))
	if err != nil {
		return nil, fmt.Errorf("lookup %s: %w", path, err)
	}
	if len(body) > maxLookupBody {
		return nil, fmt.Errorf("lookup %s: answer larger than %d bytes", path, maxLookupBody)
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return nil, &keybrake.FetchError{Path: path, Status: resp.StatusCode, Body: bytes.Clone(body)}
	}
	l.read = append(l.read, fetched{path, body})
	return body, nil
}
