package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keybrake/keybrake"
)

// Group commit. Every Decide and Settle is an op; ops queue, and one
// goroutine (the batcher) applies whatever has arrived while the previous
// batch was committing, up to BatchSize, in ONE write transaction:
//
//   - no fixed sleep: a lone op starts at once, in a batch of one;
//   - in arrival order, each op against the totals the ones before it left
//     (they read and write the same transaction), with the same status,
//     expiry, rate limit, idempotency and cap checks as a transaction of
//     its own;
//   - one op's SQL error fails that op only: the batch is rolled back and
//     run again without it, as a SAVEPOINT per op would leave it, without
//     paying for one per op (see applyBatch); the others still commit;
//   - nothing is answered before the commit: a failed commit fails every op
//     in the batch closed (store_unavailable), and none was half-applied;
//   - on PostgreSQL the batch first locks all its key rows in one order
//     (ORDER BY id FOR UPDATE), so replicas' batches never deadlock, then
//     reads the clock once: a revoke and a decision are still stamped in
//     the order they held the key.
//
// One transaction pays one BEGIN, one commit and one fsync for up to
// BatchSize calls; that, not the statements, is what a hot key waited on.

// DefaultBatchSize bounds the ops of one batch.
const DefaultBatchSize = 64

// defaultBatchTimeout bounds a batch whose ops carry no deadline.
const defaultBatchTimeout = 30 * time.Second

// op states: the batcher claims an op (queued→started) before applying it;
// a caller whose context ends first withdraws it (queued→abandoned), so a
// cancelled caller's op is cleanly skipped, never half-applied.
const (
	opQueued int32 = iota
	opStarted
	opAbandoned
)

// op is one Decide or Settle waiting for, or inside, a batch.
type op struct {
	ctx        context.Context
	attempt    *keybrake.Attempt    // a Decide
	settlement *keybrake.Settlement // or a Settle

	state atomic.Int32
	done  chan struct{}

	d   keybrake.Decision
	u   keybrake.Usage
	err error
}

func (o *op) name() string {
	if o.attempt != nil {
		return "decide"
	}
	return "settle"
}

func (o *op) apply(ctx context.Context, s *Store, q Querier, now time.Time, h *held) error {
	if o.attempt != nil {
		return s.decide(ctx, q, now, h, o.attempt, &o.d)
	}
	return s.settle(ctx, q, now, h, *o.settlement, &o.u)
}

func (o *op) fail(err error) {
	o.d, o.u, o.err = keybrake.Decision{}, keybrake.Usage{}, err
}

// batcher is the queue and the goroutine that drains it.
type batcher struct {
	queue chan *op
	// carry holds ops taken from the queue by a batch they could not join
	// (join.go); they run first in the next batch. Only the batcher's
	// goroutine touches it.
	carry  []*op
	size   int
	quit   chan struct{}
	exited chan struct{}
	once   sync.Once
}

// SetBatchSize sets how many ops one transaction may carry and starts the
// batcher. n <= 1 turns group commit off: each op is its own transaction,
// run by its caller (the way to measure what batching buys). Call it once,
// before the store is used.
func (s *Store) SetBatchSize(n int) {
	if s.batch != nil {
		s.batch.stop()
		s.batch = nil
	}
	if n <= 1 {
		return
	}
	b := &batcher{queue: make(chan *op, 4*n), size: n, quit: make(chan struct{}), exited: make(chan struct{})}
	s.batch = b
	go s.loop(b)
}

func (b *batcher) stop() {
	b.once.Do(func() { close(b.quit) })
	<-b.exited
}

var errClosed = errors.New("store is closed")

