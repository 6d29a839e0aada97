// Package peer routes every vault key's ledger operations to one replica,
// the key's owner, when several replicas share one PostgreSQL database.
//
// Why: the cap is exact because every decision on a key holds that key's
// row lock. Replicas behind a round-robin load balancer each batch their
// share of a hot key's calls and take turns on that lock, so each batch
// carries a third of the callers and three replicas serve one key slower
// than one (docs/performance.md). Routed, the owner's store batches every
// replica's calls on the key together, as one replica would.
//
// Routing is only about speed; the store's row lock still decides. Two
// replicas that disagree about the owner (one has not seen a replica come
// or go yet) are both exact, an op is forwarded at most once (the owner
// decides with its store, never routes again), and an owner that cannot
// be reached before an op is sent leaves that op to be decided where it
// arrived. Once an op is sent, only the owner's answer says what happened
// to it: a lost answer is 503 store_unavailable, nothing forwarded, as any
// store outage is.
//
// Membership is the peers table (sqlstore.Store.BeatPeer): each replica
// rewrites its row every second and routes among the rows seen in the last
// few seconds, picking a key's owner by rendezvous hashing, so every
// replica with the same list picks the same owner and a replica leaving
// moves only its own keys.
package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/keybrake/keybrake"
)

// Timings of membership: a replica beats every beatEvery, each beat given
// beatTimeout, and routes among the replicas that beat within fresh, so
// one that died stops receiving ops within fresh (meanwhile they fail to
// dial and are decided locally).
const (
	beatEvery   = time.Second
	beatTimeout = 2 * time.Second
	fresh       = 5 * time.Second
)

// Bounds of one routed op.
const (
	// answerGrace is how long past an op's deadline its answer is awaited:
	// the owner stops deciding at the deadline, and its answer is on its way.
	answerGrace = time.Second
	// settleTimeout bounds a settlement that came without a deadline.
	settleTimeout = 10 * time.Second
	// maxRoutedResponse: a settlement carrying a stored response larger
	// than this is applied locally rather than copied to the owner.
	maxRoutedResponse = 256 << 10
)

// Member is one replica as the peers table lists it.
type Member struct {
	ID  string // random per process
	URL string // where its peer listener is dialled: http://HOST:PORT
}

// Local is this replica's own ledger: the store.
type Local interface {
	Store
	KeyByHash(ctx context.Context, secretHash string) (*keybrake.Key, error)
	GetKey(ctx context.Context, id string) (*keybrake.KeyView, error)
	// Lease bounds a decision recorded under this replica's instance name
	// (sqlstore.Store.Lease).
	Lease() (time.Time, error)
}

// Config configures a Router.
type Config struct {
	Local Local
	Self  Member
	Token string // the peer token every replica shares
	// Beat announces Self and lists the replicas seen within fresh,
	// Self included (sqlstore.Store.BeatPeer).
	Beat func(ctx context.Context, self Member, fresh time.Duration) ([]Member, error)
	// Withdraw deletes Self's row (Router.Withdraw).
	Withdraw func(ctx context.Context, id string) error
	Logger   *slog.Logger
}

// Router is the proxy's ledger on a replica that routes: it implements
// proxy.Ledger.
type Router struct {
	cfg Config
	log *slog.Logger

	// view is the replicas of the last beat, this one included (never
	// dialled).
	view atomic.Pointer[[]*remote]

	mu      sync.Mutex
	remotes map[string]*remote // every replica listed so far, by id

	stats Stats
	once  sync.Once
	stop  chan struct{}
	done  chan struct{}
}

// Stats counts routed ops, for /metrics.
type Stats struct {
	Sent   atomic.Int64 // decided or settled by their key's owner
	Local  atomic.Int64 // owned by another replica that could not be reached, so decided here
	Failed atomic.Int64 // sent, and no answer came back: 503
}

// NewRouter starts routing: it beats once, so that a replica routes from
// its first call, then every beatEvery until Close.
func NewRouter(ctx context.Context, cfg Config) (*Router, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Router{cfg: cfg, log: cfg.Logger, remotes: map[string]*remote{}, stop: make(chan struct{}), done: make(chan struct{})}
	if err := r.beat(ctx); err != nil {
		return nil, fmt.Errorf("announce this replica to its peers: %w", err)
	}
	go r.run()
	return r, nil
}

// Replicas is how many replicas this one routes among, itself included.
func (r *Router) Replicas() int {
	if v := r.view.Load(); v != nil {
		return len(*v)
	}
	return 0
}

// Stats are the router's counters.
func (r *Router) Stats() *Stats { return &r.stats }

func (r *Router) run() {
	defer close(r.done)
	t := time.NewTicker(beatEvery)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), beatTimeout)
		if err := r.beat(ctx); err != nil {
			r.log.Warn("peer beat failed: routing by the last list", "err", err.Error())
		}
		cancel()
	}
}

