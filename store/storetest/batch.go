package storetest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/store"
)

// batchSteerer is what a group-committing store offers tests (see
// store/sqlstore/batch.go): the batch size, the queue's length, and hooks
// to hold the batcher, fail one op, or fail a whole batch's commit.
type batchSteerer interface {
	BatchSize() int
	BatchQueued() int
	SetBatchHooks(begin func(ops int), op func(i int) error, commit func(ops int) error)
}

// bop is one op of a steered batch: a Decide or a Settle.
type bop struct {
	a   *keybrake.Attempt
	st  *keybrake.Settlement
	ctx context.Context // nil: the test's
}

func dec(a keybrake.Attempt) bop     { return bop{a: &a} }
func stl(st keybrake.Settlement) bop { return bop{st: &st} }
func (o bop) run(t *testing.T, s store.Store) (r bres) {
	c := o.ctx
	if c == nil {
		c = ctx(t)
	}
	if o.a != nil {
		r.d, r.err = s.Decide(c, *o.a)
	} else {
		r.u, r.err = s.Settle(c, *o.st)
	}
	return r
}

type bres struct {
	d   keybrake.Decision
	u   keybrake.Usage
	err error
}

// batchFaults are failures injected into the steered batch: failOp fails
// the op at that position (as its SQL error would: its writes undone),
// failCommit the whole batch's commit.
type batchFaults struct {
	failOp     int // -1: none
	failCommit bool
	// started runs when the steered batch has claimed its ops, before its
	// transaction.
	started func()
	// withdrawn is how many of the ops leave the queue before the batch
	// starts (their callers gave up).
	withdrawn int
	// afterOp, when set, runs after each op of the steered batch applied
	// (a slow op: the batch's time passes there).
	afterOp func(i int)
}

var errInjected = errors.New("injected by storetest")

// inOneBatch applies ops in ONE batch, in the given order, and returns their
// results. It holds the batcher on a blocker decision (on its own key),
// queues the ops one by one (waiting for each to be queued, so arrival
// order is the slice's), runs between (if set) while they wait, then lets
// the batcher go: it takes them all at once. A store that does not batch
// (batch size 1) applies them one after another, which is what a batch
// must be equivalent to. The suite skips when the store cannot be steered.
func inOneBatch(t *testing.T, s store.Store, f batchFaults, between func(), ops ...bop) []bres {
	t.Helper()
	bs, ok := s.(batchSteerer)
	if !ok {
		t.Skip("the store does not group-commit")
	}
	if len(ops) > bs.BatchSize() && bs.BatchSize() > 1 {
		t.Fatalf("%d ops do not fit one batch of %d", len(ops), bs.BatchSize())
	}
	var (
		target  atomic.Bool  // the steered ops' batch (or, unbatched, their transactions) is running
		applied atomic.Int64 // ops of the target applied so far
		held    = make(chan struct{})
		release = make(chan struct{})
		holdOne sync.Once
		sizes   []int
		mu      sync.Mutex
	)
	batched := bs.BatchSize() > 1
	bs.SetBatchHooks(func(n int) {
		if batched {
			first := false
			holdOne.Do(func() { first = true })
			if first {
				close(held) // the blocker's batch waits here, before its transaction
				<-release
				return
			}
			if !target.Swap(true) && f.started != nil { // every batch after the blocker's
				f.started()
			}
		}
		mu.Lock()
		sizes = append(sizes, n)
		mu.Unlock()
	}, func(int) error {
		if !target.Load() {
			return nil
		}
		i := int(applied.Add(1) - 1)
		if i == f.failOp {
			return errInjected
		}
		if f.afterOp != nil {
			f.afterOp(i)
		}
		return nil
	}, func(int) error {
		if target.Load() && f.failCommit {
			return errInjected
		}
		return nil
	})
	defer bs.SetBatchHooks(nil, nil, nil)

	res := make([]bres, len(ops))
	if !batched {
		if between != nil {
			between()
		}
		target.Store(true)
		for i, o := range ops {
			res[i] = o.run(t, s)
		}
		return res
	}

	blockKey, _ := newKey(t, s)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := s.Decide(ctx(t), charge(blockKey, 0)); err != nil {
			t.Errorf("blocker decision: %v", err)
		}
	}()
	<-held
	for i, o := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = o.run(t, s)
		}()
		eventually(t, "the op to be queued", func() bool { return bs.BatchQueued() == i+1 })
	}
	if between != nil {
		between()
	}
	close(release)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if want := len(ops) - f.withdrawn; len(sizes) == 0 || sizes[0] != want {
		t.Fatalf("the steered ops ran in batches of %v, want one of %d", sizes, want)
	}
	return res
}