// submit runs o in a batch and waits for its result.
func (s *Store) submit(o *op) error {
	b := s.batch
	if b == nil {
		s.runBatch([]*op{o})
		return o.err
	}
	o.done = make(chan struct{})
	select {
	case b.queue <- o:
	case <-o.ctx.Done():
		return s.wrap(o.name(), o.ctx.Err())
	case <-b.quit:
		return fmt.Errorf("%s: %w: %w", o.name(), keybrake.ErrStoreUnavailable, errClosed)
	}
	select {
	case <-o.done:
		return o.err
	case <-o.ctx.Done():
		if o.state.CompareAndSwap(opQueued, opAbandoned) {
			return s.wrap(o.name(), o.ctx.Err())
		}
	case <-b.exited:
		if o.state.CompareAndSwap(opQueued, opAbandoned) {
			return fmt.Errorf("%s: %w: %w", o.name(), keybrake.ErrStoreUnavailable, errClosed)
		}
	}
	// The batcher started o: its batch ends by o's deadline (it is bounded
	// by the earliest deadline of its ops), committed or failed.
	<-o.done
	return o.err
}

// loop takes what has arrived, up to the batch size, and applies it.
func (s *Store) loop(b *batcher) {
	defer close(b.exited)
	ops := make([]*op, 0, b.size)
	last := 0
	for {
		if len(b.carry) > 0 {
			select {
			case <-b.quit:
				return // their callers hear of it through exited
			default:
			}
			n := min(len(b.carry), b.size)
			ops = append(ops[:0], b.carry[:n]...)
			b.carry = append(b.carry[:0], b.carry[n:]...)
		} else {
			select {
			case o := <-b.queue:
				ops = append(ops[:0], o)
			case <-b.quit:
				return
			}
		}
		// Under load (the last batch carried more than one op), let the
		// callers that are about to queue run first: one yield, not a
		// timer, so a lone call never waits. Measured end to end on a
		// SQLite hot key: ops per batch 19.6 -> 25.9, CPU per call -5%.
		if last > 1 {
			runtime.Gosched()
		}
	fill:
		for len(ops) < b.size {
			select {
			case o := <-b.queue:
				ops = append(ops, o)
			default:
				break fill
			}
		}
		last = len(ops)
		s.runBatch(ops)
		clear(ops)
	}
}

// runBatch claims the ops still wanted, applies them in one transaction and
// answers each.
func (s *Store) runBatch(ops []*op) {
	live := make([]*op, 0, len(ops))
	var deadline time.Time
	for _, o := range ops {
		if o.done != nil && !o.state.CompareAndSwap(opQueued, opStarted) {
			continue // withdrawn: its caller has already answered
		}
		if err := o.ctx.Err(); err != nil {
			o.fail(s.wrap(o.name(), err))
			o.finish()
			continue
		}
		if dl, ok := o.ctx.Deadline(); ok && (deadline.IsZero() || dl.Before(deadline)) {
			deadline = dl
		}
		live = append(live, o)
	}
	if len(live) == 0 {
		return
	}
	if deadline.IsZero() {
		deadline = time.Now().Add(defaultBatchTimeout)
	}
	// The batch runs under its own context, so one caller's cancellation
	// cannot abort the others' transaction; it still ends by the earliest
	// deadline of its ops (for a decision, the replica's lease: it never
	// commits after another process may take the name over).
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	start := time.Now()
	all, err := s.applyBatch(ctx, live)
	cancel()
	s.noteWrite(err)
	if f := s.observer.Load(); f != nil {
		(*f)(len(all), time.Since(start), err)
	}
	for _, o := range all {
		if err != nil {
			o.fail(err)
		}
		o.finish()
	}
}

func (o *op) finish() {
	if o.done != nil {
		close(o.done)
	}
}

// applyBatch applies the ops in one transaction, with those that joined it
// while it waited for its keys (join.go), and returns them all, to be
// answered. It returns an error only when the whole batch failed; an op's
// own failure is in its err.
//
// An op whose SQL fails aborts the transaction it was in. Rather than pay a
// SAVEPOINT and a RELEASE around every op (two statements, and on
// PostgreSQL two round trips, per op, to guard against what almost never
// happens), the batch is then rolled back and run again without that op,
// which keeps its error. That is exactly what rolling back to the op's
// savepoint would have left: the others applied in the same order, without
// the failed op's writes. Each rerun drops one op, so a batch runs at most
// once per op it carries; an error that is the store's, not the op's (a
// lost connection, the deadline), fails the rerun as a whole.
func (s *Store) applyBatch(ctx context.Context, ops []*op) ([]*op, error) {
	all := slices.Clone(ops)
	ops = slices.Clone(ops)
	for len(ops) > 0 {
		joined, failed, err := s.tryBatch(ctx, ops)
		all = append(all, joined...)
		ops = append(ops, joined...)
		if err != nil || failed < 0 {
			return all, err
		}
		ops = slices.Delete(ops, failed, failed+1)
	}
	return all, nil
}

