package proxy

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/keybrake/keybrake"
)

// undecided answers a request the ledger could not decide: nothing was
// forwarded. A refusal stands even if it cannot be recorded.
func (p *Proxy) undecided(w http.ResponseWriter, c *call, err error) {
	if e := c.a.Denial; e != nil {
		p.log.Error("audit row for a denial not written", "err", err.Error(), "code", string(e.Code))
		p.writeError(w, c, &keybrake.ErrorReply{Code: e.Code, Message: e.Message, Field: e.Field})
		return
	}
	p.log.Error("ledger unavailable", "err", err.Error())
	e := p.unavailable(err)
	p.writeError(w, c, &keybrake.ErrorReply{Code: e.Code, Message: e.Message})
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
	switch e.Code {
	case keybrake.CodeCapExhausted:
		capUSD, req := d.Cap, d.Requested
		spent, reserved := d.Usage.SpentToday, d.Usage.ReservedToday
		if d.CapName == "total" {
			spent, reserved = d.Usage.Spent, d.Usage.Reserved
		}
		reply.CapName, reply.CapUSD, reply.SpentUSD, reply.ReservedUSD, reply.RequestedUSD = d.CapName, &capUSD, &spent, &reserved, &req
	case keybrake.CodeRateLimited:
		reply.RetryAfter = max(1, int((d.RetryAfter+time.Second-1)/time.Second))
	}
	p.writeError(w, c, reply)
}

// reject answers a request that presented no valid key. It is not audited
// one row each (a flood of them would fill the ledger and slow every real
// call): it is counted by code in the metrics, and its log line is sampled
// (logCall).
func (p *Proxy) reject(w http.ResponseWriter, c *call, e *keybrake.Error) {
	if e.Err != nil {
		p.log.Error("ledger unavailable", "err", e.Err.Error())
	}
	p.writeError(w, c, &keybrake.ErrorReply{Code: e.Code, Message: e.Message, Field: e.Field})
}

// writeError sends a refusal in the vendor's error shape (Keybrake's own
// when the vendor is not known yet).
func (p *Proxy) writeError(w http.ResponseWriter, c *call, reply *keybrake.ErrorReply) {
	c.status, c.code = reply.Status(), reply.Code
	if c.outcome == "" {
		c.outcome = keybrake.DeniedOutcome(reply.Code)
	}
	var body any = reply
	h := w.Header()
	if c.vendor != nil {
		var extra http.Header
		extra, body = c.vendor.ErrorResponse(reply)
		for k, v := range extra {
			h[k] = v
		}
	}
	b, err := json.Marshal(body)
	if err != nil {
		b = []byte(`{"code":"internal_error","message":"error body could not be encoded"}`)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	if reply.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(reply.RetryAfter))
	}
	h.Set("Cache-Control", "no-store")
	p.setKeybrakeHeaders(h, c)
	w.WriteHeader(reply.Status())
	w.Write(b) //nolint:errcheck // the client may have gone
}

// setKeybrakeHeaders adds the key id, the call id and the key's spend and
// headroom after this call, and marks the answers of sandboxed vendors.
func (p *Proxy) setKeybrakeHeaders(h http.Header, c *call) {
	if c.vendor != nil && slices.Contains(p.cfg.Sandboxed, c.vendor.Name()) {
		h.Set("Keybrake-Sandbox", "true") // a local stand-in answered, not the vendor
	}
	if c.decision.CallID != 0 {
		h.Set("Keybrake-Call-Id", strconv.FormatInt(c.decision.CallID, 10))
	}
	if c.key == nil {
		return
	}
	h.Set("Keybrake-Key-Id", c.key.ID)
	if c.usage != nil {
		h.Set("Keybrake-Spent-Usd", c.usage.Spent.String())
		h.Set("Keybrake-Remaining-Usd", c.key.Remaining(*c.usage).String())
	}
}

// logCall writes the one log line of a proxied request. Its fields are an
// allow-list: no header values, no bodies, no query strings, no secrets.
// Requests that presented no valid key are sampled: at most one line per
// code per second, saying how many were not logged since.
func (p *Proxy) logCall(c *call) {
	p.observe(c)
	var suppressed int64
	if c.key == nil {
		ok, n := p.sampler.allow(c.code, time.Now())
		if !ok {
			return
		}
		suppressed = n
	}
	// The attributes are gathered in an array on the stack: the line is
	// written on every call, and a growing slice allocated for it.
	var buf [16]slog.Attr
	attrs := append(buf[:0],
		slog.String("method", c.a.Method),
		slog.String("path", truncate(c.a.Path, 256)),
		slog.Int("status", c.status),
		slog.String("outcome", string(c.outcome)),
		slog.Int64("latency_ms", time.Since(c.start).Milliseconds()),
	)
	if c.key != nil {
		attrs = append(attrs, slog.String("key_id", c.key.ID), slog.String("vendor", c.key.Vendor))
	}
	if c.decision.CallID != 0 {
		attrs = append(attrs, slog.Int64("call_id", c.decision.CallID))
	}
	if c.op != nil {
		attrs = append(attrs, slog.String("operation", c.op.Name))
	}
	if c.a.Rule != "" {
		attrs = append(attrs, slog.String("rule", c.a.Rule))
	}
	if c.code != "" {
		attrs = append(attrs, slog.String("code", string(c.code)))
	}
	if c.quote != nil {
		estimated := c.a.Estimate
		if c.decision.Allowed {
			estimated = c.decision.Reserved
		}
		attrs = append(attrs, slog.String("estimated_usd", estimated.String()), slog.String("actual_usd", c.actual.String()))
	}
	if c.objectID != "" {
		attrs = append(attrs, slog.String("object_id", c.objectID))
	}
	if c.a.Item != "" {
		attrs = append(attrs, slog.String("item", c.a.Item))
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int64("suppressed", suppressed))
	}
	p.log.LogAttrs(context.Background(), slog.LevelInfo, "proxied request", attrs...)
}

// logSampler lets through at most one log line per code per interval and
// counts the rest, for requests that presented no valid key: a flood of
// them must not become a flood of log lines either. Codes are Keybrake's
// own, a small fixed set, so the maps stay small.
type logSampler struct {
	every      time.Duration
	mu         sync.Mutex
	last       map[keybrake.Code]time.Time
	suppressed map[keybrake.Code]int64
}

func newLogSampler(every time.Duration) *logSampler {
	return &logSampler{every: every, last: map[keybrake.Code]time.Time{}, suppressed: map[keybrake.Code]int64{}}
}

// allow reports whether a line for code may be written now, and how many
// were suppressed since the last one.
func (s *logSampler) allow(code keybrake.Code, now time.Time) (bool, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if last, ok := s.last[code]; ok && now.Sub(last) < s.every {
		s.suppressed[code]++
		return false, 0
	}
	n := s.suppressed[code]
	s.last[code], s.suppressed[code] = now, 0
	return true, n
}
