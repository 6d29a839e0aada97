// Package temporal is Keybrake's Temporal integration: a billing workflow
// that gets one vault key per workflow run, fans charges out to activities
// that share it, and revokes it in a deferred cleanup activity that runs on
// success, failure and cancellation alike.
//
//	w.RegisterWorkflow(temporal.BillingWorkflow)
//	w.RegisterActivity(&temporal.Activities{
//		ProxyURL: "https://keybrake.internal",
//		Admin:    issuer.Admin{URL: "https://keybrake.internal", Token: issuer.FromEnv()},
//	})
//
// Idempotency: each charge activity has the explicit activity ID
// "charge-<index>", and sends Idempotency-Key "<run id>-charge-<index>".
// Temporal retries an activity with the same run id and activity id, so a
// retry after the vendor applied the charge (a 500, a lost answer, a worker
// that crashed after the call) is answered from Keybrake's stored response
// or deduplicated by the vendor: never charged twice.
//
// The vault key travels through the workflow's history as the issue
// activity's result (as it does through Step Functions' execution history):
// it is capped, short-lived and revoked when the run ends; use a data
// converter that encrypts payloads if history is readable by more people
// than the key should be.
package temporal

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"time"

	"go.temporal.io/sdk/activity"
	sdktemporal "go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/integrations/internal/kbcall"
	"github.com/keybrake/keybrake/integrations/issuer"
)

// Customer is one charge: {id, amount_cents, currency}.
type Customer = kbcall.Customer

// Error types an activity fails with (ApplicationError types). Only
// KeybrakeTransient is retried.
const (
	ErrCapExhausted      = "CapExhausted"
	ErrKeybrakeTransient = "KeybrakeTransient"
	ErrKeybrakeRefused   = "KeybrakeRefused"
	ErrVendorRejected    = "VendorRejected"
	ErrInvalidInput      = "InvalidInput"
)

// NonRetryable are the error types no RetryPolicy of this package retries.
var NonRetryable = []string{ErrCapExhausted, ErrKeybrakeRefused, ErrVendorRejected, ErrInvalidInput}

// BillingInput is the workflow's input.
type BillingInput struct {
	// DailyUSDCap is the run's budget in dollars ("500", "49.99").
	DailyUSDCap string
	// ExpiresIn is the key's lifetime (default "2h"): longer than the run.
	ExpiresIn string
	Customers []Customer
}

// BillingResult is the workflow's result.
type BillingResult struct {
	KeyID string
	// RunLabel is the key's agent_run_label: read the run's spend with
	// `keybrake report` or client.RunSummary(RunLabel).
	RunLabel     string
	Charged      []ChargeResult
	CapExhausted []int // indexes of customers not charged: the cap was spent
	Revoked      bool
}

// RunLabel is the agent_run_label of a workflow run.
func RunLabel(workflowID, runID string) string { return "temporal:" + workflowID + ":" + runID }

// Activity options. Retries wait 1s, 2s, 4s... up to 30s, five attempts.
var (
	retry = &sdktemporal.RetryPolicy{
		InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second,
		MaximumAttempts: 5, NonRetryableErrorTypes: NonRetryable,
	}
	adminOptions = workflow.ActivityOptions{StartToCloseTimeout: 30 * time.Second, RetryPolicy: retry}
	// Cleanup retries longer: a key left alive is worse than a slow end.
	cleanupOptions = workflow.ActivityOptions{StartToCloseTimeout: 30 * time.Second, RetryPolicy: &sdktemporal.RetryPolicy{
		InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: time.Minute,
		MaximumAttempts: 10, NonRetryableErrorTypes: []string{ErrKeybrakeRefused, ErrInvalidInput},
	}}
)

func chargeOptions(index int) workflow.ActivityOptions {
	return workflow.ActivityOptions{
		// The activity ID is part of the Idempotency-Key: stable across
		// retries, unique per customer in the run.
		ActivityID:          "charge-" + strconv.Itoa(index),
		StartToCloseTimeout: 90 * time.Second,
		RetryPolicy:         retry,
	}
}

