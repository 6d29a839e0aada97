// Package lambdasqs is Keybrake's integration for SQS-triggered Lambda
// functions: one vault key per message, labelled with the message's
// messageId, used with the messageId as the Idempotency-Key, and revoked
// when the message is done (also when it failed).
//
// SQS delivers at least once: a message whose Lambda timed out after the
// charge, or whose batch was retried, comes back with the same messageId.
// The redelivery gets a new vault key but sends the same Idempotency-Key,
// and the key is issued with the messageId as its idempotency_scope, so the
// vendor sees the same Idempotency-Key for both (Keybrake otherwise
// namespaces it per vault key) and, deduplicating on it for 24 hours,
// answers with the first charge instead of making a second.
//
// Failures are reported per message with partial batch responses
// (events.SQSEventResponse, the function's event source mapping must list
// ReportBatchItemFailures): only the failed messages return to the queue.
// On a FIFO queue the first failure stops the batch and every later message
// is reported failed too, so a message group keeps its order.
package lambdasqs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/integrations/internal/kbcall"
	"github.com/keybrake/keybrake/integrations/issuer"
)

// Error types (see package kbcall): a message that failed with one of them
// is returned to the queue.
type (
	CapExhausted      = kbcall.CapExhausted
	KeybrakeTransient = kbcall.KeybrakeTransient
	KeybrakeRefused   = kbcall.KeybrakeRefused
	VendorRejected    = kbcall.VendorRejected
	InvalidInput      = kbcall.InvalidInput
)

// Config configures the handler. ConfigFromEnv reads it from the Lambda
// environment.
type Config struct {
	// URL is Keybrake's base URL; AdminURL the admin API's (default URL).
	URL, AdminURL string
	// Token is the issuer token source.
	Token issuer.TokenSource
	// Vendor, AllowedEndpoints, MessageCapUSD and ExpiresIn describe the
	// key issued for each message: a cap on what one message may spend and
	// a lifetime a little longer than the function's timeout.
	Vendor           string
	AllowedEndpoints []string
	MessageCapUSD    string
	ExpiresIn        string
	// Concurrency is how many messages of a standard queue's batch are
	// processed at once (default 4). FIFO batches are processed in order.
	Concurrency int
	Logger      *slog.Logger
}

// ConfigFromEnv reads:
//
//	KEYBRAKE_URL, KEYBRAKE_ADMIN_URL  as for the Step Functions handlers
//	KEYBRAKE_ISSUER_TOKEN[_SSM_PARAMETER|_SECRET_ID]
//	KEYBRAKE_MESSAGE_CAP_USD          the cap of one message's key (required)
//	KEYBRAKE_KEY_EXPIRES_IN           the key's lifetime (default 15m)
//	KEYBRAKE_ALLOWED_ENDPOINTS        comma-separated (default "POST /v1/payment_intents")
//	KEYBRAKE_CONCURRENCY              messages processed at once (default 4)
func ConfigFromEnv() (Config, error) {
	c := Config{
		URL:           strings.TrimRight(os.Getenv("KEYBRAKE_URL"), "/"),
		AdminURL:      strings.TrimRight(os.Getenv("KEYBRAKE_ADMIN_URL"), "/"),
		Token:         issuer.FromEnv(),
		Vendor:        "stripe",
		MessageCapUSD: os.Getenv("KEYBRAKE_MESSAGE_CAP_USD"),
		ExpiresIn:     os.Getenv("KEYBRAKE_KEY_EXPIRES_IN"),
	}
	if v := os.Getenv("KEYBRAKE_ALLOWED_ENDPOINTS"); v != "" {
		for _, e := range strings.Split(v, ",") {
			c.AllowedEndpoints = append(c.AllowedEndpoints, strings.TrimSpace(e))
		}
	}
	if v := os.Getenv("KEYBRAKE_CONCURRENCY"); v != "" {
		if _, err := fmt.Sscan(v, &c.Concurrency); err != nil || c.Concurrency < 1 {
			return c, fmt.Errorf("KEYBRAKE_CONCURRENCY %q: want a positive integer", v)
		}
	}
	if c.URL == "" {
		return c, errors.New("KEYBRAKE_URL is not set")
	}
	if c.MessageCapUSD == "" {
		return c, errors.New("KEYBRAKE_MESSAGE_CAP_USD is not set: the most one message may spend, in dollars")
	}
	return c, nil
}

// Session is what processing one message may use: the message's vault
// key and the Idempotency-Key (the messageId).
type Session struct {
	KeyID          string
	VaultKey       string
	IdempotencyKey string
	// ProxyURL is Keybrake's base URL for proxied calls.
	ProxyURL string
}

// Processor does one message's work with its session. Use the session's
// IdempotencyKey on the vendor call (append a suffix per call if a message
// makes several), so a redelivery cannot repeat it.
type Processor func(ctx context.Context, msg events.SQSMessage, s *Session) error

// Handler is the Lambda handler.
type Handler struct {
	cfg     Config
	process Processor
	HTTP    *http.Client // admin API calls; nil for the client's default
}

