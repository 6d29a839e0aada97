package kbcall

import (
	"context"
	"errors"
	"reflect"
	"testing"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		status int
		body   string
		want   string // Go type name = Lambda errorType
		code   string
	}{
		{429, `{"code":"cap_exhausted","message":"daily cap","key_id":"vk_1","error":{"type":"invalid_request_error","code":"cap_exhausted"}}`, "CapExhausted", ""},
		{409, `{"code":"idempotency_in_progress","message":"in flight"}`, "KeybrakeTransient", "idempotency_in_progress"},
		// A rate limit is not the cap: retry later, same Idempotency-Key.
		{429, `{"code":"rate_limited","message":"3 calls a minute","retry_after":20,"error":{"type":"invalid_request_error","code":"rate_limited"}}`, "KeybrakeTransient", "rate_limited"},
		{403, `{"code":"scope_violation","message":"customer","field":"stripe_customers"}`, "KeybrakeRefused", "scope_violation"},
		{502, `{"code":"upstream_unreachable","message":"stripe did not answer"}`, "KeybrakeTransient", "upstream_unreachable"},
		{503, `{"code":"store_unavailable","message":"ledger"}`, "KeybrakeTransient", "store_unavailable"},
		{401, `{"code":"key_revoked","message":"revoked"}`, "KeybrakeRefused", "key_revoked"},
		{401, `{"code":"key_expired","message":"expired"}`, "KeybrakeRefused", "key_expired"},
		{409, `{"code":"idempotency_key_reused","message":"other body"}`, "KeybrakeRefused", "idempotency_key_reused"},
		{409, `{"code":"outcome_unknown","message":"not deduplicated"}`, "KeybrakeRefused", "outcome_unknown"},
		{403, `{"code":"endpoint_not_allowed","message":"no"}`, "KeybrakeRefused", "endpoint_not_allowed"},
		// The vendor's own answers, passed through.
		{500, `{"error":{"type":"api_error","message":"boom"}}`, "KeybrakeTransient", ""},
		{429, `{"error":{"type":"rate_limit_error","message":"slow down"}}`, "KeybrakeTransient", ""},
		{409, `{"error":{"type":"idempotency_error","code":"idempotency_key_in_use"}}`, "KeybrakeTransient", ""},
		{402, `{"error":{"type":"card_error","code":"card_declined","message":"declined"}}`, "VendorRejected", ""},
		{502, `<html>bad gateway</html>`, "KeybrakeTransient", ""},
	}
	for _, c := range cases {
		err := Classify(c.status, []byte(c.body))
		if got := reflect.TypeOf(err).Elem().Name(); got != c.want {
			t.Errorf("%d %s: %s, want %s", c.status, c.body, got, c.want)
		}
		var tr *KeybrakeTransient
		var rf *KeybrakeRefused
		switch {
		case errors.As(err, &tr) && tr.Code != c.code:
			t.Errorf("%d %s: code %q, want %q", c.status, c.body, tr.Code, c.code)
		case errors.As(err, &rf) && rf.Code != c.code:
			t.Errorf("%d %s: code %q, want %q", c.status, c.body, rf.Code, c.code)
		}
	}
}

func TestInvalidInputNeverSent(t *testing.T) {
	base := Request{BaseURL: "http://127.0.0.1:1", VaultKey: "kbvk", IdempotencyKey: "run-1", Customer: Customer{ID: "cus_1", AmountCents: 100}}
	long := base
	long.IdempotencyKey = string(make([]byte, MaxIdempotencyKey+1))
	noKey := base
	noKey.IdempotencyKey = ""
	zero := base
	zero.Customer.AmountCents = 0
	for _, r := range []Request{long, noKey, zero} {
		_, err := DefaultClient.CreatePaymentIntent(context.Background(), r)
		var ii *InvalidInput
		if !errors.As(err, &ii) {
			t.Errorf("%+v: %v, want InvalidInput", r.Customer, err)
		}
	}
}
