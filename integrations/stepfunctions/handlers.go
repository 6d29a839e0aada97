// Package stepfunctions holds the Lambda handlers of Keybrake's AWS Step
// Functions integration: the three Task states that give one execution one
// vault key, charge through it, and revoke it when the execution ends,
// however it ends. Each handler has a thin main in cmd/ that calls
// lambda.Start; the definitions that wire them are in statemachine/.
//
//	issue-vault-key   IssueVaultKey:  the seed's Parameters -> the created key ($.vault)
//	charge-customer   ChargeCustomer: {customer, vault_key, execution_id, item_index} -> a charge
//	revoke-vault-key  RevokeVaultKey: {key_id, agent_run_label} -> the revocations
//
// Errors are returned as typed values whose Go type name aws-lambda-go
// reports as the Lambda errorType, which Step Functions matches in Retry and
// Catch: CapExhausted, KeybrakeTransient, KeybrakeRefused, VendorRejected,
// InvalidInput (see package kbcall). They must never be wrapped.
package stepfunctions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/integrations/internal/kbcall"
	"github.com/keybrake/keybrake/integrations/issuer"
)

// Error types, re-exported so the handlers' contract reads in one place.
type (
	CapExhausted      = kbcall.CapExhausted
	KeybrakeTransient = kbcall.KeybrakeTransient
	KeybrakeRefused   = kbcall.KeybrakeRefused
	VendorRejected    = kbcall.VendorRejected
	InvalidInput      = kbcall.InvalidInput
	Customer          = kbcall.Customer
	Charge            = kbcall.Charge
)

// Handlers are the three Lambda handlers over one configuration.
type Handlers struct {
	cfg  Config
	call *kbcall.Client
	// HTTP is used for admin API calls.
	HTTP *http.Client
}

// New returns the handlers for cfg.
func New(cfg Config) *Handlers {
	if cfg.AdminURL == "" {
		cfg.AdminURL = cfg.URL
	}
	if cfg.Token == nil {
		cfg.Token = StaticToken("")
	}
	return &Handlers{cfg: cfg, call: kbcall.DefaultClient}
}

// Decimal is a JSON number or string kept as its literal text, so a cap
// such as 49.99 is never rounded through a float on its way to Keybrake.
type Decimal string

// UnmarshalJSON accepts 500, 49.99, "500" or "49.99".
func (d *Decimal) UnmarshalJSON(b []byte) error {
	text, quoted, err := jsonScalar(b)
	if err != nil || quoted || text == "" {
		*d = Decimal(text)
		return err
	}
	var n json.Number
	if err := json.Unmarshal([]byte(text), &n); err != nil {
		return fmt.Errorf("want a number or a decimal string, got %s", b)
	}
	*d = Decimal(n.String())
	return nil
}

// Duration is a Go duration string ("2h", "30m") or a number of seconds.
type Duration string

// UnmarshalJSON accepts "2h" or 7200.
func (d *Duration) UnmarshalJSON(b []byte) error {
	text, quoted, err := jsonScalar(b)
	if err != nil || quoted || text == "" {
		*d = Duration(text)
		return err
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return fmt.Errorf("want a duration such as \"2h\" or a whole number of seconds, got %s", b)
	}
	*d = Duration(strconv.FormatInt(n, 10) + "s")
	return nil
}

// jsonScalar reads a JSON value that may be a string or a bare literal:
// a string's trimmed content (quoted=true), "" for null, else the literal
// text for the caller to parse.
func jsonScalar(b []byte) (text string, quoted bool, err error) {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return "", true, err
		}
		return strings.TrimSpace(s), true, nil
	case string(b) == "null":
		return "", false, nil
	default:
		return string(b), false, nil
	}
}

// IssueInput is the seed's IssueVaultKey Parameters.
type IssueInput struct {
	Vendor           string   `json:"vendor"`
	DailyUSDCap      Decimal  `json:"daily_usd_cap"`
	AllowedEndpoints []string `json:"allowed_endpoints"`
	ExpiresIn        Duration `json:"expires_in"`
	// AgentRunLabel is the execution ARN ($$.Execution.Id).
	AgentRunLabel string            `json:"agent_run_label"`
	AgentName     string            `json:"agent_name,omitempty"`
	TotalUSDCap   Decimal           `json:"total_usd_cap,omitempty"`
	MaxUSDPerCall Decimal           `json:"max_usd_per_call,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`

	// ExecutionID ("execution_id.$": "$$.Execution.Id", default the
	// agent_run_label) and StateName (the issuing state's name, default
	// "IssueVaultKey"; "state_name.$": "$$.State.Name" where the runtime
	// has it) make the Idempotency-Key: a Lambda or state retry sends the
	// same one and gets the key the first attempt made, never a second cap.
	// An execution with two issuing states must name each.
	ExecutionID string `json:"execution_id,omitempty"`
	StateName   string `json:"state_name,omitempty"`
}

// IdempotencyKey is "<execution id>/<state name>", shortened with a hash
// when longer than Keybrake accepts.
func (in IssueInput) IdempotencyKey() string {
	exec, state := in.ExecutionID, in.StateName
	if exec == "" {
		exec = in.AgentRunLabel
	}
	if state == "" {
		state = "IssueVaultKey"
	}
	return issuer.IdempotencyKey(exec, state)
}

