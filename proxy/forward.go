package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"time"

	"github.com/keybrake/keybrake"
)

// SettleTimeout bounds how long a settlement keeps retrying the store. A
// call pending longer than UpstreamTimeout + SettleTimeout can no longer be
// settled by its replica: the recovery sweep counts it as unknown.
const SettleTimeout = 2 * time.Minute

// NewTransport is the connection pool to the vendors: keep-alive connections
// reused across calls, bounded dial and TLS times, and a response-header
// timeout equal to the call timeout. Each vendor is one host, so the
// per-host idle limit is the one that matters: it is as large as the whole
// pool, so that a burst of concurrent calls to one vendor (thousands of
// Lambdas on one key) finds its connections again instead of closing all
// but a few and dialling (and TLS-handshaking) anew.
func NewTransport(timeout time.Duration) *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
	}
}

// strippedRequestHeaders never reach a vendor: the client's credential
// (replaced by the real one), Keybrake's own headers, method overrides that
// would make the vendor execute a method other than the one matched,
// Accept-Encoding, so the transport decompresses and settlement can read
// the answer, and Content-Encoding: the body forwarded is the one Keybrake
// read and encoded, never compressed.
var strippedRequestHeaders = []string{
	"Authorization", "Proxy-Authorization", "Cookie", "Keybrake-Item",
	"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "X-Original-Method",
	"X-Original-URL", "X-Rewrite-URL", "Accept-Encoding", "Content-Encoding",
}

// forward sends a reserved call to the vendor. The vendor call is detached
// from the client's cancellation: once money may move, Keybrake waits for
// the answer (up to UpstreamTimeout) so it can settle it instead of
// recording an unknown outcome because the client hung up.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, c *call) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), p.cfg.UpstreamTimeout)
	defer cancel()
	p.inflight.add(c)
	defer p.inflight.remove(c)
	c.upstream, c.sent = ctx, time.Now()
	// The request ReverseProxy clones carries the vendor call's context
	// (detached, bounded, holding c) from the start: one copy of the
	// request instead of two, and Rewrite need not swap it again.
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(ctx, callKey{}, c)))
	putBody(c.answer) // the answer is written; nothing holds it any more
	c.answer = nil
}

func callFrom(r *http.Request) *call {
	c, _ := r.Context().Value(callKey{}).(*call)
	return c
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	c := callFrom(pr.In)
	for _, h := range strippedRequestHeaders {
		pr.Out.Header.Del(h)
	}
	for name := range pr.Out.Header {
		if len(name) > 9 && http.CanonicalHeaderKey(name[:9]) == "Keybrake-" {
			pr.Out.Header.Del(name)
		}
	}
	body := c.prepared.Body
	pr.Out.Body = io.NopCloser(bytes.NewReader(body))
	pr.Out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	pr.Out.ContentLength = int64(len(body))
	pr.Out.TransferEncoding = nil
	if len(body) == 0 {
		pr.Out.Body, pr.Out.GetBody = http.NoBody, nil
	}
	pr.Out.Header.Del("Content-Length")
	pr.Out.URL.RawQuery = c.query
	pr.Out.URL.ForceQuery = false
	setDecidedHeaders(pr.Out.Header, c)
	c.vendor.Direct(pr.Out, c.prepared)
}

// setDecidedHeaders sets, last, the headers Keybrake read or decided:
// ReverseProxy has already dropped every header a client's Connection
// header names, so a header Keybrake relies on is never taken from the
// client's copy but set here from what was priced. That covers the
// re-encoded body's Content-Type, the vendor's headers Prepare read
// (Stripe-Account, …), and the Idempotency-Key, namespaced to the key.
func setDecidedHeaders(h http.Header, c *call) {
	if c.prepared.ContentType != "" {
		h.Set("Content-Type", c.prepared.ContentType)
	}
	for k, v := range c.prepared.Header {
		h[k] = append([]string(nil), v...)
	}
	h.Del("Idempotency-Key")
	if c.a.IdempotencyKey != "" {
		vk := c.decision.VendorIdempotencyKey // a retry re-sends what its first attempt sent
		if vk == "" {
			vk = c.a.VendorIdempotencyKey
		}
		h.Set("Idempotency-Key", vk)
	}
}