func wantAllowed(t *testing.T, what string, r bres) {
	t.Helper()
	if r.err != nil || !r.d.Allowed || r.d.Replay != nil {
		t.Fatalf("%s: want allowed, got err=%v allowed=%v denial=%v", what, r.err, r.d.Allowed, r.d.Err)
	}
}

func wantDenied(t *testing.T, what string, r bres, code keybrake.Code) {
	t.Helper()
	if r.err != nil || r.d.Allowed || r.d.Err == nil || r.d.Err.Code != code {
		t.Fatalf("%s: want denied %s, got err=%v allowed=%v denial=%v", what, code, r.err, r.d.Allowed, r.d.Err)
	}
	if r.d.CallID == 0 {
		t.Fatalf("%s: the denial wrote no audit row", what)
	}
}

// testBatchMixesKeys: one batch carrying calls on three keys, an unknown key
// and a revoked one. Each key is held to its own cap, against its own
// running totals, in arrival order.
func testBatchMixesKeys(t *testing.T, s store.Store) {
	k1, _ := newKey(t, s, daily(3*usd))
	k2, _ := newKey(t, s, daily(10*usd))
	k3, _ := newKey(t, s)
	if _, err := s.RevokeKey(ctx(t), k3.ID); err != nil {
		t.Fatal(err)
	}
	unknown := charge(k1, usd)
	unknown.KeyID = ""
	var ops []bop
	for i := 0; i < 5; i++ {
		ops = append(ops, dec(charge(k1, usd)), dec(charge(k2, usd)))
	}
	ops = append(ops, dec(unknown), dec(charge(k3, usd)))
	res := inOneBatch(t, s, batchFaults{failOp: -1}, nil, ops...)
	for i := 0; i < 5; i++ {
		r1, r2 := res[2*i], res[2*i+1]
		if i < 3 {
			wantAllowed(t, "k1 call", r1)
			if r1.d.Usage.ReservedToday != keybrake.Micros(i+1)*usd {
				t.Errorf("k1 call %d: usage %+v, want $%d reserved today (running total)", i, r1.d.Usage, i+1)
			}
		} else {
			wantDenied(t, "k1 call past its cap", r1, keybrake.CodeCapExhausted)
			if r1.d.CapName != "daily" || r1.d.Requested != usd {
				t.Errorf("k1 cap details: %s $%s", r1.d.CapName, r1.d.Requested)
			}
		}
		wantAllowed(t, "k2 call", r2)
		if r2.d.Usage.Reserved != keybrake.Micros(i+1)*usd {
			t.Errorf("k2 call %d: usage %+v, want $%d reserved", i, r2.d.Usage, i+1)
		}
	}
	wantDenied(t, "unknown key", res[10], keybrake.CodeInvalidVaultKey)
	wantDenied(t, "revoked key", res[11], keybrake.CodeKeyRevoked)
	wantUsage(t, checkLedger(t, s, k1.ID), 0, 3*usd)
	wantUsage(t, checkLedger(t, s, k2.ID), 0, 5*usd)
	wantUsage(t, checkLedger(t, s, k3.ID), 0, 0)
}

