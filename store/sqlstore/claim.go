package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/keybrake/keybrake"
)

// Claim is a replica name this process holds (Dialect.ClaimInstance). The
// store decides only while the claim's lease runs, so a replica that lost
// its name (its database session ended with a restart, and it could not
// take the name back yet) fails closed rather than deciding under a name
// that another process might be about to recover.
type Claim interface {
	// Lease is the instant until which a decision may commit under the
	// name, or the reason none may now.
	Lease() (until time.Time, err error)
	// Check asks for the hold to be verified now, not at the next beat:
	// the store calls it when a decision hits an outage.
	Check()
	// Release gives the name up at shutdown, once in-flight calls are
	// settled. A database that is already gone is not an error.
	Release() error
}

// claimSlot holds the store's Claim for concurrent readers.
type claimSlot struct{ p atomic.Pointer[Claim] }

// ClaimInstance makes this process the only live holder of a replica name,
// so that it may recover, at start, the calls its previous incarnation left
// pending (they can have no live owner). From here on the store decides
// only while it holds the name. Release it on shutdown.
func (s *Store) ClaimInstance(ctx context.Context, instance string) (func() error, error) {
	if s.dialect.ClaimInstance == nil {
		return func() error { return nil }, nil
	}
	c, err := s.dialect.ClaimInstance(ctx, s.w, instance)
	if err != nil {
		return nil, s.wrap("claim instance", err)
	}
	s.claim.p.Store(&c)
	return c.Release, nil
}

// held reports why the store may not decide now, or nil.
func (s *Store) held() error {
	c := s.claim.p.Load()
	if c == nil {
		return nil
	}
	if _, err := (*c).Lease(); err != nil {
		return fmt.Errorf("%w: %w", keybrake.ErrStoreUnavailable, err)
	}
	return nil
}

// admit lets a decision start only under a live lease, and gives it the
// lease's end as a deadline: a decision can never commit after the moment
// another process may take the name over. done ends the decision; an
// outage it hit makes the claim verify itself at once.
func (s *Store) admit(ctx context.Context) (_ context.Context, done func(error), _ error) {
	c := s.claim.p.Load()
	if c == nil {
		return ctx, func(error) {}, nil
	}
	until, err := (*c).Lease()
	if err != nil {
		return nil, nil, fmt.Errorf("decide: %w: %w", keybrake.ErrStoreUnavailable, err)
	}
	ctx, cancel := context.WithDeadline(ctx, until)
	return ctx, func(err error) {
		cancel()
		if errors.Is(err, keybrake.ErrStoreUnavailable) {
			(*c).Check()
		}
	}, nil
}