// tryBatch runs one attempt at the batch's transaction: the ops that joined
// it (they follow ops, in arrival order), and the index, in ops and then
// joined, of the op that failed (the transaction was rolled back), or -1 and
// the commit's result. Joined ops are the caller's to answer whatever
// happens.
func (s *Store) tryBatch(ctx context.Context, ops []*op) (joined []*op, failed int, _ error) {
	hooks := s.hooks.Load()
	if hooks != nil && hooks.begin != nil {
		hooks.begin(len(ops))
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return joined, -1, s.wrap("batch: begin", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	q := s.stmts.on(tx)
	bctx := ctx // the batch's deadline, checked between ops
	if s.dialect.DeadlineBetweenOps {
		ctx = context.WithoutCancel(ctx)
	}
	expired := func() error {
		if !s.dialect.DeadlineBetweenOps {
			return nil
		}
		return bctx.Err()
	}
	// Audit row ids first: drawing them needs no lock (see arrays.go).
	var ids []int64
	if s.dialect.Arrays {
		if n := decisions(ops); n > 0 {
			if ids, err = s.drawIDs(ctx, q, n); err != nil {
				return joined, -1, s.wrap("batch: draw audit row ids", err)
			}
		}
	}
	h, err := s.holdKeys(ctx, q, ops) // one statement text: it stays prepared
	if err != nil {
		return joined, -1, s.wrap("batch: lock keys", err)
	}
	// The keys are held: ops on them that queued while this batch waited
	// for their locks join it now instead of waiting for the next one.
	deadline, _ := bctx.Deadline()
	joined = s.join(deadline, h, ops)
	if n := decisions(joined); n > 0 {
		more, err := s.drawIDs(ctx, q, n)
		if err != nil {
			return joined, -1, s.wrap("batch: draw audit row ids", err)
		}
		ids = append(ids, more...)
	}
	var now time.Time
	if s.dialect.Arrays {
		if now, err = s.callsClockAndDays(ctx, q, h, settled(ops, joined)); err != nil {
			return joined, -1, s.wrap("batch: lock calls, read clock and usage", err)
		}
	} else { // SQLite: nothing joins there (join.go)
		if err := s.holdCalls(ctx, q, h, settled(ops)); err != nil {
			return joined, -1, s.wrap("batch: lock calls", err)
		}
		if now, err = s.dialect.Now(ctx, q); err != nil {
			return joined, -1, s.wrap("batch: read clock", err)
		}
		h.day = Day(now)
		if err := s.readDays(ctx, q, h); err != nil {
			return joined, -1, s.wrap("batch: read usage", err)
		}
	}
	joined = s.admitJoined(h, joined)
	h.ids = ids
	ops = append(ops[:len(ops):len(ops)], joined...)
	for i, o := range ops {
		if err := expired(); err != nil {
			return joined, -1, s.wrap("batch", err)
		}
		o.d, o.u, o.err = keybrake.Decision{}, keybrake.Usage{}, nil
		h.direct = false
		err := o.apply(ctx, s, q, now, h)
		if err == nil && hooks != nil && hooks.op != nil {
			if herr := hooks.op(i); herr != nil {
				err = fmt.Errorf("%w: %w", keybrake.ErrStoreUnavailable, herr)
			}
		}
		if err != nil {
			o.fail(s.wrap(o.name(), err))
			return joined, i, nil
		}
	}
	if err := s.flush(ctx, q, h); err != nil {
		return joined, -1, s.wrap("batch: write totals", err)
	}
	if err := expired(); err != nil {
		return joined, -1, s.wrap("batch: commit", err)
	}
	if hooks != nil && hooks.commit != nil {
		if err := hooks.commit(len(ops)); err != nil {
			return joined, -1, fmt.Errorf("batch: commit: %w: %w", keybrake.ErrStoreUnavailable, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return joined, -1, s.wrap("batch: commit", err)
	}
	s.stmts.prepareMissed(ctx)
	return joined, -1, nil
}

// stmtCache keeps the ledger's statements prepared on the writer pool, for
// engines whose driver would otherwise parse every statement again
// (Dialect.Prepare; modernc SQLite). A statement is prepared after the
// first batch that used it commits: preparing needs a connection, and
// SQLite's one writer connection is the batch's own until then.
type stmtCache struct {
	db      *sql.DB
	enabled bool
	mu      sync.Mutex
	m       map[string]*sql.Stmt
	missed  map[string]bool
}

func (c *stmtCache) on(tx *sql.Tx) Querier {
	if !c.enabled {
		return tx
	}
	return &cachedTx{tx: tx, c: c}
}

func (c *stmtCache) get(query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.m[query]
	if st == nil {
		if c.missed == nil {
			c.missed = map[string]bool{}
		}
		c.missed[query] = true
	}
	return st
}

// prepareMissed prepares the statements the last batch ran unprepared.
func (c *stmtCache) prepareMissed(ctx context.Context) {
	if !c.enabled {
		return
	}
	c.mu.Lock()
	missed := c.missed
	c.missed = nil
	c.mu.Unlock()
	for query := range missed {
		st, err := c.db.PrepareContext(ctx, query)
		if err != nil {
			continue // it runs unprepared, as before
		}
		c.mu.Lock()
		if c.m == nil {
			c.m = map[string]*sql.Stmt{}
		}
		if old := c.m[query]; old != nil {
			old.Close()
		}
		c.m[query] = st
		c.mu.Unlock()
	}
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.m {
		st.Close()
	}
	c.m = nil
}

// cachedTx runs a transaction's statements through the cache.
type cachedTx struct {
	tx *sql.Tx
	c  *stmtCache
}

func (t *cachedTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.c.get(query); st != nil {
		return t.tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, query, args...)
}

func (t *cachedTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.c.get(query); st != nil {
		return t.tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, query, args...)
}

func (t *cachedTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.c.get(query); st != nil {
		return t.tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, query, args...)
}

// batchHooks let a test see and steer the batcher (storetest uses them to
// put chosen ops in one batch in a chosen order, and to fail an op or a
// whole batch). Production never sets them.
type batchHooks struct {
	begin  func(ops int)       // before a batch's transaction; may block
	op     func(i int) error   // after op i applied; an error fails op i as its SQL error would
	commit func(ops int) error // before the commit; an error fails the whole batch
}

// SetBatchHooks installs test hooks (nil funcs: none). See batchHooks.
func (s *Store) SetBatchHooks(begin func(ops int), op func(i int) error, commit func(ops int) error) {
	s.hooks.Store(&batchHooks{begin: begin, op: op, commit: commit})
}

// SetBatchObserver installs f (nil: none), which hears of every batch once
// it is committed or failed: how many ops it carried, how long it took
// (reruns included) and, if it failed as a whole, why. It runs on the
// batcher's goroutine, so it must be quick (a histogram's Observe). The
// server feeds it to the keybrake_store_batch_* metrics.
func (s *Store) SetBatchObserver(f func(ops int, took time.Duration, err error)) {
	if f == nil {
		s.observer.Store(nil)
		return
	}
	s.observer.Store(&f)
}

// BatchSize is the most ops one transaction carries (1: batching off).
func (s *Store) BatchSize() int {
	if s.batch == nil {
		return 1
	}
	return s.batch.size
}

// BatchQueued is the number of ops waiting for the batcher.
func (s *Store) BatchQueued() int {
	if s.batch == nil {
		return 0
	}
	return len(s.batch.queue)
}