// beat announces this replica and takes the new list. A replica that may
// not decide now (it lost its instance name) does not announce itself, so
// the others stop sending it ops; it keeps routing its own.
func (r *Router) beat(ctx context.Context) error {
	var list []Member
	var err error
	if _, lerr := r.cfg.Local.Lease(); lerr != nil {
		err = fmt.Errorf("not announced: %w", lerr)
	} else {
		list, err = r.cfg.Beat(ctx, r.cfg.Self, fresh)
	}
	if err != nil {
		// The last list stays: whatever it gets wrong (a replica gone, one
		// not yet in it) costs batching, never exactness, and a replica
		// that cannot be dialled has its ops decided here.
		return err
	}
	r.mu.Lock()
	v := make([]*remote, 0, len(list))
	for _, m := range list {
		p := r.remotes[m.ID]
		if p == nil || p.url != m.URL {
			if p != nil {
				p.close()
			}
			p = &remote{id: m.ID, url: m.URL, token: r.cfg.Token}
			r.remotes[m.ID] = p
		}
		v = append(v, p)
	}
	r.mu.Unlock()
	if old := r.view.Swap(&v); old == nil || !sameMembers(*old, v) {
		ids := make([]string, len(v))
		for i, p := range v {
			ids[i] = p.id
		}
		r.log.Info("routing keys among these replicas", "replicas", len(v), "peer_ids", ids)
	}
	return nil
}

func sameMembers(a, b []*remote) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// owner is the remote that owns keyID, or nil when this replica does (or
// no list is known): the replica with the highest hash of its id and the
// key's.
func (r *Router) owner(keyID string) *remote {
	v := r.view.Load()
	if keyID == "" || v == nil {
		return nil
	}
	var best *remote
	var bestH uint64
	for _, p := range *v {
		if h := xxhash.Sum64String(p.id + "\x00" + keyID); best == nil || h > bestH {
			best, bestH = p, h
		}
	}
	if best == nil || best.id == r.cfg.Self.ID {
		return nil
	}
	return best
}

// Withdraw stops beating and deletes this replica's row, so the others
// stop sending it ops at their next beat. Routing goes on by the last
// list: this replica's own calls still reach their owners while it drains.
func (r *Router) Withdraw(ctx context.Context) error {
	r.once.Do(func() { close(r.stop) })
	<-r.done
	return r.cfg.Withdraw(ctx, r.cfg.Self.ID)
}

// Close closes the peer connections; call it once no call is in flight.
func (r *Router) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.remotes {
		p.close()
	}
}

func (r *Router) KeyByHash(ctx context.Context, secretHash string) (*keybrake.Key, error) {
	return r.cfg.Local.KeyByHash(ctx, secretHash)
}

func (r *Router) GetKey(ctx context.Context, id string) (*keybrake.KeyView, error) {
	return r.cfg.Local.GetKey(ctx, id)
}

// Decide asks the key's owner for the decision. The decision is recorded
// under this replica's instance name (Attempt.Instance: this replica
// forwards and settles the call), so it is bounded by this replica's
// lease as well as the caller's deadline.
func (r *Router) Decide(ctx context.Context, a keybrake.Attempt) (keybrake.Decision, error) {
	p := r.owner(a.KeyID)
	if p == nil {
		return r.cfg.Local.Decide(ctx, a)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(settleTimeout)
	}
	until, err := r.cfg.Local.Lease()
	if err != nil {
		return keybrake.Decision{}, fmt.Errorf("decide: %w: %w", keybrake.ErrStoreUnavailable, err)
	}
	if !until.IsZero() && until.Before(deadline) {
		deadline = until
	}
	left := time.Until(deadline)
	if left <= 0 {
		return keybrake.Decision{}, fmt.Errorf("decide: %w: %w", keybrake.ErrStoreUnavailable, context.DeadlineExceeded)
	}
	sent := a
	sent.Denial = bare(a.Denial)
	var reply DecideReply
	err = p.call(decideCall, &DecideArgs{Attempt: sent, Timeout: left}, &reply, left+answerGrace)
	switch {
	case errors.Is(err, errNotSent):
		r.stats.Local.Add(1)
		return r.cfg.Local.Decide(ctx, a)
	case err != nil:
		r.stats.Failed.Add(1)
		return keybrake.Decision{}, fmt.Errorf("decide: %w: %w", keybrake.ErrStoreUnavailable, err)
	}
	r.stats.Sent.Add(1)
	return reply.Decision, reply.Err.err()
}

// Settle sends the settlement to the owner of the key the call was decided
// on (Settlement.KeyID; the owner's store checks it against the call).
// Settling twice is a no-op, so a settlement whose answer was lost is
// simply retried by the proxy.
func (r *Router) Settle(ctx context.Context, st keybrake.Settlement) (keybrake.Usage, error) {
	p := r.owner(st.KeyID)
	if p == nil || (st.Response != nil && len(st.Response.Body) > maxRoutedResponse) {
		return r.cfg.Local.Settle(ctx, st)
	}
	left := settleTimeout
	if d, ok := ctx.Deadline(); ok {
		left = time.Until(d)
	}
	if left <= 0 {
		return keybrake.Usage{}, fmt.Errorf("settle: %w: %w", keybrake.ErrStoreUnavailable, context.DeadlineExceeded)
	}
	var reply SettleReply
	err := p.call(settleCall, &SettleArgs{Settlement: st, Timeout: left}, &reply, left+answerGrace)
	switch {
	case errors.Is(err, errNotSent):
		r.stats.Local.Add(1)
		return r.cfg.Local.Settle(ctx, st)
	case err != nil:
		r.stats.Failed.Add(1)
		return keybrake.Usage{}, fmt.Errorf("settle: %w: %w", keybrake.ErrStoreUnavailable, err)
	}
	r.stats.Sent.Add(1)
	return reply.Usage, reply.Err.err()
}