// modifyResponse settles the call before the client sees the answer, so the
// Keybrake-Spent-Usd header is already true when the agent reads it.
func (p *Proxy) modifyResponse(res *http.Response) error {
	c := callFrom(res.Request)
	limit := p.cfg.MaxStoredResponse
	// The answer is read into a pooled buffer, given back once it is
	// written (forward), unless it is kept for idempotent replays: then
	// the ledger may hold on to it, so it is the call's own.
	ab := getBody()
	if res.ContentLength > 0 && res.ContentLength <= limit {
		ab.Grow(int(res.ContentLength) + bytes.MinRead)
	}
	_, readErr := ab.ReadFrom(io.LimitReader(res.Body, limit+1))
	buf := ab.Bytes()
	if c.a.IdempotencyKey == "" {
		c.answer = ab
	}
	truncated := int64(len(buf)) > limit
	switch {
	case readErr != nil:
		res.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), errReader{readErr}), res.Body}
	case truncated:
		res.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), res.Body), res.Body}
	default:
		res.Body.Close()
		res.Body = io.NopCloser(bytes.NewReader(buf))
		res.ContentLength = int64(len(buf))
		res.Header.Set("Content-Length", strconv.Itoa(len(buf)))
	}
	// The vendor echoes the Idempotency-Key it received: give the client
	// back its own (and store that for replays).
	if c.a.IdempotencyKey != "" && res.Header.Get("Idempotency-Key") != "" {
		res.Header.Set("Idempotency-Key", c.a.IdempotencyKey)
	}
	st := c.settlement(res.StatusCode, res.Header, buf, truncated, readErr)
	st.Latency = time.Since(c.start)
	p.settle(c, st)
	for name := range res.Header {
		if len(name) > 9 && name[:9] == "Keybrake-" {
			res.Header.Del(name)
		}
	}
	p.setKeybrakeHeaders(res.Header, c)
	return nil
}

// settlement is what an answer means for the ledger:
//
//   - 5xx: the vendor may have acted; the outcome is unknown and the
//     reservation stays counted as spend;
//   - 2xx: settled at what the answer says moved (the reservation when it
//     does not say, or cannot be read), or at zero for a vendor's own
//     idempotent replay of a first attempt counted elsewhere;
//   - 409 and 429: the vendor did not act, and the Idempotency-Key is freed
//     for a fresh attempt; but for a retry that took over an unknown
//     attempt's reservation, the outcome stays unknown (the first attempt
//     may still be running at the vendor);
//   - any other status: a definite answer; the reservation is released;
//   - a body cut off before its end: unknown, unless it was a 2xx.
//
// The answer is kept for replays when the call had an Idempotency-Key,
// its outcome is known and it was read whole.
func (c *call) settlement(status int, h http.Header, body []byte, truncated bool, readErr error) keybrake.Settlement {
	st := keybrake.Settlement{
		CallID:          c.decision.CallID,
		Outcome:         keybrake.OutcomeForwarded,
		Status:          status,
		VendorRequestID: headerValue(c.vendor.RequestID(h), 128),
	}
	switch {
	case status >= 500:
		st.Outcome = keybrake.OutcomeUnknown
	case status >= 200 && status < 300:
		vr := &keybrake.VendorResponse{Status: status, Header: h, Body: body, Truncated: truncated || readErr != nil}
		actual, ok := c.settledCost(vr) // an unreadable answer: the reservation stands
		if !ok {
			_, st.ReconcileDue = c.vendor.(keybrake.Reconciler)
		}
		objectID := c.vendor.ObjectID(vr)
		if rd, isRD := c.vendor.(keybrake.ReplayDetector); isRD && rd.VendorReplayed(h) && c.decision.RetryOf == 0 {
			// The vendor answered from its own idempotency cache: this call
			// moved no money (the first one was counted where it was made).
			actual, st.ReconcileDue = 0, false
		}
		st.Actual, st.ObjectID = actual, headerValue(objectID, 128)
	case (status == http.StatusConflict || status == http.StatusTooManyRequests) && c.decision.RetryOf != 0:
		// A retry of an unknown attempt: the vendor did not act on this
		// request, but its 409 may be the first attempt still running
		// there (a timeout cut Keybrake off it). The reservation is that
		// attempt's, so it stays counted and the outcome stays unknown.
		st.Outcome = keybrake.OutcomeUnknown
	case status == http.StatusConflict || status == http.StatusTooManyRequests:
		st.ReleaseIdempotency = true // the vendor did not act; a retry may go through
	}
	if readErr != nil && (status < 200 || status >= 300) {
		st.Outcome = keybrake.OutcomeUnknown
	}
	if c.a.IdempotencyKey != "" && st.Outcome != keybrake.OutcomeUnknown && !truncated && readErr == nil {
		st.Response = &keybrake.StoredResponse{Status: status, Header: replayHeader(h), Body: body}
	}
	return st
}