// testBatchCapRunsOut: a cap that runs out inside a batch lets exactly the
// affordable calls through, in arrival order; a release earlier in the same
// batch makes room for the calls after it.
func testBatchCapRunsOut(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, daily(5*usd))
	first := mustAllow(t, s, charge(k, 2*usd))
	res := inOneBatch(t, s, batchFaults{failOp: -1}, nil,
		dec(charge(k, usd)), dec(charge(k, usd)), dec(charge(k, usd)), // $5 of $5
		dec(charge(k, 1)), // one micro over
		stl(keybrake.Settlement{CallID: first.CallID, Outcome: keybrake.OutcomeForwarded, Status: 402}), // frees $2
		dec(charge(k, usd)), dec(charge(k, usd)), dec(charge(k, 1)),
	)
	for i, want := range []bool{true, true, true, false, true, true, true, false} {
		switch {
		case i == 4:
			if res[i].err != nil || res[i].u.Reserved != 3*usd {
				t.Fatalf("settlement in the batch: %v, usage %+v, want $3 reserved", res[i].err, res[i].u)
			}
		case want:
			wantAllowed(t, "affordable call", res[i])
		default:
			wantDenied(t, "unaffordable call", res[i], keybrake.CodeCapExhausted)
		}
	}
	wantUsage(t, checkLedger(t, s, k.ID), 0, 5*usd)
}

// testBatchIdempotencyDuplicates: duplicates of one Idempotency-Key inside
// one batch: the first reserves, the rest see it in flight; after the answer
// is stored, duplicates in the batch that settles it are replayed.
func testBatchIdempotencyDuplicates(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, daily(10*usd))
	a := idem(charge(k, 2*usd), "ik-batch", "fp", true)
	res := inOneBatch(t, s, batchFaults{failOp: -1}, nil, dec(a), dec(a), dec(a), dec(charge(k, usd)))
	wantAllowed(t, "first", res[0])
	wantDenied(t, "duplicate", res[1], keybrake.CodeIdempotencyInProgress)
	wantDenied(t, "duplicate", res[2], keybrake.CodeIdempotencyInProgress)
	wantAllowed(t, "another call", res[3])
	wantUsage(t, checkLedger(t, s, k.ID), 0, 3*usd)

	st := ok2xx(res[0].d.CallID, 1500_000)
	st.Response = &keybrake.StoredResponse{Status: 200, Body: []byte(`{"id":"pi_1"}`)}
	res = inOneBatch(t, s, batchFaults{failOp: -1}, nil, stl(st), dec(a), dec(a))
	if res[0].err != nil {
		t.Fatalf("settle: %v", res[0].err)
	}
	for _, r := range res[1:] {
		if r.err != nil || !r.d.Allowed || r.d.Replay == nil || string(r.d.Replay.Body) != `{"id":"pi_1"}` {
			t.Fatalf("duplicate after the answer: want a replay, got err=%v %+v", r.err, r.d)
		}
	}
	wantUsage(t, checkLedger(t, s, k.ID), 1500_000, usd)
}

// testBatchRevokeBetween: a revoke that commits while a batch's calls are
// queued stops every one of them; the batch before it was allowed.
func testBatchRevokeBetween(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, daily(10*usd))
	res := inOneBatch(t, s, batchFaults{failOp: -1}, nil, dec(charge(k, usd)), dec(charge(k, usd)))
	for _, r := range res {
		wantAllowed(t, "before the revoke", r)
	}
	res = inOneBatch(t, s, batchFaults{failOp: -1}, func() {
		if _, err := s.RevokeKey(ctx(t), k.ID); err != nil {
			t.Fatal(err)
		}
	}, dec(charge(k, usd)), dec(charge(k, usd)), dec(charge(k, usd)))
	for _, r := range res {
		wantDenied(t, "after the revoke", r, keybrake.CodeKeyRevoked)
	}
	wantUsage(t, checkLedger(t, s, k.ID), 0, 2*usd)
}

