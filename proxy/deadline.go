package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/keybrake/keybrake"
)

// DefaultDecisionTimeout is Config.DecisionTimeout's default: a few
// seconds, the order of SQLite's busy timeout and PostgreSQL's lock_timeout.
const DefaultDecisionTimeout = 5 * time.Second

// decide asks the ledger for a decision within DecisionTimeout. Without a
// deadline, requests queued for a store that cannot decide (SQLite's
// single writer held by another process, say) would each wait their own
// busy timeout in turn, and the last would go through long after its
// client gave up; with it, each is refused with 503 store_unavailable once
// its time is up, and nothing is forwarded. The ledger commits or rolls
// back the whole decision, so a decision cut short reserved nothing.
//
// The decision is not cut short by the client hanging up, only by the
// deadline: a cancellation that lands while the commit is in flight leaves
// the store committed and the proxy told "canceled", a reservation no one
// settles, counted as unknown spend by the recovery sweep minutes later. A
// load test's end (wrk closing its connections) did exactly that. Once
// decided, the call goes on as any other: a client that leaves mid-call
// cannot know whether it was sent, and the ledger's record says it was.
func (p *Proxy) decide(ctx context.Context, a keybrake.Attempt) (keybrake.Decision, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.DecisionTimeout)
	defer cancel()
	return p.cfg.Ledger.Decide(ctx, a)
}

// unavailable is the refusal of a call the ledger could not decide, naming
// the deadline when that is what ended it.
func (p *Proxy) unavailable(cause error) *keybrake.Error {
	if errors.Is(cause, context.DeadlineExceeded) {
		return keybrake.Errorf(keybrake.CodeStoreUnavailable, "the ledger did not decide within %s; nothing was forwarded", p.cfg.DecisionTimeout)
	}
	return keybrake.Errorf(keybrake.CodeStoreUnavailable, "the ledger is unavailable; nothing was forwarded")
}
