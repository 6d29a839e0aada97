// Package sandbox is a local, in-memory stand-in for Stripe's API: enough of
// payment intents, refunds and Stripe's idempotency to run `keybrake demo`
// with no network and no secrets, and to count exactly what reached "the
// vendor" in tests. It can inject faults (answer 500 after applying a
// charge, drop the connection, stall) where a test needs them. It is not
// Stripe: stripe-mock is used where Stripe's own schema matters.
package sandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fault is what the sandbox does to one request.
type Fault int

const (
	// NoFault answers normally.
	NoFault Fault = iota
	// FailAfterApply applies the call, then answers 500 as if Stripe broke
	// before replying: the worst case for retries.
	FailAfterApply
	// FailBeforeApply answers 500 without applying anything.
	FailBeforeApply
	// DropAfterApply applies the call, then cuts the connection.
	DropAfterApply
	// Stall waits for the request's context to end (the caller's timeout)
	// without applying anything.
	Stall
)

// Received is what the sandbox saw of one request.
type Received struct {
	Method string
	Path   string
	Query  string
	Header http.Header
	Body   string
}

// PaymentIntent is the part of Stripe's object the sandbox keeps.
type PaymentIntent struct {
	ID               string            `json:"id"`
	Object           string            `json:"object"`
	Amount           int64             `json:"amount"`
	AmountCapturable int64             `json:"amount_capturable"`
	AmountReceived   int64             `json:"amount_received"`
	CaptureMethod    string            `json:"capture_method"`
	Currency         string            `json:"currency"`
	Customer         string            `json:"customer,omitempty"`
	Status           string            `json:"status"`
	Metadata         map[string]string `json:"metadata"`
	Created          int64             `json:"created"`
	Livemode         bool              `json:"livemode"`

	refunded int64
}

// Stripe is the sandbox server's handler.
type Stripe struct {
	// Secret is the only API key accepted.
	Secret string
	// Fault, when set, chooses a fault for each request (n counts from 1).
	Fault func(r *http.Request, n int) Fault

	recorder
	idem    idemCache
	mu      sync.Mutex
	intents []*PaymentIntent
	seq     int
	money   // charges, refunds, transfers… and what moved (stripe_money.go)
}

// NewStripe returns a sandbox accepting secret.
func NewStripe(secret string) *Stripe {
	return &Stripe{Secret: secret}
}

// Intents returns the payment intents created (each one a charge).
func (s *Stripe) Intents() []PaymentIntent {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PaymentIntent, len(s.intents))
	for i, pi := range s.intents {
		out[i] = *pi
	}
	return out
}

// ChargedMinor sums created payment intents' amounts per currency.
func (s *Stripe) ChargedMinor() map[string]int64 {
	out := map[string]int64{}
	for _, pi := range s.Intents() {
		out[pi.Currency] += pi.Amount
	}
	return out
}

func (s *Stripe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, body := s.record(r)
	if r.Header.Get("Authorization") != "Bearer "+s.Secret {
		writeStripeError(w, http.StatusUnauthorized, "invalid_request_error", "", "Invalid API Key provided")
		return
	}
	fault := NoFault
	if s.Fault != nil {
		fault = s.Fault(r, n)
	}
	serveWithFault(w, r, fault, func() answer {
		h := http.Header{"Content-Type": {"application/json"}, "Request-Id": {fmt.Sprintf("req_sandbox_%d", n)}}
		status, b, how := s.idem.do(r, body, func() (int, []byte) { return s.apply(r, body) })
		switch how {
		case idemReplayed:
			h.Set("Idempotent-Replayed", "true")
		case idemInFlight:
			status, b = http.StatusConflict, stripeError("idempotency_error", "idempotency_key_in_use", "There is currently another in-progress request using this Idempotent Key")
		case idemMismatch:
			status, b = http.StatusBadRequest, stripeError("idempotency_error", "", "Keys for idempotent requests can only be used with the same parameters they were first used with.")
		}
		return answer{status, h, b}
	}, func(w http.ResponseWriter, msg string) {
		writeStripeError(w, http.StatusInternalServerError, "api_error", "", msg)
	})
}

func (s *Stripe) apply(r *http.Request, body []byte) (int, []byte) {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return http.StatusBadRequest, stripeError("invalid_request_error", "parameter_invalid", "body is not form-encoded")
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/payment_intents":
		amount, err := strconv.ParseInt(form.Get("amount"), 10, 64)
		if err != nil || amount < 1 {
			return http.StatusBadRequest, stripeError("invalid_request_error", "parameter_invalid_integer", "Invalid integer: amount")
		}
		cur := strings.ToLower(form.Get("currency"))
		if len(cur) != 3 {
			return http.StatusBadRequest, stripeError("invalid_request_error", "parameter_missing", "Missing required param: currency.")
		}
		meta := map[string]string{}
		for k, v := range form {
			if strings.HasPrefix(k, "metadata[") && strings.HasSuffix(k, "]") {
				meta[k[9:len(k)-1]] = v[0]
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.seq++
		pi := &PaymentIntent{ID: fmt.Sprintf("pi_sandbox_%06d", s.seq), Object: "payment_intent", Amount: amount,
			Currency: cur, Customer: form.Get("customer"), Status: "requires_payment_method", Metadata: meta, Created: time.Now().Unix(),
			CaptureMethod: "automatic"}
		if form.Get("capture_method") == "manual" {
			pi.CaptureMethod = "manual"
		}
		s.intents = append(s.intents, pi)
		if form.Get("confirm") == "true" {
			s.confirm(pi)
		}
		b, _ := json.Marshal(pi)
		return http.StatusOK, b
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/payment_intents/") && strings.Count(r.URL.Path, "/") == 3:
		id := strings.TrimPrefix(r.URL.Path, "/v1/payment_intents/")
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, pi := range s.intents {
			if pi.ID == id {
				b, _ := json.Marshal(pi)
				return http.StatusOK, b
			}
		}
		return http.StatusNotFound, stripeError("invalid_request_error", "resource_missing", "No such payment_intent: '"+id+"'")
	case r.Method == http.MethodGet && r.URL.Path == "/v1/balance":
		return http.StatusOK, []byte(`{"object":"balance","available":[{"amount":0,"currency":"usd"}],"livemode":false}`)
	}
	if status, b, ok := s.applyMoney(r, form); ok {
		return status, b
	}
	return http.StatusNotFound, stripeError("invalid_request_error", "resource_missing", "Unrecognized request URL ("+r.Method+": "+r.URL.Path+").")
}

func stripeError(typ, code, msg string) []byte {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"type": typ, "code": code, "message": msg}})
	return b
}

func writeStripeError(w http.ResponseWriter, status int, typ, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(stripeError(typ, code, msg)) //nolint:errcheck
}