// upstreamError handles a call that got no answer: unreachable, timed out or
// cut off. Whether the vendor acted is unknown, so the reservation stays
// counted as spend.
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	c := callFrom(r)
	code := keybrake.CodeUpstreamUnreachable
	p.settle(c, keybrake.Settlement{
		CallID:  c.decision.CallID,
		Outcome: keybrake.OutcomeUnknown,
		Status:  http.StatusBadGateway,
		Code:    code,
		Latency: time.Since(c.start),
	})
	msg := c.vendor.Name() + " did not answer"
	if errors.Is(err, context.DeadlineExceeded) {
		msg += " within " + p.cfg.UpstreamTimeout.String()
	}
	msg += "; the outcome is unknown and the reservation stays counted as spend"
	p.log.Warn("upstream call failed", "vendor", c.vendor.Name(), "key_id", c.key.ID, "call_id", c.decision.CallID, "err", err.Error())
	p.writeError(w, c, &keybrake.ErrorReply{Code: code, Message: msg, KeyID: c.key.ID, CallID: c.decision.CallID})
}

// settle records the answer. A failure here leaves the call pending, which
// the recovery sweep later counts as unknown spend: never under-counted.
//
// Money has already moved when settle runs, so it insists: a busy or briefly
// unreachable store is retried with backoff for up to SettleTimeout.
func (p *Proxy) settle(c *call, st keybrake.Settlement) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.upstream), SettleTimeout)
	defer cancel()
	p.observeUpstream(c)
	st.KeyID = c.key.ID
	c.status, c.outcome, c.code, c.actual, c.objectID = st.Status, st.Outcome, st.Code, st.Actual, st.ObjectID
	c.actual = st.Charge(c.decision.Reserved) // what the ledger records, decided once
	var u keybrake.Usage
	var err error
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		u, err = p.cfg.Ledger.Settle(ctx, st)
		if err == nil || !errors.Is(err, keybrake.ErrStoreUnavailable) || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
	}
	if err != nil {
		p.log.Error("settlement not recorded; the call stays reserved until the recovery sweep counts it", "call_id", st.CallID, "err", err.Error())
		c.usage = nil
		return
	}
	p.inflight.remove(c)
	c.usage = &u
}

// replay answers from a stored response, byte for byte.
func (p *Proxy) replay(w http.ResponseWriter, c *call, d keybrake.Decision) {
	h := w.Header()
	for k, v := range d.Replay.Header {
		h[k] = v
	}
	h.Set("Keybrake-Idempotent-Replayed", "true")
	h.Set("Content-Length", strconv.Itoa(len(d.Replay.Body)))
	p.setKeybrakeHeaders(h, c)
	c.status, c.outcome = d.Replay.Status, keybrake.OutcomeReplayed
	w.WriteHeader(d.Replay.Status)
	w.Write(d.Replay.Body) //nolint:errcheck // the client may have gone
}

func replayHeader(h http.Header) http.Header {
	out := http.Header{}
	for _, k := range keybrake.ReplayHeaders {
		if v, ok := h[k]; ok {
			out[k] = append([]string(nil), v...)
		}
	}
	return out
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