// testBatchFailures: one op's SQL error fails that op alone (its audit row
// and reservation are undone, the others commit); a
// failed commit fails every op of the batch closed, and none is half-applied.
func testBatchFailures(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, daily(10*usd))
	k2, _ := newKey(t, s, daily(10*usd))
	res := inOneBatch(t, s, batchFaults{failOp: 1}, nil, dec(charge(k, usd)), dec(charge(k, 2*usd)), dec(charge(k, 3*usd)))
	wantAllowed(t, "op before the failed one", res[0])
	if !errors.Is(res[1].err, keybrake.ErrStoreUnavailable) {
		t.Fatalf("the failed op: err %v, want store unavailable", res[1].err)
	}
	wantAllowed(t, "op after the failed one", res[2])
	if n := len(allCalls(t, s, keybrake.CallFilter{KeyID: k.ID})); n != 2 {
		t.Fatalf("%d audit rows, want 2: the failed op's row must be rolled back", n)
	}
	wantUsage(t, checkLedger(t, s, k.ID), 0, 4*usd)

	before := len(allCalls(t, s, keybrake.CallFilter{KeyID: k.ID}))
	id0 := res[0].d.CallID
	res = inOneBatch(t, s, batchFaults{failOp: -1, failCommit: true}, nil,
		dec(charge(k, usd)), stl(ok2xx(id0, usd)), dec(charge(k2, usd)), dec(idem(charge(k, usd), "ik-f", "fp", true)))
	for i, r := range res {
		if !errors.Is(r.err, keybrake.ErrStoreUnavailable) {
			t.Fatalf("op %d of a batch whose commit failed: err %v, want store unavailable", i, r.err)
		}
	}
	if n := len(allCalls(t, s, keybrake.CallFilter{KeyID: k.ID})); n != before {
		t.Fatalf("%d audit rows after a failed batch, want %d", n, before)
	}
	wantUsage(t, checkLedger(t, s, k.ID), 0, 4*usd) // the settlement did not apply either
	wantUsage(t, checkLedger(t, s, k2.ID), 0, 0)
	// Nothing was claimed: the same calls go through afterwards.
	mustAllow(t, s, idem(charge(k, usd), "ik-f", "fp", true))
	settle(t, s, ok2xx(id0, usd))
	wantUsage(t, checkLedger(t, s, k.ID), usd, 4*usd)
}

// testBatchDeadline: a batch ends by the earliest deadline of its ops (for a
// decision, the decision timeout; on PostgreSQL also the replica's lease).
// When that passes while the batch is still applying its ops, the batch
// fails as a whole, closed: no op of it is applied, and the caller with the
// deadline hears so rather than waiting on. Unbatched, the op with the
// deadline fails alone.
func testBatchDeadline(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, daily(10*usd))
	// Long enough to queue both ops on a loaded machine; the first op then
	// outlives it inside the batch.
	short, cancel := context.WithTimeout(ctx(t), 2*time.Second)
	defer cancel()
	hurried := dec(charge(k, usd))
	hurried.ctx = short
	batched := s.(batchSteerer).BatchSize() > 1
	res := inOneBatch(t, s, batchFaults{failOp: -1, afterOp: func(i int) {
		if i == 0 {
			dl, _ := short.Deadline()
			time.Sleep(time.Until(dl) + 50*time.Millisecond)
		}
	}}, nil, hurried, dec(charge(k, 2*usd)))
	if !errors.Is(res[0].err, keybrake.ErrStoreUnavailable) {
		t.Fatalf("the op whose deadline passed in its batch: err %v allowed %v, want store unavailable", res[0].err, res[0].d.Allowed)
	}
	if batched {
		if !errors.Is(res[1].err, keybrake.ErrStoreUnavailable) {
			t.Fatalf("an op of a batch past its deadline: err %v allowed %v, want store unavailable", res[1].err, res[1].d.Allowed)
		}
		if n := len(allCalls(t, s, keybrake.CallFilter{KeyID: k.ID})); n != 0 {
			t.Fatalf("%d audit rows after a batch past its deadline, want none", n)
		}
		wantUsage(t, checkLedger(t, s, k.ID), 0, 0)
		return
	}
	wantAllowed(t, "the op after, in a transaction of its own", res[1])
	wantUsage(t, checkLedger(t, s, k.ID), 0, 2*usd)
}

