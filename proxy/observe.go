package proxy

import (
	"time"

	"github.com/keybrake/keybrake"
)

// Observer is told how each proxied request went; the metrics package
// implements it. Its methods run on the request's goroutine after the
// decision is recorded and must not block.
type Observer interface {
	// Request is called once per request, as it ends.
	Request(RequestStats)
	// Upstream is called once per forwarded call with the time from sending
	// it to the vendor's answer (or the failure to get one).
	Upstream(vendor string, d time.Duration)
}

// RequestStats describes one finished request. It carries no key id,
// label or secret: an observer's figures stay bounded.
type RequestStats struct {
	Vendor   string // "" when no vendor could be told
	KeyKnown bool   // a valid vault key was presented
	Outcome  keybrake.Outcome
	Code     keybrake.Code
	Status   int
	Duration time.Duration
	// Spent is the call's settled cost (its estimate for an unknown
	// outcome); 0 for denials, replays and unsettled calls.
	Spent keybrake.Micros
}

func (p *Proxy) observe(c *call) {
	if p.cfg.Observer == nil {
		return
	}
	st := RequestStats{KeyKnown: c.key != nil, Outcome: c.outcome, Code: c.code, Status: c.status, Duration: time.Since(c.start)}
	if c.vendor != nil {
		st.Vendor = c.vendor.Name()
	}
	if c.usage != nil && (c.outcome == keybrake.OutcomeForwarded || c.outcome == keybrake.OutcomeUnknown) {
		st.Spent = c.actual
	}
	p.cfg.Observer.Request(st)
}

func (p *Proxy) observeUpstream(c *call) {
	if p.cfg.Observer != nil && !c.sent.IsZero() {
		p.cfg.Observer.Upstream(c.vendor.Name(), time.Since(c.sent))
	}
}
