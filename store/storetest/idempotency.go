package storetest

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/store"
)

func testIdempotencyReplay(t *testing.T, s store.Store) {
	k, _ := newKey(t, s)
	a := idem(charge(k, 2*usd), "ik-replay", "fp-1", true)
	first := mustAllow(t, s, a)

	// In flight: a duplicate is refused and reserves nothing.
	mustDeny(t, s, a, keybrake.CodeIdempotencyInProgress)
	wantUsage(t, usage(t, s, k.ID), 0, 2*usd)
	// The same key for another request is refused.
	mustDeny(t, s, idem(charge(k, 2*usd), "ik-replay", "fp-2", true), keybrake.CodeIdempotencyKeyReused)

	st := ok2xx(first.CallID, 2*usd)
	st.Response = storedResponse(`{"id":"pi_first","amount":200}`)
	settle(t, s, st)

	for i := 0; i < 2; i++ {
		d := decide(t, s, a)
		if !d.Allowed || d.Replay == nil {
			t.Fatalf("retry after completion: allowed=%v err=%v replay=%v, want a replay", d.Allowed, d.Err, d.Replay != nil)
		}
		r := d.Replay
		if r.Status != 200 || !bytes.Equal(r.Body, []byte(`{"id":"pi_first","amount":200}`)) ||
			r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Request-Id") != "req_first" {
			t.Errorf("replayed response: %d %q %v", r.Status, r.Body, r.Header)
		}
		c := callByID(t, s, k.ID, d.CallID)
		if c.Outcome != keybrake.OutcomeReplayed || c.RetryOf != first.CallID || c.Estimated != 0 || c.Actual != 0 || c.Status != 200 {
			t.Errorf("replay's audit row: %+v", c)
		}
	}
	mustDeny(t, s, idem(charge(k, 2*usd), "ik-replay", "fp-2", true), keybrake.CodeIdempotencyKeyReused)
	u := checkLedger(t, s, k.ID)
	wantUsage(t, u, 2*usd, 0) // replays reserved and spent nothing
	if u.Calls != 3 {
		t.Errorf("calls %d, want 3 (one forwarded, two replayed)", u.Calls)
	}
}

// testIdempotencyTakeOver: after an unknown outcome, a retry with the same
// key (for a vendor that deduplicates) is forwarded again, taking over the
// unknown attempt's counted amount as its reservation: never counted twice,
// never released early.
func testIdempotencyTakeOver(t *testing.T, s store.Store) {
	k, _ := newKey(t, s)
	a := idem(charge(k, 2*usd), "ik-takeover", "fp", true)
	first := mustAllow(t, s, a)
	settle(t, s, keybrake.Settlement{CallID: first.CallID, Outcome: keybrake.OutcomeUnknown, Status: 502, Code: keybrake.CodeUpstreamUnreachable})
	wantUsage(t, usage(t, s, k.ID), 2*usd, 0)

	retry := mustAllow(t, s, a)
	if retry.CallID == first.CallID {
		t.Fatal("the retry reused the unknown call's row")
	}
	wantUsage(t, checkLedger(t, s, k.ID), 0, 2*usd)
	if c := callByID(t, s, k.ID, first.CallID); c.Outcome != keybrake.OutcomeUnknownRetried || c.Actual != 0 {
		t.Errorf("the unknown attempt's row: %+v, want unknown_retried with nothing counted", c)
	}
	if c := callByID(t, s, k.ID, retry.CallID); c.Outcome != keybrake.OutcomePending || c.RetryOf != first.CallID || c.Estimated != 2*usd {
		t.Errorf("the retry's row: %+v", c)
	}
	mustDeny(t, s, a, keybrake.CodeIdempotencyInProgress)

	st := ok2xx(retry.CallID, 2*usd)
	st.Response = storedResponse(`{"id":"pi_retry"}`)
	settle(t, s, st)
	d := decide(t, s, a)
	if d.Replay == nil || string(d.Replay.Body) != `{"id":"pi_retry"}` {
		t.Fatalf("after the retry completed: allowed=%v err=%v replay=%v", d.Allowed, d.Err, d.Replay)
	}
	wantUsage(t, checkLedger(t, s, k.ID), 2*usd, 0)
}

func testIdempotencyNoDedupe(t *testing.T, s store.Store) {
	k, _ := newKey(t, s)
	a := idem(charge(k, 1*usd), "ik-nodedupe", "fp", false)
	first := mustAllow(t, s, a)
	settle(t, s, keybrake.Settlement{CallID: first.CallID, Outcome: keybrake.OutcomeUnknown, Status: 504})
	mustDeny(t, s, a, keybrake.CodeOutcomeUnknown)
	if c := callByID(t, s, k.ID, first.CallID); c.Outcome != keybrake.OutcomeUnknown || c.Actual != 1*usd {
		t.Errorf("the unknown attempt's row: %+v", c)
	}
	wantUsage(t, checkLedger(t, s, k.ID), 1*usd, 0)
}

