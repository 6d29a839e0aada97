package peer

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
)

// An owner's error reaches the asking replica as the proxy must see it:
// the client-facing code and message of an *keybrake.Error, and the
// sentinels it tests with errors.Is (store_unavailable, not found, the
// deadline), through gob as the connection carries it.
func TestErrorsCrossTheWireAsTheProxySeesThem(t *testing.T) {
	cases := []error{
		fmt.Errorf("decide: %w: %w", keybrake.ErrStoreUnavailable, context.DeadlineExceeded),
		fmt.Errorf("settle call 7: %w", keybrake.ErrNotFound),
		&keybrake.Error{Code: keybrake.CodeStoreUnavailable, Message: "the ledger is unavailable", Err: keybrake.ErrStoreUnavailable},
		keybrake.FieldError("amount", "must be an integer"),
		errors.New("plain"),
	}
	for _, want := range cases {
		var buf bytes.Buffer
		if err := gob.NewEncoder(&buf).Encode(&DecideReply{Err: toWire(want)}); err != nil {
			t.Fatalf("%v: encode: %v", want, err)
		}
		var r DecideReply
		if err := gob.NewDecoder(&buf).Decode(&r); err != nil {
			t.Fatalf("%v: decode: %v", want, err)
		}
		got := r.Err.err()
		for _, s := range []error{keybrake.ErrStoreUnavailable, keybrake.ErrNotFound, context.DeadlineExceeded} {
			if errors.Is(got, s) != errors.Is(want, s) {
				t.Errorf("%v: errors.Is(%v) = %v across the wire, %v before", want, s, errors.Is(got, s), errors.Is(want, s))
			}
		}
		if keybrake.ErrorCode(got) != keybrake.ErrorCode(want) || keybrake.ErrorMessage(got) != keybrake.ErrorMessage(want) && keybrake.ErrorCode(want) != keybrake.CodeInternal {
			t.Errorf("%v: code %q message %q across the wire", want, keybrake.ErrorCode(got), keybrake.ErrorMessage(got))
		}
		var ke *keybrake.Error
		if errors.As(want, &ke) && ke.Field != "" {
			var ge *keybrake.Error
			if !errors.As(got, &ge) || ge.Field != ke.Field {
				t.Errorf("%v: field lost across the wire", want)
			}
		}
	}
	if (*wireError)(nil).err() != nil {
		t.Error("no error became one")
	}
}

// The ledger's types cross the wire whole, a denial's cause (an interface,
// which gob refuses) left behind.
func TestLedgerTypesCrossTheWire(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Microsecond)
	a := keybrake.Attempt{KeyID: "vk_1", Vendor: "stripe", Method: "POST", Path: "/v1/payment_intents", Estimate: 1_000_000,
		Denial:         bare(&keybrake.Error{Code: keybrake.CodeEndpointNotAllowed, Message: "no", Err: errors.New("cause")}),
		IdempotencyTTL: time.Hour, Instance: "r1", IdempotencyKey: "k", Fingerprint: "f"}
	d := keybrake.Decision{CallID: 9, Allowed: true, Reserved: 5, Err: bare(&keybrake.Error{Code: keybrake.CodeCapExhausted, Err: errors.New("x")}),
		Key:   &keybrake.Key{ID: "vk_1", ExpiresAt: now, RevokedAt: &now, Scope: keybrake.Scope{"stripe_customers": {"cus_1"}}},
		Usage: keybrake.Usage{Spent: 3, ReservedToday: 2}, Replay: &keybrake.StoredResponse{Status: 200, Body: []byte("{}")}}
	var buf bytes.Buffer
	enc := gob.NewEncoder(&buf)
	if err := enc.Encode(&DecideArgs{Attempt: a, Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := enc.Encode(&DecideReply{Decision: d}); err != nil {
		t.Fatal(err)
	}
	dec := gob.NewDecoder(&buf)
	var ga DecideArgs
	var gd DecideReply
	if err := dec.Decode(&ga); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(&gd); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%+v", ga.Attempt) != fmt.Sprintf("%+v", a) {
		t.Errorf("attempt changed:\n%+v\n%+v", ga.Attempt, a)
	}
	if gd.Decision.Usage != d.Usage || gd.Decision.CallID != 9 || !gd.Decision.Key.RevokedAt.Equal(now) ||
		gd.Decision.Key.Scope["stripe_customers"][0] != "cus_1" || string(gd.Decision.Replay.Body) != "{}" || gd.Decision.Err.Code != keybrake.CodeCapExhausted {
		t.Errorf("decision changed: %+v", gd.Decision)
	}
}
