package storetest

import (
	"sync"
	"testing"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/store"
)

// exposure is an attempt that sets what object can move to estimate: it
// reserves only what the key has not counted on the object yet.
func exposure(k *keybrake.Key, object string, estimate keybrake.Micros) keybrake.Attempt {
	a := charge(k, estimate)
	a.Path, a.Operation, a.ObjectID, a.Exposure = pathPI+"/"+object, "payment_intents.update", object, true
	return a
}

// An operation on an existing object reserves only what it adds to what the
// key counted on that object: pending calls at their reservation, settled
// ones at their cost, released ones not at all, unknown ones at their
// estimate. The object id is recorded from the decision on.
func testExposure(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, daily(10*usd))
	// Created through the key for $1: counted once settled with its id.
	d := mustAllow(t, s, charge(k, usd))
	settle(t, s, keybrake.Settlement{CallID: d.CallID, Outcome: keybrake.OutcomeForwarded, Status: 200, Actual: usd, ObjectID: "pi_x"})

	up := mustAllow(t, s, exposure(k, "pi_x", 3*usd)) // raises it to $3: +$2, still pending
	if up.Reserved != 2*usd || up.Usage.ReservedToday != 2*usd {
		t.Fatalf("raise to $3 reserved $%s, want $2", up.Reserved)
	}
	confirm := mustAllow(t, s, exposure(k, "pi_x", 3*usd)) // confirm at $3: the pending raise counts
	if confirm.Reserved != 0 {
		t.Fatalf("confirm reserved $%s, want 0", confirm.Reserved)
	}
	// The raise is refused by the vendor: released, and no longer counted.
	settle(t, s, keybrake.Settlement{CallID: up.CallID, Outcome: keybrake.OutcomeForwarded, Status: 400})
	settle(t, s, keybrake.Settlement{CallID: confirm.CallID, Outcome: keybrake.OutcomeForwarded, Status: 200, Actual: 0})
	again := mustAllow(t, s, exposure(k, "pi_x", 3*usd))
	if again.Reserved != 2*usd {
		t.Fatalf("after the release, reserved $%s, want $2", again.Reserved)
	}
	// An unknown outcome stays counted.
	settle(t, s, keybrake.Settlement{CallID: again.CallID, Outcome: keybrake.OutcomeUnknown, Status: 502})
	if d := mustAllow(t, s, exposure(k, "pi_x", 3*usd)); d.Reserved != 0 {
		t.Fatalf("after an unknown raise, reserved $%s, want 0", d.Reserved)
	}
	// Another object, and the same object on another key, start from zero.
	if d := mustAllow(t, s, exposure(k, "pi_y", 2*usd)); d.Reserved != 2*usd {
		t.Fatalf("other object reserved $%s", d.Reserved)
	}
	k2, _ := newKey(t, s, daily(10*usd))
	if d := mustAllow(t, s, exposure(k2, "pi_x", 3*usd)); d.Reserved != 3*usd {
		t.Fatalf("other key reserved $%s", d.Reserved)
	}
	// What still does not fit is refused, for what it adds.
	d = mustDeny(t, s, exposure(k, "pi_x", 20*usd), keybrake.CodeCapExhausted)
	if d.Requested != 17*usd {
		t.Fatalf("requested $%s, want the $17 it adds", d.Requested)
	}
	// The audit rows carry the object from the decision, even when the
	// answer named none.
	for _, c := range allCalls(t, s, keybrake.CallFilter{KeyID: k.ID}) {
		if c.Operation == "payment_intents.update" && c.ObjectID == "" {
			t.Errorf("call %d lost its object id", c.ID)
		}
	}
	checkLedger(t, s, k.ID)
	checkLedger(t, s, k2.ID)
}

// Concurrent raises of one object: whatever their order, the key counts the
// highest, and never more than the cap.
func testExposureConcurrent(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, daily(1000*usd))
	var wg sync.WaitGroup
	for i := 1; i <= 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Decide(ctx(t), exposure(k, "pi_c", keybrake.Micros(i)*usd)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if u := checkLedger(t, s, k.ID); u.Reserved != 40*usd {
		t.Fatalf("reserved $%s, want $40: the highest raise", u.Reserved)
	}
}

// A flexible reservation shrinks in whole steps to what the caps leave, down
// to its floor; below the floor it is refused.
func testFlexible(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, daily(10*usd), perCall(9*usd))
	flex := func() keybrake.Attempt {
		a := charge(k, 2*usd+6*3*usd) // $2 once + up to six steps of $3
		a.Step, a.Floor = 3*usd, 5*usd
		return a
	}
	d := mustAllow(t, s, flex())
	if d.Reserved != 8*usd {
		t.Fatalf("reserved $%s, want $8: $2 + two steps fit the $9 per-call cap", d.Reserved)
	}
	mustDeny(t, s, flex(), keybrake.CodeCapExhausted) // $2 left: not even the floor
	settle(t, s, keybrake.Settlement{CallID: d.CallID, Outcome: keybrake.OutcomeForwarded, Status: 200, Actual: 5 * usd})
	d = mustAllow(t, s, flex())
	if d.Reserved != 5*usd {
		t.Fatalf("reserved $%s, want the $5 floor", d.Reserved)
	}
	exact := charge(k, 20*usd)
	mustDeny(t, s, exact, keybrake.CodeCapExhausted) // an exact reservation does not shrink
	checkLedger(t, s, k.ID)
}
