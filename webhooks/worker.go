package webhooks

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/keybrake/keybrake"
)

// NewSecret returns a fresh signing secret: "whsec_" and 256 random bits.
func NewSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("webhooks: crypto/rand failed: " + err.Error())
	}
	return "whsec_" + base64.RawURLEncoding.EncodeToString(b)
}

// Outbox is what the worker needs from the store.
type Outbox interface {
	ClaimDeliveries(ctx context.Context, owner string, lease time.Duration, limit int) ([]*keybrake.Outgoing, error)
	RecordAttempt(ctx context.Context, deliveryID int64, owner string, r keybrake.AttemptResult) error
}

// Observer counts attempts by result: "delivered", "retry" or "failed".
type Observer interface{ Delivery(result string) }

// Config configures a Worker. Zero values take the defaults.
type Config struct {
	Outbox Outbox
	Sealer *Sealer
	Logger *slog.Logger
	// Observer, when set, counts attempts (metrics).
	Observer Observer
	// Owner names this process in delivery leases (the replica's instance).
	Owner string
	// Poll is how often the outbox is checked for due deliveries (1s).
	Poll time.Duration
	// Timeout bounds one delivery: connect, send and the answer (10s).
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before a retry: it doubles
	// from MinBackoff (10s) after each failure, up to MaxBackoff (1h), with
	// ±20% jitter so retries to one receiver spread out.
	MinBackoff, MaxBackoff time.Duration
	// RetryFor is how long an event is retried before it is given up as
	// failed (24h): the last attempt is at least this long after the event.
	RetryFor time.Duration
	// Concurrency bounds deliveries in flight (8).
	Concurrency int
	// DenyPrivate refuses receivers on loopback, private and link-local
	// addresses (an SSRF guard); off by default, since admins register
	// webhooks and local receivers must work.
	DenyPrivate bool
	// Transport overrides the HTTP transport (tests).
	Transport http.RoundTripper
}

// Worker delivers the outbox.
type Worker struct {
	cfg    Config
	client *http.Client
	log    *slog.Logger
}