// testIdempotencyRelease: a vendor refusal that did not act (409, 429)
// frees the Idempotency-Key for a fresh attempt.
func testIdempotencyRelease(t *testing.T, s store.Store) {
	k, _ := newKey(t, s)
	a := idem(charge(k, 1*usd), "ik-release", "fp", true)
	first := mustAllow(t, s, a)
	settle(t, s, keybrake.Settlement{CallID: first.CallID, Outcome: keybrake.OutcomeForwarded, Status: 409,
		ReleaseIdempotency: true, Response: &keybrake.StoredResponse{Status: 409, Body: []byte(`{}`)}})
	again := mustAllow(t, s, a)
	if c := callByID(t, s, k.ID, again.CallID); c.RetryOf != 0 || c.Outcome != keybrake.OutcomePending {
		t.Errorf("fresh attempt's row: %+v", c)
	}
	wantUsage(t, checkLedger(t, s, k.ID), 0, 1*usd)
}

func testIdempotencyUnstored(t *testing.T, s store.Store) {
	k, _ := newKey(t, s)
	a := idem(charge(k, 1*usd), "ik-unstored", "fp", true)
	first := mustAllow(t, s, a)
	settle(t, s, ok2xx(first.CallID, 1*usd)) // Response nil: too large to keep
	mustDeny(t, s, a, keybrake.CodeReplayUnavailable)
	wantUsage(t, checkLedger(t, s, k.ID), 1*usd, 0)
}

// testIdempotencyExpiry: a completed record lives IdempotencyTTL; after it
// the key starts a fresh request, and SweepIdempotency deletes expired
// completed records but never one still in flight.
func testIdempotencyExpiry(t *testing.T, s store.Store) {
	k, _ := newKey(t, s)
	short := func(key string) keybrake.Attempt {
		a := idem(charge(k, 1*usd), key, "fp", true)
		a.IdempotencyTTL = time.Millisecond
		return a
	}
	complete := func(a keybrake.Attempt) keybrake.Decision {
		d := mustAllow(t, s, a)
		st := ok2xx(d.CallID, 1*usd)
		st.Response = storedResponse(`{}`)
		settle(t, s, st)
		return d
	}
	complete(short("ik-expire"))
	swept := complete(short("ik-sweep"))
	complete(idem(charge(k, 1*usd), "ik-keep", "fp", true))
	mustAllow(t, s, short("ik-inflight")) // never settled

	claimed := callByID(t, s, k.ID, swept.CallID).Time
	eventually(t, "the store's clock to pass the records' expiry", func() bool {
		now, err := s.Now(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		return now.After(claimed.Add(10 * time.Millisecond))
	})

	fresh := mustAllow(t, s, short("ik-expire"))
	if c := callByID(t, s, k.ID, fresh.CallID); c.RetryOf != 0 {
		t.Errorf("expired key: %+v, want a fresh call", c)
	}
	n, err := s.SweepIdempotency(ctx(t))
	if err != nil {
		t.Fatalf("SweepIdempotency: %v", err)
	}
	if n != 1 {
		t.Errorf("SweepIdempotency removed %d records, want 1 (ik-sweep)", n)
	}
	if d := decide(t, s, idem(charge(k, 1*usd), "ik-keep", "fp", true)); d.Replay == nil {
		t.Errorf("a live record was swept: %+v", d)
	}
	mustAllow(t, s, short("ik-sweep"))
	mustDeny(t, s, short("ik-inflight"), keybrake.CodeIdempotencyInProgress)
	checkLedger(t, s, k.ID)
}

func testIdempotencyConcurrent(t *testing.T, s store.Store) {
	k, _ := newKey(t, s)
	a := idem(charge(k, 1*usd), "ik-race", "fp", true)
	var allowed atomic.Int64
	err := parallel(50, func(int) error {
		d, err := s.Decide(ctx(t), a)
		switch {
		case err != nil:
			return err
		case d.Allowed:
			allowed.Add(1)
		case d.Err == nil || d.Err.Code != keybrake.CodeIdempotencyInProgress:
			return fmt.Errorf("denied with %v, want idempotency_in_progress", d.Err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if allowed.Load() != 1 {
		t.Fatalf("%d of 50 concurrent attempts with one Idempotency-Key were allowed, want 1", allowed.Load())
	}
	wantUsage(t, checkLedger(t, s, k.ID), 0, 1*usd)
}

func testIdempotencyScoped(t *testing.T, s store.Store) {
	k1, _ := newKey(t, s)
	k2, _ := newKey(t, s)
	mustAllow(t, s, idem(charge(k1, 1*usd), "ik-shared", "fp-1", true))
	mustAllow(t, s, idem(charge(k2, 1*usd), "ik-shared", "fp-2", true))
}