// BillingWorkflow charges every customer through one vault key capped at
// DailyUSDCap. Customers past the cap end in CapExhausted without failing
// the run; any other failure fails it. The key is revoked however it ends.
func BillingWorkflow(ctx workflow.Context, in BillingInput) (res *BillingResult, err error) {
	info := workflow.GetInfo(ctx)
	label := RunLabel(info.WorkflowExecution.ID, info.WorkflowExecution.RunID)
	expires := in.ExpiresIn
	if expires == "" {
		expires = "2h"
	}
	var a *Activities
	var key VaultKey
	issueOptions := adminOptions
	issueOptions.ActivityID = "issue-vault-key" // in the Idempotency-Key: the same on every retry
	err = workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, issueOptions), a.IssueVaultKey,
		IssueRequest{DailyUSDCap: in.DailyUSDCap, ExpiresIn: expires, Label: label}).Get(ctx, &key)
	if err != nil {
		// The retries are spent (or refused): a key may exist whose answer
		// never arrived, so revoke by label.
		_ = cleanup(ctx, "", label)
		return nil, err
	}
	res = &BillingResult{KeyID: key.KeyID, RunLabel: label, Charged: []ChargeResult{}, CapExhausted: []int{}}
	defer func() {
		// A retried IssueVaultKey returned the key its first attempt made,
		// so the run has this one key.
		rerr := cleanup(ctx, key.KeyID, "")
		res.Revoked = rerr == nil
		if err == nil && rerr != nil {
			err = rerr
		}
	}()

	futures := make([]workflow.Future, len(in.Customers))
	for i, c := range in.Customers {
		actx := workflow.WithActivityOptions(ctx, chargeOptions(i))
		futures[i] = workflow.ExecuteActivity(actx, a.ChargeCustomer, ChargeRequest{VaultKey: key.VaultKey, Index: i, Customer: c})
	}
	var failed []error
	for i, f := range futures {
		var r ChargeResult
		ferr := f.Get(ctx, &r)
		var appErr *sdktemporal.ApplicationError
		switch {
		case ferr == nil:
			res.Charged = append(res.Charged, r)
		case errors.As(ferr, &appErr) && appErr.Type() == ErrCapExhausted:
			res.CapExhausted = append(res.CapExhausted, i)
		default:
			failed = append(failed, fmt.Errorf("customer %d: %w", i, ferr))
		}
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if len(failed) > 0 {
		return res, sdktemporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%d of %d charges failed", len(failed), len(in.Customers)), "ChargesFailed", errors.Join(failed...))
	}
	return res, nil
}

// cleanup revokes the run's key on a context that the workflow's
// cancellation does not reach.
func cleanup(ctx workflow.Context, keyID, label string) error {
	dctx, cancel := workflow.NewDisconnectedContext(ctx)
	defer cancel()
	var a *Activities
	return workflow.ExecuteActivity(workflow.WithActivityOptions(dctx, cleanupOptions), a.RevokeVaultKey,
		RevokeRequest{KeyID: keyID, Label: label}).Get(dctx, nil)
}

// Activities call Keybrake. Register a *Activities with the worker.
type Activities struct {
	// ProxyURL is Keybrake's base URL for proxied calls.
	ProxyURL string
	// Admin issues and revokes keys with an issuer token.
	Admin issuer.Admin
	// Calls sends proxied calls (default kbcall.DefaultClient).
	Calls *kbcall.Client
}

// IssueRequest describes the run's key.
type IssueRequest struct {
	DailyUSDCap string
	ExpiresIn   string
	Label       string
}

// VaultKey is the issued key.
type VaultKey struct {
	KeyID     string
	VaultKey  string
	ExpiresAt time.Time
}