// New builds a Worker.
func New(cfg Config) (*Worker, error) {
	if cfg.Outbox == nil {
		return nil, errors.New("webhooks: no outbox")
	}
	if cfg.Sealer == nil {
		cfg.Sealer = &Sealer{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	if cfg.Owner == "" {
		cfg.Owner = keybrake.NewID("inst_")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Poll, time.Second)
	def(&cfg.Timeout, 10*time.Second)
	def(&cfg.MinBackoff, 10*time.Second)
	def(&cfg.MaxBackoff, time.Hour)
	def(&cfg.RetryFor, 24*time.Hour)
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	tr := cfg.Transport
	if tr == nil {
		d := &net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}
		if cfg.DenyPrivate {
			d.Control = denyPrivate
		}
		tr = &http.Transport{
			Proxy: http.ProxyFromEnvironment, DialContext: d.DialContext, MaxIdleConnsPerHost: 4,
			IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: cfg.Timeout, ResponseHeaderTimeout: cfg.Timeout,
		}
	}
	return &Worker{
		cfg: cfg, log: cfg.Logger,
		client: &http.Client{
			Transport: tr, Timeout: cfg.Timeout,
			// A redirect is an answer, not a new destination: following it
			// would let a receiver point deliveries elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// lease is how long a claimed delivery is this worker's: longer than one
// attempt can take, so no other replica sends it meanwhile.
func (w *Worker) lease() time.Duration { return w.cfg.Timeout + 30*time.Second }

// Run delivers due events until ctx ends, then lets the attempts in flight
// finish (each within Timeout) and records them.
func (w *Worker) Run(ctx context.Context) {
	tick := time.NewTicker(w.cfg.Poll)
	defer tick.Stop()
	for {
		w.drain(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// drain sends batches until none is due.
func (w *Worker) drain(ctx context.Context) {
	batch := w.cfg.Concurrency * 4
	for ctx.Err() == nil {
		due, err := w.cfg.Outbox.ClaimDeliveries(ctx, w.cfg.Owner, w.lease(), batch)
		if err != nil {
			if ctx.Err() == nil {
				w.log.Error("webhooks: claiming deliveries failed", "err", err.Error())
			}
			return
		}
		var wg sync.WaitGroup
		sem := make(chan struct{}, w.cfg.Concurrency)
		for _, o := range due {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				w.deliver(context.WithoutCancel(ctx), o)
			}()
		}
		wg.Wait()
		if len(due) < batch {
			return
		}
	}
}

// deliver makes one attempt and records it.
func (w *Worker) deliver(ctx context.Context, o *keybrake.Outgoing) {
	start := time.Now()
	res := w.send(ctx, o)
	res.Duration = time.Since(start)
	result := "delivered"
	if !res.Delivered {
		if time.Since(o.CreatedAt) >= w.cfg.RetryFor {
			res.GiveUp, result = true, "failed"
		} else {
			res.RetryIn, result = w.backoff(o.Attempts+1), "retry"
		}
	}
	if w.cfg.Observer != nil {
		w.cfg.Observer.Delivery(result)
	}
	attrs := []any{"event_id", o.EventID, "webhook_id", o.WebhookID, "attempt", o.Attempts + 1, "status", res.Status}
	switch result {
	case "delivered":
		w.log.Info("webhook delivered", attrs...)
	case "retry":
		w.log.Warn("webhook delivery failed; will retry", append(attrs, "error", res.Error, "retry_in", res.RetryIn.String())...)
	default:
		w.log.Error("webhook delivery failed for good; retries ran out", append(attrs, "error", res.Error)...)
	}
	for i := 0; ; i++ {
		err := w.cfg.Outbox.RecordAttempt(ctx, o.DeliveryID, w.cfg.Owner, res)
		if err == nil || i == 5 || !errors.Is(err, keybrake.ErrStoreUnavailable) {
			if err != nil {
				// The lease ends and the event is sent again: at least once.
				w.log.Error("webhooks: attempt not recorded", "event_id", o.EventID, "err", err.Error())
			}
			return
		}
		time.Sleep(time.Duration(100<<i) * time.Millisecond)
	}
}

// send POSTs the event body, signed, and reads the answer's status.
func (w *Worker) send(ctx context.Context, o *keybrake.Outgoing) keybrake.AttemptResult {
	secret, err := w.cfg.Sealer.Open(o.WebhookID, o.Secret)
	if err != nil {
		return keybrake.AttemptResult{Error: err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.URL, bytes.NewReader(o.Body))
	if err != nil {
		return keybrake.AttemptResult{Error: "the webhook URL cannot be requested: " + cause(err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Keybrake-Webhooks/1")
	req.Header.Set("Keybrake-Event-Id", o.EventID)
	req.Header.Set("Keybrake-Delivery-Attempt", fmt.Sprint(o.Attempts+1))
	req.Header.Set(SignatureHeader, Sign(secret, time.Now(), o.Body))
	resp, err := w.client.Do(req)
	if err != nil {
		return keybrake.AttemptResult{Error: cause(err)}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) //nolint:errcheck // the status is the answer
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return keybrake.AttemptResult{Status: resp.StatusCode, Delivered: true}
	}
	return keybrake.AttemptResult{Status: resp.StatusCode, Error: fmt.Sprintf("the receiver answered HTTP %d", resp.StatusCode)}
}

// cause drops the URL a *url.Error repeats (a Slack webhook URL is itself a
// secret), keeping what went wrong.
func cause(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "no answer within the delivery timeout"
	}
	return err.Error()
}

// backoff is the wait before attempt n+1 after n failures.
func (w *Worker) backoff(n int) time.Duration {
	d := w.cfg.MinBackoff
	for i := 1; i < n && d < w.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, w.cfg.MaxBackoff)
	jitter := time.Duration(mrand.Int64N(int64(d)/5*2+1)) - d/5
	return d + jitter
}