// New returns a handler that runs process for each message. A nil process
// is ChargeMessage: the body {"customer","amount_cents","currency"} becomes
// one PaymentIntent.
func New(cfg Config, process Processor) *Handler {
	if cfg.AdminURL == "" {
		cfg.AdminURL = cfg.URL
	}
	if cfg.Token == nil {
		cfg.Token = issuer.StaticToken("")
	}
	if cfg.Vendor == "" {
		cfg.Vendor = "stripe"
	}
	if len(cfg.AllowedEndpoints) == 0 {
		cfg.AllowedEndpoints = []string{"POST /v1/payment_intents"}
	}
	if cfg.ExpiresIn == "" {
		cfg.ExpiresIn = "15m"
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if process == nil {
		process = ChargeMessage
	}
	return &Handler{cfg: cfg, process: process}
}

// ChargeMessage is the default Processor: the message body
// {"customer":"cus_…","amount_cents":1250,"currency":"usd"} becomes one
// PaymentIntent, with Idempotency-Key and Keybrake-Item set to the messageId.
func ChargeMessage(ctx context.Context, msg events.SQSMessage, s *Session) error {
	var body struct {
		Customer    string `json:"customer"`
		AmountCents int64  `json:"amount_cents"`
		Currency    string `json:"currency"`
	}
	if err := json.Unmarshal([]byte(msg.Body), &body); err != nil {
		return &InvalidInput{Field: "body", Message: "want {\"customer\",\"amount_cents\",\"currency\"}: " + err.Error()}
	}
	_, err := kbcall.DefaultClient.CreatePaymentIntent(ctx, kbcall.Request{
		BaseURL: s.ProxyURL, VaultKey: s.VaultKey, IdempotencyKey: s.IdempotencyKey, Item: s.IdempotencyKey,
		Customer: kbcall.Customer{ID: body.Customer, AmountCents: body.AmountCents, Currency: body.Currency},
	})
	return err
}

// Handle processes a batch and reports the messages that failed.
func (h *Handler) Handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	resp := events.SQSEventResponse{BatchItemFailures: []events.SQSBatchItemFailure{}}
	fifo := len(ev.Records) > 0 && strings.HasSuffix(ev.Records[0].EventSourceARN, ".fifo")
	if fifo {
		for i, msg := range ev.Records {
			if err := h.one(ctx, msg); err != nil {
				// Keep the group's order: this message and all after it
				// go back to the queue.
				for _, rest := range ev.Records[i:] {
					resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: rest.MessageId})
				}
				break
			}
		}
		return resp, nil
	}
	failed := make([]bool, len(ev.Records))
	sem := make(chan struct{}, h.cfg.Concurrency)
	var wg sync.WaitGroup
	for i, msg := range ev.Records {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			failed[i] = h.one(ctx, msg) != nil
		}()
	}
	wg.Wait()
	for i, msg := range ev.Records {
		if failed[i] {
			resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: msg.MessageId})
		}
	}
	return resp, nil
}

// one processes a message with its own key and revokes the key afterwards,
// whatever happened.
func (h *Handler) one(ctx context.Context, msg events.SQSMessage) (err error) {
	log := h.cfg.Logger.With("message_id", msg.MessageId)
	if msg.MessageId == "" {
		return &InvalidInput{Field: "messageId", Message: "empty"}
	}
	admin := issuer.Admin{URL: h.cfg.AdminURL, Token: h.cfg.Token, HTTP: h.HTTP}
	key, err := h.issue(ctx, admin, msg)
	if err != nil {
		log.Error("vault key not issued; message returned to the queue", "err", err.Error())
		return err
	}
	defer func() {
		// Revoke even if the invocation's context is ending.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if rerr := admin.Do(rctx, func(c *client.Client) error { _, err := c.RevokeKey(rctx, key.ID); return err }); rerr != nil {
			// The key expires by itself after ExpiresIn; the message's
			// outcome stands.
			log.Error("vault key not revoked; it expires by itself", "key_id", key.ID, "expires_at", key.ExpiresAt, "err", rerr.Error())
		}
	}()
	err = h.process(ctx, msg, &Session{KeyID: key.ID, VaultKey: key.VaultKey, IdempotencyKey: msg.MessageId, ProxyURL: h.cfg.URL})
	if err != nil {
		log.Warn("message failed; returned to the queue", "key_id", key.ID, "err", err.Error())
		return err
	}
	log.Info("message processed", "key_id", key.ID)
	return nil
}

// issue issues the delivery's key. Its Idempotency-Key is the messageId and
// the delivery's ApproximateReceiveCount: an issue retried within the
// delivery (its answer lost to a network error or a 5xx) gets the key the
// first attempt made, never a second cap, while a redelivery — whose
// previous delivery revoked its key on the way out — gets a key of its own.
// The vendor call keeps the messageId alone, so the vendor deduplicates it
// across deliveries.
func (h *Handler) issue(ctx context.Context, admin issuer.Admin, msg events.SQSMessage) (*client.Key, error) {
	delivery := msg.Attributes["ApproximateReceiveCount"]
	if delivery == "" {
		delivery = "1"
	}
	idem := issuer.IdempotencyKey("sqs", msg.MessageId, delivery)
	var key *client.Key
	var err error
	for attempt, backoff := 1, 200*time.Millisecond; ; attempt, backoff = attempt+1, 2*backoff {
		err = admin.Do(ctx, func(c *client.Client) (err error) {
			key, err = c.IssueKey(ctx, client.IssueParams{
				Vendor: h.cfg.Vendor, DailyUSDCap: h.cfg.MessageCapUSD, AllowedEndpoints: h.cfg.AllowedEndpoints,
				ExpiresIn: h.cfg.ExpiresIn, AgentRunLabel: msg.MessageId, AgentName: "lambda-sqs",
				// Keybrake namespaces Idempotency-Keys per vault key at the
				// vendor; a redelivery's new key must share the first
				// delivery's namespace for Stripe to answer it with the
				// first charge.
				KeyPolicy: client.KeyPolicy{IdempotencyScope: "sqs:" + msg.MessageId},
			}, client.IdempotencyKey(idem))
			return err
		})
		var ce *client.Error
		transient := errors.As(err, &ce) && (ce.Status == 0 || ce.Status >= 500)
		if err == nil || !transient || attempt == 3 {
			return key, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(backoff):
		}
	}
}
