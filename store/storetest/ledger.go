package storetest

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/store"
)

func testPerCallCap(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, perCall(5*usd))
	mustAllow(t, s, charge(k, 5*usd))
	d := mustDeny(t, s, charge(k, 5*usd+1), keybrake.CodeCapExhausted)
	if d.CapName != "per_call" || d.Cap != 5*usd || d.Requested != 5*usd+1 {
		t.Errorf("cap details: %s $%s requested $%s", d.CapName, d.Cap, d.Requested)
	}
	wantUsage(t, checkLedger(t, s, k.ID), 0, 5*usd)
}

func testDailyCap(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, daily(10*usd))
	var ids []int64
	for i := 0; i < 10; i++ {
		d := mustAllow(t, s, charge(k, 1*usd))
		if d.Usage.Reserved != keybrake.Micros(i+1)*usd || d.Usage.ReservedToday != keybrake.Micros(i+1)*usd {
			t.Fatalf("decision %d: usage %+v", i, d.Usage)
		}
		ids = append(ids, d.CallID)
	}
	d := mustDeny(t, s, charge(k, 1*usd), keybrake.CodeCapExhausted)
	if d.CapName != "daily" || d.Cap != 10*usd || d.Requested != 1*usd || d.Usage.ReservedToday != 10*usd {
		t.Errorf("cap details: %s $%s requested $%s usage %+v", d.CapName, d.Cap, d.Requested, d.Usage)
	}
	// A definite refusal releases its reservation; a cheaper answer frees
	// the difference.
	settle(t, s, keybrake.Settlement{CallID: ids[0], Outcome: keybrake.OutcomeForwarded, Status: 402})
	mustAllow(t, s, charge(k, 1*usd))
	settle(t, s, ok2xx(ids[1], 400_000))
	mustDeny(t, s, charge(k, 600_001), keybrake.CodeCapExhausted)
	mustAllow(t, s, charge(k, 600_000))
	mustDeny(t, s, charge(k, 1), keybrake.CodeCapExhausted)
	u := checkLedger(t, s, k.ID)
	wantUsage(t, u, 400_000, 9*usd+600_000)
}

func testTotalCap(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, daily(100*usd), total(3*usd))
	var ids []int64
	for i := 0; i < 3; i++ {
		ids = append(ids, mustAllow(t, s, charge(k, 1*usd)).CallID)
	}
	d := mustDeny(t, s, charge(k, 1*usd), keybrake.CodeCapExhausted)
	if d.CapName != "total" || d.Cap != 3*usd {
		t.Errorf("cap details: %s $%s", d.CapName, d.Cap)
	}
	// An unknown outcome stays counted; a definite refusal frees the room.
	settle(t, s, keybrake.Settlement{CallID: ids[0], Outcome: keybrake.OutcomeUnknown, Status: 502, Code: keybrake.CodeUpstreamUnreachable})
	mustDeny(t, s, charge(k, 1*usd), keybrake.CodeCapExhausted)
	settle(t, s, keybrake.Settlement{CallID: ids[1], Outcome: keybrake.OutcomeForwarded, Status: 400})
	mustAllow(t, s, charge(k, 1*usd))
	wantUsage(t, checkLedger(t, s, k.ID), 1*usd, 2*usd)
}

// testFreeCalls: an unpriced call (a GET) is allowed even with the cap used
// up, and reserves nothing.
func testFreeCalls(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, daily(1*usd))
	mustAllow(t, s, charge(k, 1*usd))
	a := charge(k, 0)
	a.Method, a.Path, a.Rule = "GET", "/v1/payment_intents/pi_1", "GET /v1/payment_intents/*"
	d := mustAllow(t, s, a)
	settle(t, s, ok2xx(d.CallID, 0))
	u := checkLedger(t, s, k.ID)
	wantUsage(t, u, 0, 1*usd)
	if u.Calls != 2 {
		t.Errorf("calls %d, want 2", u.Calls)
	}
}

