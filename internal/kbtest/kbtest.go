// Package kbtest runs a whole Keybrake (the same assembly as `keybrake
// serve`) on a random local port in front of a sandbox Stripe, for tests
// that talk to it over real HTTP.
package kbtest

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/sandbox"
	"github.com/keybrake/keybrake/pricing"
	"github.com/keybrake/keybrake/server"
)

// Secrets the environment plants; tests assert they never leak.
const (
	AdminToken   = "test-admin-token-0123456789abcdef"
	StripeSecret = "sk_test_CANARYstripeSECRET0123456789"
	// SecretsKey is a KEYBRAKE_SECRETS_KEY (hex): with it, webhook secrets
	// are sealed and a retried issuance replays its secret.
	SecretsKey = "5ec0e75ec0e75ec0e75ec0e75ec0e75ec0e75ec0e75ec0e75ec0e75ec0e75ec0"
)

// Sealing configures SecretsKey (an Options.Configure).
func Sealing(c *server.Config) {
	k, err := hex.DecodeString(SecretsKey)
	if err != nil {
		panic(err)
	}
	c.Observe.SecretsKey = k
}

// Env is a running Keybrake with a sandbox Stripe behind it.
type Env struct {
	URL      string // proxy (and admin) base URL
	Admin    *client.Client
	Stripe   *sandbox.Stripe
	Upstream *httptest.Server
	Server   *server.Server
	Logs     *SyncBuffer
	DB       string
}

// Options adjust the environment.
type Options struct {
	Configure func(*server.Config)
	// Upstream replaces the sandbox Stripe (a fake that injects faults).
	Upstream http.Handler
	// NoContract turns off the check of every admin call against
	// docs/openapi.yaml (Contract.Middleware), which is on by default. Only
	// a test of that check itself has a reason to.
	NoContract bool
}

// Start runs Keybrake on a fresh SQLite file and stops it when t ends.
func Start(t testing.TB, opts ...Options) *Env {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	e := &Env{Stripe: sandbox.NewStripe(StripeSecret), Logs: &SyncBuffer{}}
	var upstream http.Handler = e.Stripe
	if o.Upstream != nil {
		upstream = o.Upstream
	}
	e.Upstream = httptest.NewServer(upstream)
	t.Cleanup(e.Upstream.Close)
	e.DB = filepath.Join(t.TempDir(), "keybrake.db")
	fx := pricing.DefaultFX()
	if err := fx.ParseFXList("EUR=1.10,JPY=0.0067,KWD=3.25,BHD=2.65"); err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{
		Addr:            "127.0.0.1:0",
		DB:              e.DB,
		AdminToken:      AdminToken,
		Vendors:         server.VendorConfig{StripeSecretKey: StripeSecret, StripeBaseURL: e.Upstream.URL, FX: fx},
		UpstreamTimeout: 10 * time.Second,
		Logger:          slog.New(slog.NewJSONHandler(e.Logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if o.Configure != nil {
		o.Configure(&cfg)
	}
	if !o.NoContract {
		contract, err := LoadContract(cfg.AdminToken)
		if err != nil {
			t.Fatalf("the admin API's contract: %v", err)
		}
		fail := reporter(t)
		wrap := cfg.WrapAdmin
		cfg.WrapAdmin = func(h http.Handler) http.Handler {
			if wrap != nil {
				h = wrap(h)
			}
			return contract.Middleware(fail, h)
		}
	}
	srv, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("server.Start: %v", err)
	}
	e.Server = srv
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx) //nolint:errcheck
	})
	e.URL = "http://" + srv.Addr()
	e.Admin = client.New("http://"+srv.AdminAddr(), AdminToken)
	return e
}

// reporter fails t with a message, until t has ended. Call it before the
// server starts: its cleanup then runs after the server's shutdown, so a
// call still in flight while the server stops is reported, and none is
// reported on a test that has ended (which would panic).
func reporter(t testing.TB) func(msg string) {
	var mu sync.Mutex
	ended := false
	t.Cleanup(func() { mu.Lock(); ended = true; mu.Unlock() })
	return func(msg string) {
		mu.Lock()
		defer mu.Unlock()
		if !ended {
			t.Errorf("%s", msg)
		}
	}
}

// Issue creates a key or fails the test.
func (e *Env) Issue(t testing.TB, p client.IssueParams) *client.Key {
	t.Helper()
	if p.Vendor == "" {
		p.Vendor = "stripe"
	}
	if p.ExpiresIn == "" {
		p.ExpiresIn = "1h"
	}
	if p.DailyUSDCap == "" {
		p.DailyUSDCap = "100"
	}
	if p.AllowedEndpoints == nil {
		p.AllowedEndpoints = []string{"POST /v1/payment_intents"}
	}
	k, err := e.Admin.IssueKey(context.Background(), p)
	if err != nil {
		t.Fatalf("issue key: %v", err)
	}
	return k
}

// Response is a proxied answer, read whole.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends one request through Keybrake with the vault key as Bearer.
func (e *Env) Do(t testing.TB, vaultKey, method, target, contentType, body string, header ...string) *Response {
	t.Helper()
	r, err := e.Try(vaultKey, method, target, contentType, body, header...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	return r
}

// Try is Do without failing the test on a transport error.
func (e *Env) Try(vaultKey, method, target, contentType, body string, header ...string) (*Response, error) {
	req, err := http.NewRequest(method, e.URL+target, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	if vaultKey != "" {
		req.Header.Set("Authorization", "Bearer "+vaultKey)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// SyncBuffer is a bytes.Buffer safe for concurrent log writers.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
