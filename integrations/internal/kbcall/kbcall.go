// Package kbcall makes the one proxied vendor call the orchestrator
// integrations share: create a Stripe PaymentIntent through Keybrake with a
// vault key, a stable Idempotency-Key and a Keybrake-Item, and classify the
// answer into the error types orchestrators branch on.
//
// The error types are named for the orchestrators: aws-lambda-go reports a
// returned error's Go type name as the Lambda errorType, so a *CapExhausted
// returned unwrapped from a Lambda handler is the errorType "CapExhausted"
// a Step Functions Catch matches; Temporal activities use the same names as
// ApplicationError types. Never wrap them with fmt.Errorf before returning
// them from a Lambda handler: the errorType would become "wrapError".
//
//	CapExhausted       the key's cap is spent: stop, do not retry
//	KeybrakeTransient  nothing is known to be lost; retry with the SAME
//	                   Idempotency-Key (Keybrake replays or re-forwards
//	                   without charging twice)
//	KeybrakeRefused    Keybrake refused the call (revoked, expired, unknown
//	                   key, endpoint not allowed, key reuse...): retrying
//	                   cannot help
//	VendorRejected     the vendor itself refused the call (a 4xx such as
//	                   card_declined): retrying cannot help
package kbcall

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxIdempotencyKey is the longest Idempotency-Key Keybrake and Stripe accept.
const MaxIdempotencyKey = 255

// Customer is one charge to make: the seed's customer object.
type Customer struct {
	ID          string `json:"id"`
	AmountCents int64  `json:"amount_cents"`
	// Currency defaults to "usd".
	Currency string `json:"currency,omitempty"`
}

// Charge is a PaymentIntent created (or replayed) through Keybrake. It is
// deliberately small: a Step Functions Map collects one per item, and a
// state's data is limited to 256 KiB.
type Charge struct {
	PaymentIntent string `json:"payment_intent"`
	Customer      string `json:"customer"`
	Amount        int64  `json:"amount"`
	Currency      string `json:"currency"`
	Status        string `json:"status"`
	// Replayed is true when Keybrake answered from the stored response of
	// an earlier attempt with the same Idempotency-Key.
	Replayed bool `json:"replayed"`
	// KeybrakeCallID is the audit row of this call.
	KeybrakeCallID string `json:"keybrake_call_id,omitempty"`
}

// Request is one proxied PaymentIntent creation.
type Request struct {
	// BaseURL is Keybrake's proxy URL (KEYBRAKE_URL), without a path.
	BaseURL string
	// VaultKey is the Bearer credential issued for the run.
	VaultKey string
	// IdempotencyKey must be stable across retries of the same logical
	// charge and unique per charge: "<execution id>-<item index>".
	IdempotencyKey string
	// Item is sent as Keybrake-Item and recorded in the audit row.
	Item     string
	Customer Customer
}

// CapExhausted is Keybrake's 429 cap_exhausted: the run's budget is spent.
type CapExhausted struct {
	KeyID   string
	Message string
}

func (e *CapExhausted) Error() string {
	return fmt.Sprintf("cap_exhausted: %s (key %s)", e.Message, e.KeyID)
}

// KeybrakeTransient is a failure after which a retry with the same
// Idempotency-Key is safe and may succeed: network errors, vendor 5xx or
// 429/409, Keybrake's upstream_unreachable, store_unavailable,
// idempotency_in_progress and rate_limited.
type KeybrakeTransient struct {
	Status  int    // HTTP status, 0 for a network error
	Code    string // Keybrake's code, when Keybrake answered for itself
	Message string
}

func (e *KeybrakeTransient) Error() string {
	return describe("transient", e.Status, e.Code, e.Message)
}

// KeybrakeRefused is a refusal by Keybrake that a retry cannot change.
type KeybrakeRefused struct {
	Status  int
	Code    string
	KeyID   string
	Message string
}

func (e *KeybrakeRefused) Error() string {
	return describe("refused", e.Status, e.Code, e.Message)
}

// VendorRejected is a definite 4xx from the vendor (Stripe's own error).
type VendorRejected struct {
	Status  int
	Type    string
	Code    string
	Message string
}

func (e *VendorRejected) Error() string {
	code := e.Code
	if code == "" {
		code = e.Type
	}
	return describe("vendor rejected", e.Status, code, e.Message)
}

func describe(kind string, status int, code, msg string) string {
	var b strings.Builder
	b.WriteString(kind)
	if status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", status)
	}
	if code != "" {
		fmt.Fprintf(&b, " %s", code)
	}
	if msg != "" {
		fmt.Fprintf(&b, ": %s", msg)
	}
	return b.String()
}

// transientCodes are Keybrake codes after which the same request may be
// retried with the same Idempotency-Key. rate_limited is one: the key's
// max_calls_per_minute is spent for the moment, not its budget (that is
// cap_exhausted), and nothing was sent.
var transientCodes = map[string]bool{
	"rate_limited":            true,
	"idempotency_in_progress": true,
	"upstream_unreachable":    true,
	"store_unavailable":       true,
	"internal_error":          true,
}

// Client sends proxied calls.
type Client struct {
	// HTTP is the client used; its Timeout bounds a call when the context
	// has no deadline.
	HTTP *http.Client
}

// DefaultClient waits up to 90 seconds for one call (Keybrake's own vendor
// timeout is 60 seconds by default).
var DefaultClient = &Client{HTTP: &http.Client{Timeout: 90 * time.Second}}

