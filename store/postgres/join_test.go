package postgres_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/store/postgres/pgtest"
)

// TestOpsJoinTheBatchThatHoldsTheirKey: while a batch waits for its key's
// row lock (held here by another session, as another replica's batch
// would), the calls that queue on that key join it once the lock is
// granted, and are decided in arrival order against its running totals;
// calls on other keys, and a settlement whose key hint is wrong, wait for
// the next batch and are still answered correctly.
func TestOpsJoinTheBatchThatHoldsTheirKey(t *testing.T) {
	s, url := openSchema(t)
	ctx := t.Context()
	hot, other := newCappedKey(t, s, time.Hour, 5*keybrake.MicrosPerUSD), newCappedKey(t, s, time.Hour, 5*keybrake.MicrosPerUSD)
	decide := func(k *keybrake.Key) keybrake.Decision {
		t.Helper()
		d, err := s.Decide(ctx, charge(k))
		if err != nil || !d.Allowed {
			t.Fatalf("decide: %+v %v", d, err)
		}
		return d
	}
	onHot := decide(hot)     // $1 reserved on the hot key; settled below
	onOther := decide(other) // $1 reserved on the other key

	var mu sync.Mutex
	var sizes []int
	s.SetBatchObserver(func(ops int, _ time.Duration, err error) {
		if err != nil {
			t.Errorf("a batch failed: %v", err)
		}
		mu.Lock()
		sizes = append(sizes, ops)
		mu.Unlock()
	})

	// Another session holds the hot key's row, as a replica's batch would.
	admin := pgtest.Admin(t, url)
	lock, err := admin.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback() //nolint:errcheck // committed below
	if _, err := lock.ExecContext(ctx, `SELECT 1 FROM keys WHERE id = $1 FOR UPDATE`, hot.ID); err != nil {
		t.Fatal(err)
	}
	var holder int
	if err := lock.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&holder); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	var first keybrake.Decision
	var firstErr error
	run(func() { first, firstErr = s.Decide(ctx, charge(hot)) })
	eventually(t, "the first batch to wait for the hot key's lock", func() bool {
		var waiting int
		if err := admin.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, holder).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		return waiting > 0 && s.BatchQueued() == 0
	})

	// Queued, one at a time so their order is known, while it waits: nine
	// $1 charges on the hot key, a settlement on it (with its key as the
	// hint), one charge on the other key, and a settlement of the other
	// key's call that names the hot key.
	hotDs := make([]keybrake.Decision, 9)
	hotErrs := make([]error, 9)
	queued := 0
	queue := func(f func()) {
		t.Helper()
		run(f)
		queued++
		eventually(t, "the op to be queued", func() bool { return s.BatchQueued() == queued })
	}
	for i := range hotDs {
		queue(func() { hotDs[i], hotErrs[i] = s.Decide(ctx, charge(hot)) })
	}
	var settledHot, settledOther keybrake.Usage
	var settleHotErr, settleOtherErr error
	queue(func() {
		settledHot, settleHotErr = s.Settle(ctx, keybrake.Settlement{CallID: onHot.CallID, KeyID: hot.ID,
			Outcome: keybrake.OutcomeForwarded, Status: 402})
	})
	var otherD keybrake.Decision
	var otherErr error
	queue(func() { otherD, otherErr = s.Decide(ctx, charge(other)) })
	queue(func() {
		settledOther, settleOtherErr = s.Settle(ctx, keybrake.Settlement{CallID: onOther.CallID, KeyID: hot.ID,
			Outcome: keybrake.OutcomeForwarded, Status: 200, Actual: keybrake.MicrosPerUSD})
	})

	if err := lock.Commit(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	// The hot key had $1 reserved: the waiting call and the first three
	// joined ones reach the $5 cap, the other six are refused, and the
	// settlement, last, frees the first $1.
	if firstErr != nil || !first.Allowed {
		t.Fatalf("the waiting call: %+v %v", first, firstErr)
	}
	for i, d := range hotDs {
		if hotErrs[i] != nil {
			t.Fatalf("joined call %d: %v", i, hotErrs[i])
		}
		if want := i < 3; d.Allowed != want {
			t.Fatalf("joined call %d: allowed=%v, want %v (denial %v)", i, d.Allowed, want, d.Err)
		}
		if !d.Allowed && (d.Err == nil || d.Err.Code != keybrake.CodeCapExhausted) {
			t.Fatalf("joined call %d: denial %v, want cap_exhausted", i, d.Err)
		}
	}
	if settleHotErr != nil || settledHot.Reserved != 4*keybrake.MicrosPerUSD || settledHot.Spent != 0 {
		t.Fatalf("settlement on the hot key: %+v %v, want $4 reserved, $0 spent", settledHot, settleHotErr)
	}
	if otherErr != nil || !otherD.Allowed {
		t.Fatalf("the other key's call: %+v %v", otherD, otherErr)
	}
	if settleOtherErr != nil || settledOther.Spent != keybrake.MicrosPerUSD || settledOther.Reserved != keybrake.MicrosPerUSD {
		t.Fatalf("the other key's settlement: %+v %v, want $1 spent, $1 reserved", settledOther, settleOtherErr)
	}
	mu.Lock()
	defer mu.Unlock()
	// The waiting batch: its own call, the nine charges and the hot
	// settlement. Then the two left for the next batch.
	if len(sizes) != 2 || sizes[0] != 11 || sizes[1] != 2 {
		t.Fatalf("batches of %v, want [11 2]", sizes)
	}
	var spent, reserved int64
	if err := admin.QueryRowContext(context.WithoutCancel(ctx), `SELECT spent, reserved FROM keys WHERE id = $1`, hot.ID).Scan(&spent, &reserved); err != nil {
		t.Fatal(err)
	}
	if spent != 0 || reserved != int64(4*keybrake.MicrosPerUSD) {
		t.Fatalf("hot key row: spent %d reserved %d, want 0 and $4", spent, reserved)
	}
}
