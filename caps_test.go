package keybrake

import (
	"math"
	"testing"
)

func TestCheckCaps(t *testing.T) {
	k := &Key{DailyCap: 10, TotalCap: 15, MaxPerCall: 6}
	for _, tc := range []struct {
		name              string
		u                 Usage
		want, step, floor Micros
		amount            Micros
		cap               string
	}{
		{"fits", Usage{}, 5, 0, 0, 5, ""},
		{"zero never checked", Usage{SpentToday: 10, ReservedToday: 10}, 0, 0, 0, 0, ""},
		{"per call first", Usage{SpentToday: 10}, 7, 0, 0, 7, "per_call"},
		{"daily exact", Usage{SpentToday: 4, ReservedToday: 1}, 5, 0, 0, 5, ""},
		{"daily one over", Usage{SpentToday: 4, ReservedToday: 1}, 6, 0, 0, 6, "daily"},
		{"total", Usage{Spent: 12, Reserved: 0}, 4, 0, 0, 4, "total"},
		{"overflow saturates", Usage{SpentToday: 1}, math.MaxInt64, 0, 0, math.MaxInt64, "per_call"},
		{"flexible shrinks in steps", Usage{SpentToday: 7}, 6, 2, 1, 2, ""},
		{"flexible floor", Usage{SpentToday: 10}, 6, 2, 2, 2, "daily"},
	} {
		c := k.CheckCaps(tc.u, tc.want, tc.step, tc.floor)
		if c.Amount != tc.amount || c.Cap != tc.cap {
			t.Errorf("%s: got %+v, want amount %d cap %q", tc.name, c, tc.amount, tc.cap)
		}
		if c.OK() != (c.Err() == nil) {
			t.Errorf("%s: OK and Err disagree", tc.name)
		}
	}
}

func TestSettlementCharge(t *testing.T) {
	for _, tc := range []struct {
		st   Settlement
		want Micros
	}{
		{Settlement{Outcome: OutcomeForwarded, Status: 200, Actual: 3}, 3},
		{Settlement{Outcome: OutcomeForwarded, Status: 402, Actual: 3}, 0},
		{Settlement{Outcome: OutcomeUnknown, Status: 502, Actual: 3}, 9},
		{Settlement{Outcome: OutcomeUnknown, Status: 200, Actual: 3}, 9},
	} {
		if got := tc.st.Charge(9); got != tc.want {
			t.Errorf("%+v: charge %d, want %d", tc.st, got, tc.want)
		}
	}
}