// CreatePaymentIntent posts {amount, currency, customer} to
// {BaseURL}/stripe/v1/payment_intents. The error, when not nil, is one of
// *CapExhausted, *KeybrakeTransient, *KeybrakeRefused, *VendorRejected,
// or an *InvalidInput for a request that was never sent.
func (c *Client) CreatePaymentIntent(ctx context.Context, r Request) (*Charge, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	cur := r.Customer.Currency
	if cur == "" {
		cur = "usd"
	}
	body, _ := json.Marshal(map[string]any{"amount": r.Customer.AmountCents, "currency": cur, "customer": r.Customer.ID})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(r.BaseURL, "/")+"/stripe/v1/payment_intents", bytes.NewReader(body))
	if err != nil {
		return nil, &InvalidInput{Field: "KEYBRAKE_URL", Message: err.Error()}
	}
	req.Header.Set("Authorization", "Bearer "+r.VaultKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", r.IdempotencyKey)
	if r.Item != "" {
		req.Header.Set("Keybrake-Item", r.Item)
	}
	hc := c.HTTP
	if hc == nil {
		hc = DefaultClient.HTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		// The request may or may not have reached Keybrake: a retry with
		// the same Idempotency-Key settles it either way.
		return nil, &KeybrakeTransient{Message: "calling Keybrake: " + redact(err.Error(), r.VaultKey)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, &KeybrakeTransient{Status: resp.StatusCode, Message: "reading Keybrake's answer: " + err.Error()}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		var pi struct {
			ID       string `json:"id"`
			Amount   int64  `json:"amount"`
			Currency string `json:"currency"`
			Customer string `json:"customer"`
			Status   string `json:"status"`
		}
		if err := json.Unmarshal(data, &pi); err != nil || pi.ID == "" {
			// The charge happened but its answer is unreadable: a retry
			// replays the stored answer instead of charging again.
			return nil, &KeybrakeTransient{Status: resp.StatusCode, Message: "unreadable PaymentIntent in the answer"}
		}
		return &Charge{
			PaymentIntent: pi.ID, Customer: pi.Customer, Amount: pi.Amount, Currency: pi.Currency, Status: pi.Status,
			Replayed:       resp.Header.Get("Keybrake-Idempotent-Replayed") == "true",
			KeybrakeCallID: resp.Header.Get("Keybrake-Call-Id"),
		}, nil
	}
	return nil, Classify(resp.StatusCode, data)
}

// Classify turns a non-2xx proxied answer into one of the error types.
// Keybrake's own refusals carry a top-level "code"; the vendor's answers
// (passed through) do not.
func Classify(status int, body []byte) error {
	var eb struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		KeyID   string `json:"key_id"`
		Error   *struct {
			Type    string `json:"type"`
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &eb)
	switch {
	case eb.Code == "cap_exhausted":
		return &CapExhausted{KeyID: eb.KeyID, Message: eb.Message}
	case eb.Code != "" && transientCodes[eb.Code]:
		return &KeybrakeTransient{Status: status, Code: eb.Code, Message: eb.Message}
	case eb.Code != "":
		return &KeybrakeRefused{Status: status, Code: eb.Code, KeyID: eb.KeyID, Message: eb.Message}
	}
	// The vendor's own answer.
	msg := ""
	var typ, code string
	if eb.Error != nil {
		msg, typ, code = eb.Error.Message, eb.Error.Type, eb.Error.Code
	}
	if msg == "" {
		msg = strings.TrimSpace(string(body))
		if len(msg) > 200 {
			msg = msg[:200]
		}
	}
	if status >= 500 || status == http.StatusTooManyRequests || status == http.StatusConflict {
		return &KeybrakeTransient{Status: status, Message: "vendor answered " + strconv.Itoa(status) + ": " + msg}
	}
	return &VendorRejected{Status: status, Type: typ, Code: code, Message: msg}
}

// InvalidInput is a request that was not sent because it could never
// succeed (missing vault key, over-long Idempotency-Key...).
type InvalidInput struct {
	Field   string
	Message string
}

func (e *InvalidInput) Error() string { return "invalid input: " + e.Field + ": " + e.Message }

func (r Request) validate() error {
	switch {
	case r.BaseURL == "":
		return &InvalidInput{Field: "KEYBRAKE_URL", Message: "Keybrake's URL is not set"}
	case r.VaultKey == "":
		return &InvalidInput{Field: "vault_key", Message: "no vault key"}
	case r.IdempotencyKey == "":
		return &InvalidInput{Field: "idempotency_key", Message: "an Idempotency-Key is required: retries without one can charge twice"}
	case len(r.IdempotencyKey) > MaxIdempotencyKey:
		return &InvalidInput{Field: "idempotency_key", Message: fmt.Sprintf("Idempotency-Key is %d characters; at most %d are accepted", len(r.IdempotencyKey), MaxIdempotencyKey)}
	case r.Customer.ID == "":
		return &InvalidInput{Field: "customer.id", Message: "customer id is required"}
	case r.Customer.AmountCents < 1:
		return &InvalidInput{Field: "customer.amount_cents", Message: "amount_cents must be a positive integer"}
	}
	return nil
}

// redact removes the vault key from a transport error message (url.Error
// never includes headers, but be certain).
func redact(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "[vault key]")
}