// IssueVaultKey creates the execution's vault key. Its answer, placed at
// ResultPath "$.vault", carries vault_key (the Bearer credential the Map
// iterations share) and key_id (what RevokeVaultKey revokes). It sends
// in.IdempotencyKey(), so a retry returns the same key.
func (h *Handlers) IssueVaultKey(ctx context.Context, in IssueInput) (*client.Key, error) {
	if in.Vendor == "" || in.DailyUSDCap == "" || len(in.AllowedEndpoints) == 0 || in.ExpiresIn == "" {
		return nil, &InvalidInput{Field: "parameters", Message: "vendor, daily_usd_cap, allowed_endpoints and expires_in are required"}
	}
	if in.AgentRunLabel == "" {
		return nil, &InvalidInput{Field: "agent_run_label", Message: `agent_run_label is required: pass "agent_run_label.$": "$$.Execution.Id"`}
	}
	p := client.IssueParams{
		Vendor: in.Vendor, DailyUSDCap: string(in.DailyUSDCap), AllowedEndpoints: in.AllowedEndpoints,
		ExpiresIn: string(in.ExpiresIn), AgentRunLabel: in.AgentRunLabel, AgentName: in.AgentName,
		TotalUSDCap: string(in.TotalUSDCap), MaxUSDPerCall: string(in.MaxUSDPerCall), Metadata: in.Metadata,
	}
	var key *client.Key
	err := h.admin(ctx, func(c *client.Client) (err error) {
		key, err = c.IssueKey(ctx, p, client.IdempotencyKey(in.IdempotencyKey()))
		return err
	})
	if err != nil {
		return nil, err
	}
	return key, nil
}

// ChargeInput is one Map iteration's input, built by the seed's
// ItemSelector.
type ChargeInput struct {
	Customer    Customer `json:"customer"`
	VaultKey    string   `json:"vault_key"`
	ExecutionID string   `json:"execution_id"`
	ItemIndex   *int     `json:"item_index"`
}

// ChargeResult is one iteration's result.
type ChargeResult struct {
	ItemIndex int `json:"item_index"`
	Charge
}

// IdempotencyKey is "<execution_id>-<item_index>": stable across Step
// Functions retries of the iteration, unique per item of the execution.
func (in ChargeInput) IdempotencyKey() string {
	return in.ExecutionID + "-" + strconv.Itoa(*in.ItemIndex)
}

// ChargeCustomer creates the customer's PaymentIntent through Keybrake.
// A spent cap returns *CapExhausted (errorType "CapExhausted", for the
// seed's Catch); a retry-safe failure returns *KeybrakeTransient.
func (h *Handlers) ChargeCustomer(ctx context.Context, in ChargeInput) (*ChargeResult, error) {
	if in.ExecutionID == "" || in.ItemIndex == nil {
		return nil, &InvalidInput{Field: "execution_id/item_index", Message: `both are required for the Idempotency-Key: pass "execution_id.$": "$$.Execution.Id" and "item_index.$": "$$.Map.Item.Index" in the ItemSelector`}
	}
	ch, err := h.call.CreatePaymentIntent(ctx, kbcall.Request{
		BaseURL: h.cfg.URL, VaultKey: in.VaultKey, IdempotencyKey: in.IdempotencyKey(),
		Item: strconv.Itoa(*in.ItemIndex), Customer: in.Customer,
	})
	if err != nil {
		return nil, err
	}
	return &ChargeResult{ItemIndex: *in.ItemIndex, Charge: *ch}, nil
}

// RevokeInput names what to revoke: the execution's key, and/or every
// active key labelled with the execution ARN. A retried IssueVaultKey
// returns the key the first attempt made, so the key id is enough once
// IssueVaultKey has answered; the label is for the catch-all after
// IssueVaultKey itself failed, when a key may exist whose id the execution
// never saw (its answer lost and the retries spent, or refused because
// the Keybrake keeps no KEYBRAKE_SECRETS_KEY to replay it).
type RevokeInput struct {
	KeyID         string `json:"key_id,omitempty"`
	AgentRunLabel string `json:"agent_run_label,omitempty"`
}

// RevokeOutput lists the keys revoked (revoking twice is harmless).
type RevokeOutput struct {
	Revoked []client.Revocation `json:"revoked"`
}

// RevokeVaultKey revokes the execution's key(s). The very next proxied call
// with them is refused with key_revoked.
func (h *Handlers) RevokeVaultKey(ctx context.Context, in RevokeInput) (*RevokeOutput, error) {
	if in.KeyID == "" && in.AgentRunLabel == "" {
		return nil, &InvalidInput{Field: "key_id", Message: `pass "key_id.$": "$.vault.key_id" and/or "agent_run_label.$": "$$.Execution.Id"`}
	}
	a := issuer.Admin{URL: h.cfg.AdminURL, Token: h.cfg.Token, HTTP: h.HTTP}
	revoked, err := a.RevokeRun(ctx, in.KeyID, in.AgentRunLabel)
	if err != nil {
		return nil, adminError(err)
	}
	return &RevokeOutput{Revoked: revoked}, nil
}

// admin runs one admin API call with the issuer token (refreshed once
// after a 401) and maps failures to the handlers' error types.
func (h *Handlers) admin(ctx context.Context, f func(*client.Client) error) error {
	a := issuer.Admin{URL: h.cfg.AdminURL, Token: h.cfg.Token, HTTP: h.HTTP}
	return adminError(a.Do(ctx, f))
}

func adminError(err error) error {
	if err == nil {
		return nil
	}
	var ce *client.Error
	if !errors.As(err, &ce) {
		return &KeybrakeTransient{Message: err.Error()}
	}
	if ce.Status == 0 || ce.Status >= 500 || ce.Status == http.StatusTooManyRequests {
		return &KeybrakeTransient{Status: ce.Status, Code: string(ce.Code), Message: ce.Message}
	}
	msg := ce.Message
	if ce.Field != "" {
		msg += " (field " + ce.Field + ")"
	}
	return &KeybrakeRefused{Status: ce.Status, Code: string(ce.Code), Message: msg}
}
