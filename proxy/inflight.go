package proxy

import (
	"sort"
	"sync"
	"time"
)

// InFlightCall is a call forwarded to its vendor and not yet settled.
type InFlightCall struct {
	CallID int64
	KeyID  string
	Vendor string
	Age    time.Duration
}

// inflight is the set of calls between forwarding and settlement: the
// ones whose reservation a shutdown that cuts the drain short leaves
// pending (and the next start counts as unknown spend).
type inflight struct {
	mu sync.Mutex
	m  map[*call]struct{}
}

func (f *inflight) add(c *call) {
	f.mu.Lock()
	if f.m == nil {
		f.m = map[*call]struct{}{}
	}
	f.m[c] = struct{}{}
	f.mu.Unlock()
}

func (f *inflight) remove(c *call) {
	f.mu.Lock()
	delete(f.m, c)
	f.mu.Unlock()
}

// InFlight lists the calls at a vendor whose settlement is not recorded
// yet, oldest first.
func (p *Proxy) InFlight() []InFlightCall {
	p.inflight.mu.Lock()
	out := make([]InFlightCall, 0, len(p.inflight.m))
	for c := range p.inflight.m {
		out = append(out, InFlightCall{CallID: c.decision.CallID, KeyID: c.key.ID, Vendor: c.vendor.Name(), Age: time.Since(c.start)})
	}
	p.inflight.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].CallID < out[j].CallID })
	return out
}