// testBatchCancellation: a caller that gives up while its op is queued is
// skipped cleanly (no audit row, nothing reserved); a caller that gives up
// once its batch has started breaks nothing: its op applies and it gets the
// answer, and the batch's other ops are untouched either way.
func testBatchCancellation(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, daily(10*usd))
	queued, cancelQueued := context.WithCancel(ctx(t))
	defer cancelQueued()
	started, cancelStarted := context.WithCancel(ctx(t))
	defer cancelStarted()
	gone := dec(charge(k, 4*usd))
	gone.ctx = queued
	late := dec(charge(k, 2*usd))
	late.ctx = started
	batched := s.(batchSteerer).BatchSize() > 1
	res := inOneBatch(t, s, batchFaults{failOp: -1, started: cancelStarted, withdrawn: 1}, func() {
		if batched {
			cancelQueued()
		}
	}, dec(charge(k, usd)), gone, late, dec(charge(k, usd)))
	wantAllowed(t, "op before", res[0])
	wantAllowed(t, "op after", res[3])
	if !batched {
		return // one transaction per op: there is no queue to leave
	}
	if res[1].err == nil {
		t.Fatalf("an op whose caller left while it was queued: %+v, want the caller's error", res[1].d)
	}
	wantAllowed(t, "op whose caller left after its batch started", res[2])
	if n := len(allCalls(t, s, keybrake.CallFilter{KeyID: k.ID})); n != 3 {
		t.Fatalf("%d audit rows, want 3 (the withdrawn op wrote none)", n)
	}
	wantUsage(t, checkLedger(t, s, k.ID), 0, 4*usd)
}

// testBatchSettlementsAndRetries: settlements held by a batch and the
// decisions after them in the same batch see each other in arrival order: a
// call settled twice in one batch moves money once; a late answer for an
// unknown call, then a retry of it, replays the answer; the retry first,
// then the late answer, takes the reservation over and the answer is moot.
func testBatchSettlementsAndRetries(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, daily(10*usd))
	unknownCall := func(ik string) (keybrake.Attempt, int64) {
		a := idem(charge(k, 2*usd), ik, "fp", true)
		d := mustAllow(t, s, a)
		settle(t, s, keybrake.Settlement{CallID: d.CallID, Outcome: keybrake.OutcomeUnknown, Status: 502})
		return a, d.CallID
	}
	late := func(id int64) keybrake.Settlement {
		st := ok2xx(id, 1500_000)
		st.Response = &keybrake.StoredResponse{Status: 200, Body: []byte(`{"id":"pi_late"}`)}
		return st
	}

	a, id := unknownCall("ik-late-1")
	res := inOneBatch(t, s, batchFaults{failOp: -1}, nil, stl(late(id)), stl(late(id)), dec(a))
	for i, r := range res[:2] {
		if r.err != nil {
			t.Fatalf("settlement %d: %v", i, r.err)
		}
	}
	if r := res[2]; r.err != nil || !r.d.Allowed || r.d.Replay == nil || string(r.d.Replay.Body) != `{"id":"pi_late"}` {
		t.Fatalf("retry after the late answer: want the replay, got err=%v %+v", r.err, r.d)
	}
	wantUsage(t, checkLedger(t, s, k.ID), 1500_000, 0)

	a, id = unknownCall("ik-late-2")
	res = inOneBatch(t, s, batchFaults{failOp: -1}, nil, dec(a), stl(late(id)))
	wantAllowed(t, "retry of an unknown call", res[0])
	if res[0].d.RetryOf != id || res[0].d.Reserved != 2*usd {
		t.Fatalf("retry: %+v, want it to take over call %d's $2", res[0].d, id)
	}
	if res[1].err != nil {
		t.Fatalf("late answer after the retry: %v", res[1].err)
	}
	wantUsage(t, checkLedger(t, s, k.ID), 1500_000, 2*usd)
}