// testCapExact is the cap's promise under concurrency: 1,000 simultaneous
// $1 reserve-and-settle calls on a $100 cap, exactly 100 allowed.
func testCapExact(t *testing.T, s store.Store) {
	const n, capUSD = 1000, 100
	k, _ := newKey(t, s, daily(capUSD*usd))
	var allowed, denied atomic.Int64
	err := parallel(n, func(int) error {
		d, err := s.Decide(ctx(t), charge(k, 1*usd))
		if err != nil {
			return err
		}
		if !d.Allowed {
			if d.Err == nil || d.Err.Code != keybrake.CodeCapExhausted {
				return fmt.Errorf("denied with %v, want cap_exhausted", d.Err)
			}
			denied.Add(1)
			return nil
		}
		allowed.Add(1)
		_, err = s.Settle(ctx(t), ok2xx(d.CallID, 1*usd))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if allowed.Load() != capUSD || denied.Load() != n-capUSD {
		t.Fatalf("%d allowed, %d denied; want exactly %d allowed and %d denied", allowed.Load(), denied.Load(), capUSD, n-capUSD)
	}
	u := checkLedger(t, s, k.ID)
	wantUsage(t, u, capUSD*usd, 0)
	if u.Calls != capUSD || u.DeniedCalls != n-capUSD {
		t.Errorf("calls %d denied %d", u.Calls, u.DeniedCalls)
	}
}

func testSettle(t *testing.T, s store.Store) {
	k, _ := newKey(t, s)
	d1 := mustAllow(t, s, charge(k, 2*usd))
	u := settle(t, s, ok2xx(d1.CallID, 1_500_000))
	wantUsage(t, u, 1_500_000, 0)
	if u.SpentToday != 1_500_000 || u.ReservedToday != 0 || u.Calls != 1 {
		t.Errorf("Settle returned usage %+v", u)
	}
	c := callByID(t, s, k.ID, d1.CallID)
	if c.Outcome != keybrake.OutcomeForwarded || c.Status != 200 || c.Actual != 1_500_000 || c.Estimated != 2*usd ||
		c.ObjectID != fmt.Sprintf("pi_%d", d1.CallID) || c.VendorRequestID != fmt.Sprintf("req_%d", d1.CallID) ||
		c.Latency.Milliseconds() != 42 {
		t.Errorf("settled 2xx row: %+v", c)
	}

	d2 := mustAllow(t, s, charge(k, 2*usd))
	wantUsage(t, settle(t, s, keybrake.Settlement{CallID: d2.CallID, Outcome: keybrake.OutcomeForwarded, Status: 402,
		Actual: 2 * usd, Code: "card_declined"}), 1_500_000, 0) // Actual of a non-2xx is ignored
	if c := callByID(t, s, k.ID, d2.CallID); c.Actual != 0 || c.Status != 402 || c.Outcome != keybrake.OutcomeForwarded {
		t.Errorf("settled 4xx row: %+v", c)
	}

	d3 := mustAllow(t, s, charge(k, 2*usd))
	wantUsage(t, settle(t, s, keybrake.Settlement{CallID: d3.CallID, Outcome: keybrake.OutcomeUnknown, Status: 502,
		Code: keybrake.CodeUpstreamUnreachable}), 3_500_000, 0)
	if c := callByID(t, s, k.ID, d3.CallID); c.Actual != 2*usd || c.Outcome != keybrake.OutcomeUnknown || c.Code != keybrake.CodeUpstreamUnreachable {
		t.Errorf("settled unknown row: %+v", c)
	}

	// The vendor's actual cost counts even above the estimate.
	d4 := mustAllow(t, s, charge(k, 2*usd))
	wantUsage(t, settle(t, s, ok2xx(d4.CallID, 2_500_000)), 6*usd, 0)

	if _, err := s.Settle(ctx(t), ok2xx(1<<40, 1)); !errors.Is(err, keybrake.ErrNotFound) {
		t.Errorf("Settle(unknown call) = %v, want ErrNotFound", err)
	}
	checkLedger(t, s, k.ID)
}

func testSettleTwice(t *testing.T, s store.Store) {
	k, _ := newKey(t, s)
	d := mustAllow(t, s, charge(k, 2*usd))
	first := settle(t, s, ok2xx(d.CallID, 1*usd))
	for _, st := range []keybrake.Settlement{
		ok2xx(d.CallID, 2*usd),
		{CallID: d.CallID, Outcome: keybrake.OutcomeUnknown, Status: 502},
		{CallID: d.CallID, Outcome: keybrake.OutcomeForwarded, Status: 400},
	} {
		if again := settle(t, s, st); again.Spent != first.Spent || again.Reserved != first.Reserved {
			t.Errorf("settling again changed usage: %+v then %+v", first, again)
		}
	}
	if c := callByID(t, s, k.ID, d.CallID); c.Actual != 1*usd || c.Status != 200 {
		t.Errorf("row after repeated settlements: %+v", c)
	}
	wantUsage(t, checkLedger(t, s, k.ID), 1*usd, 0)
}

// testSettleConcurrently: the same settlement delivered many times at once
// (a retrying caller, two replicas) counts once.
func testSettleConcurrently(t *testing.T, s store.Store) {
	k, _ := newKey(t, s)
	for round := 0; round < 5; round++ {
		d := mustAllow(t, s, charge(k, 2*usd))
		if err := parallel(16, func(i int) error {
			st := ok2xx(d.CallID, 1*usd)
			if i%2 == 1 {
				st = keybrake.Settlement{CallID: d.CallID, Outcome: keybrake.OutcomeUnknown, Status: 502}
			}
			_, err := s.Settle(ctx(t), st)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	u := checkLedger(t, s, k.ID)
	if u.Reserved != 0 || u.Spent < 5*usd || u.Spent > 10*usd {
		t.Errorf("after 5 calls settled 16 times each: %+v, want $5-$10 spent and nothing reserved", u)
	}
}

func testRecoverPending(t *testing.T, s store.Store) {
	k, _ := newKey(t, s)
	on := func(inst string, est keybrake.Micros) int64 {
		a := charge(k, est)
		a.Instance = inst
		return mustAllow(t, s, a).CallID
	}
	a1, a2, _ := on("inst_a", 1*usd), on("inst_a", 1*usd), on("inst_a", 1*usd)
	on("inst_b", 2*usd)
	on("inst_b", 2*usd)
	idemCall := mustAllow(t, s, idem(charge(k, 1*usd), "ik-recover", "fp", false))

	recover := func(inst string, older time.Duration) int {
		t.Helper()
		n, err := s.RecoverPending(ctx(t), inst, older)
		if err != nil {
			t.Fatalf("RecoverPending(%q): %v", inst, err)
		}
		return n
	}
	if n := recover("", time.Hour); n != 0 {
		t.Errorf("RecoverPending(older than 1h) = %d, want 0", n)
	}
	if n := recover("inst_a", 0); n != 3 {
		t.Errorf("RecoverPending(inst_a) = %d, want 3", n)
	}
	wantUsage(t, checkLedger(t, s, k.ID), 3*usd, 5*usd)
	if n := recover("inst_a", 0); n != 0 {
		t.Errorf("RecoverPending(inst_a) again = %d, want 0", n)
	}
	if c := callByID(t, s, k.ID, a1); c.Outcome != keybrake.OutcomeUnknown || c.Code != keybrake.CodeOutcomeUnknown || c.Actual != 1*usd {
		t.Errorf("recovered row: %+v", c)
	}
	if n := recover("", 0); n != 3 {
		t.Errorf("RecoverPending(all) = %d, want 3", n)
	}
	wantUsage(t, checkLedger(t, s, k.ID), 8*usd, 0)

	// A settlement that arrives after the sweep corrects the spend.
	wantUsage(t, settle(t, s, ok2xx(a1, 500_000)), 7_500_000, 0)
	wantUsage(t, settle(t, s, keybrake.Settlement{CallID: a2, Outcome: keybrake.OutcomeForwarded, Status: 404}), 6_500_000, 0)
	if c := callByID(t, s, k.ID, a1); c.Outcome != keybrake.OutcomeForwarded || c.Actual != 500_000 {
		t.Errorf("late-settled row: %+v", c)
	}
	// The recovered idempotent call's key now reads as outcome unknown.
	mustDeny(t, s, idem(charge(k, 1*usd), "ik-recover", "fp", false), keybrake.CodeOutcomeUnknown)
	_ = idemCall
	checkLedger(t, s, k.ID)
}

// testRecoverRacesSettle: a recovery sweep (another replica's) and the
// settlements of the same calls run at once; each call ends counted once,
// at its settled value.
func testRecoverRacesSettle(t *testing.T, s store.Store) {
	const n = 40
	k, _ := newKey(t, s, daily(1000*usd))
	ids := make([]int64, n)
	var want keybrake.Micros
	for i := range ids {
		ids[i] = mustAllow(t, s, charge(k, 2*usd)).CallID
		if i%2 == 0 {
			want += 1 * usd
		}
	}
	err := parallel(n+2, func(i int) error {
		if i >= n {
			_, err := s.RecoverPending(ctx(t), "", 0)
			return err
		}
		st := ok2xx(ids[i], 1*usd)
		if i%2 == 1 {
			st = keybrake.Settlement{CallID: ids[i], Outcome: keybrake.OutcomeForwarded, Status: 400}
		}
		_, err := s.Settle(ctx(t), st)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	wantUsage(t, checkLedger(t, s, k.ID), want, 0)
}