// IssueVaultKey issues the run's key for Stripe PaymentIntents, with the
// Idempotency-Key "<run id>-<activity id>": a retry of the activity gets the
// key its first attempt made.
func (a *Activities) IssueVaultKey(ctx context.Context, req IssueRequest) (*VaultKey, error) {
	var k *client.Key
	err := a.Admin.Do(ctx, func(c *client.Client) (err error) {
		k, err = c.IssueKey(ctx, client.IssueParams{
			Vendor: "stripe", DailyUSDCap: req.DailyUSDCap, AllowedEndpoints: []string{"POST /v1/payment_intents"},
			ExpiresIn: req.ExpiresIn, AgentRunLabel: req.Label, AgentName: "temporal",
		}, client.IdempotencyKey(IdempotencyKey(ctx)))
		return err
	})
	if err != nil {
		return nil, adminError(err)
	}
	return &VaultKey{KeyID: k.ID, VaultKey: k.VaultKey, ExpiresAt: k.ExpiresAt}, nil
}

// ChargeRequest is one fan-out activity's input.
type ChargeRequest struct {
	VaultKey string
	Index    int
	Customer Customer
}

// ChargeResult is one charge made (or replayed).
type ChargeResult struct {
	Index int
	kbcall.Charge
	// Attempt is the activity attempt that got the answer.
	Attempt int32
}

// IdempotencyKey is "<run id>-<activity id>" for the activity in ctx.
func IdempotencyKey(ctx context.Context) string {
	info := activity.GetInfo(ctx)
	return info.WorkflowExecution.RunID + "-" + info.ActivityID
}

// ChargeCustomer creates the customer's PaymentIntent through Keybrake.
func (a *Activities) ChargeCustomer(ctx context.Context, req ChargeRequest) (*ChargeResult, error) {
	calls := a.Calls
	if calls == nil {
		calls = kbcall.DefaultClient
	}
	ch, err := calls.CreatePaymentIntent(ctx, kbcall.Request{
		BaseURL: a.ProxyURL, VaultKey: req.VaultKey, IdempotencyKey: IdempotencyKey(ctx),
		Item: strconv.Itoa(req.Index), Customer: req.Customer,
	})
	if err != nil {
		return nil, applicationError(err)
	}
	return &ChargeResult{Index: req.Index, Charge: *ch, Attempt: activity.GetInfo(ctx).Attempt}, nil
}

// RevokeRequest names the run's key and label.
type RevokeRequest struct {
	KeyID string
	Label string
}

// RevokeVaultKey revokes the run's key and, when a label is given, every
// other active key of it (after IssueVaultKey failed, a key may exist whose
// id the workflow never saw).
func (a *Activities) RevokeVaultKey(ctx context.Context, req RevokeRequest) ([]client.Revocation, error) {
	r, err := a.Admin.RevokeRun(ctx, req.KeyID, req.Label)
	if err != nil {
		return nil, adminError(err)
	}
	return r, nil
}

// applicationError maps kbcall's error types to ApplicationErrors of the
// same name; only KeybrakeTransient is retryable.
func applicationError(err error) error {
	typ := reflect.TypeOf(err)
	if typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	name := typ.Name()
	var tr *kbcall.KeybrakeTransient
	if errors.As(err, &tr) {
		return sdktemporal.NewApplicationErrorWithCause(err.Error(), ErrKeybrakeTransient, err)
	}
	switch name {
	case ErrCapExhausted, ErrKeybrakeRefused, ErrVendorRejected, ErrInvalidInput:
	default:
		name = ErrKeybrakeRefused
	}
	return sdktemporal.NewNonRetryableApplicationError(err.Error(), name, err)
}

func adminError(err error) error {
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status == 0 || ce.Status >= 500 || ce.Status == 429 {
		return sdktemporal.NewApplicationErrorWithCause(err.Error(), ErrKeybrakeTransient, err)
	}
	return sdktemporal.NewNonRetryableApplicationError(err.Error(), ErrKeybrakeRefused, err)
}
