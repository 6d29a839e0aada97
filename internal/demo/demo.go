// Package demo plays the product's Step Functions scenario on one machine:
// a Map state's fan-out of charges sharing one capped vault key, against a
// local Stripe sandbox, through a real Keybrake on a temporary SQLite file.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/sandbox"
	"github.com/keybrake/keybrake/server"
)

// Options configure a demo run.
type Options struct {
	Charges int    // concurrent $1 charges (default 300)
	CapUSD  string // daily cap (default "50")
	JSON    bool
	Stdout  io.Writer
	Stderr  io.Writer
	// UI seeds a month of history first, and after the scenario keeps the
	// server running with the dashboard until ctx ends.
	UI bool
	// Addr is the demo Keybrake's listen address (default a free port).
	Addr string
}

// Result is what the demo measured; --json prints it.
type Result struct {
	ExecutionARN  string `json:"execution_arn"`
	KeyID         string `json:"key_id"`
	Charges       int    `json:"charges"`
	Succeeded     int64  `json:"succeeded"`
	CapExhausted  int64  `json:"cap_exhausted"`
	OtherFailures int64  `json:"other_failures"`
	// Retried counts transient refusals (503 store_unavailable, 502, 409
	// idempotency_in_progress, a dropped connection) retried with the same
	// Idempotency-Key, as the state machine's Retry on KeybrakeTransient does.
	Retried        int64                `json:"retried"`
	SandboxCharges int                  `json:"sandbox_charges"`
	SpentUSD       keybrake.Micros      `json:"spent_usd"`
	CapUSD         keybrake.Micros      `json:"daily_usd_cap"`
	Summary        *keybrake.RunSummary `json:"run_summary"`
	AfterRevoke    int                  `json:"after_revoke_status"`
	AfterRevokeErr string               `json:"after_revoke_code"`
	// With --ui: where the dashboard is, and the token that signs in.
	DashboardURL string `json:"dashboard_url,omitempty"`
	AdminToken   string `json:"admin_token,omitempty"`
}

const sandboxSecret = "sk_test_sandbox_demo"

// Run plays the scenario and prints what happened.
func Run(ctx context.Context, o Options) error {
	if o.Charges <= 0 {
		o.Charges = 300
	}
	if o.CapUSD == "" {
		o.CapUSD = "50"
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	say := func(format string, args ...any) {
		if !o.JSON {
			fmt.Fprintf(o.Stdout, format+"\n", args...)
		}
	}

	dir, err := os.MkdirTemp("", "keybrake-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	stripe := sandbox.NewStripe(sandboxSecret)
	upstream := httptest.NewServer(stripe)
	defer upstream.Close()

	logFile, err := os.Create(filepath.Join(dir, "keybrake.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	token := keybrake.NewID("demo_admin_")
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	cfg := server.Config{
		Addr:       o.Addr,
		DB:         filepath.Join(dir, "keybrake.db"),
		AdminToken: token,
		Vendors:    server.VendorConfig{StripeSecretKey: sandboxSecret, StripeBaseURL: upstream.URL},
		Logger:     slog.New(slog.NewJSONHandler(logFile, nil)),
	}
	var ui *uiDemo
	if o.UI {
		if ui, err = startUIDemo(&cfg); err != nil {
			return err
		}
		defer ui.close()
	}
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx) //nolint:errcheck
	}()
	base := "http://" + srv.Addr()
	admin := client.New(base, token)
	if ui != nil {
		say("Seeding %d days of sandbox history for the dashboard (real proxied calls, the store's clock moved back)…", HistoryDays)
		seeded, err := Seed(ctx, ui.target(base, admin))
		if err != nil {
			return fmt.Errorf("seed the demo history: %w", err)
		}
		say("  %d keys, %d calls across Stripe, Twilio and Resend", seeded.Keys, seeded.Calls)
		say("")
	}

	execARN := "arn:aws:states:us-east-1:123456789012:execution:agent-billing:demo-" + keybrake.NewID("")[:8]
	say("Keybrake demo: the Step Functions Map-state fan-out, on this machine")
	say("  Keybrake      %s (SQLite at %s)", base, filepath.Join(dir, "keybrake.db"))
	say("  upstream      %s  ← LOCAL STRIPE SANDBOX, not Stripe: nothing real is charged", upstream.URL)
	say("")

	k, err := admin.IssueKey(ctx, client.IssueParams{
		Vendor: "stripe", DailyUSDCap: o.CapUSD, AllowedEndpoints: []string{"POST /v1/payment_intents"},
		ExpiresIn: "2h", AgentRunLabel: execARN, AgentName: "keybrake-demo",
	})
	if err != nil {
		return fmt.Errorf("issue vault key: %w", err)
	}
	say("1. IssueVaultKey: %s, $%s/day, POST /v1/payment_intents, expires %s", k.ID, k.DailyUSDCap, k.ExpiresAt.Format(time.RFC3339))
	say("   agent_run_label %s", execARN)
	say("")
	say("2. ChargeCustomers: %d concurrent $1.00 payment intents (MaxConcurrency: 0), one shared key", o.Charges)

	res := &Result{ExecutionARN: execARN, KeyID: k.ID, Charges: o.Charges, CapUSD: k.DailyUSDCap}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.Charges}, Timeout: 30 * time.Second}
	var done atomic.Int64
	stopProgress := progress(o, &done)
	var wg sync.WaitGroup
	for i := 0; i < o.Charges; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer done.Add(1)
			status, code := charge(ctx, hc, base, k.VaultKey, execARN, i)
			for attempt, wait := 1, 250*time.Millisecond; transient(status, code) && attempt <= 3 && ctx.Err() == nil; attempt, wait = attempt+1, 2*wait {
				atomic.AddInt64(&res.Retried, 1)
				time.Sleep(wait)
				status, code = charge(ctx, hc, base, k.VaultKey, execARN, i)
			}
			switch {
			case status == http.StatusOK:
				atomic.AddInt64(&res.Succeeded, 1)
			case status == http.StatusTooManyRequests && code == string(keybrake.CodeCapExhausted):
				atomic.AddInt64(&res.CapExhausted, 1)
			default:
				atomic.AddInt64(&res.OtherFailures, 1)
			}
		}(i)
	}
	wg.Wait()
	stopProgress()
	res.SandboxCharges = len(stripe.Intents())

	view, err := admin.GetKey(ctx, k.ID)
	if err != nil {
		return err
	}
	if view.SpentUSD != nil {
		res.SpentUSD = *view.SpentUSD
	}
	say("   succeeded       %d", res.Succeeded)
	say("   cap_exhausted   %d  (429, body.code == \"cap_exhausted\": the seed's Catch ends them in CapHitEnd)", res.CapExhausted)
	if res.Retried > 0 {
		say("   retried         %d transient refusals, with the same Idempotency-Key (the state machine's Retry)", res.Retried)
	}
	if res.OtherFailures > 0 {
		say("   other failures  %d", res.OtherFailures)
	}
	say("   charged at the sandbox: %d payment intents; Keybrake's spend $%s of the $%s cap", res.SandboxCharges, res.SpentUSD, k.DailyUSDCap)
	say("")

	res.Summary, err = admin.RunSummary(ctx, execARN)
	if err != nil {
		return err
	}
	if !o.JSON {
		say("3. Per-run summary (GET /vault/runs/{agent_run_label}):")
		printSummary(o.Stdout, res.Summary)
		say("")
	}

	rv, err := admin.RevokeKey(ctx, k.ID)
	if err != nil {
		return err
	}
	res.AfterRevoke, res.AfterRevokeErr = charge(ctx, hc, base, k.VaultKey, execARN, o.Charges)
	say("4. DELETE /vault/keys/%s → revoked at %s", rv.ID, rv.RevokedAt.Format(time.RFC3339))
	say("   the next call with the key: HTTP %d %s", res.AfterRevoke, res.AfterRevokeErr)

	if ui != nil {
		res.DashboardURL, res.AdminToken = base+"/ui/", token
	}
	if o.JSON {
		enc := json.NewEncoder(o.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	}
	if res.OtherFailures > 0 {
		return errors.New("some charges failed for reasons other than the cap; see the log above")
	}
	if ui == nil {
		return nil
	}
	say("")
	say("5. The dashboard is running (Ctrl-C stops the demo and deletes its data):")
	say("   URL          %s", res.DashboardURL)
	say("   admin token  %s   (paste it into \"Admin token\" to sign in)", token)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	say("Stopping the demo.")
	return nil
}

// charge is the seed's charge-customer Lambda: a JSON body to
// /stripe/v1/payment_intents, Idempotency-Key <execution>-<index>.
func charge(ctx context.Context, hc *http.Client, base, vaultKey, execARN string, i int) (int, string) {
	body := fmt.Sprintf(`{"amount":100,"currency":"usd","customer":"cus_demo_%04d"}`, i)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/stripe/v1/payment_intents", strings.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+vaultKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", fmt.Sprintf("%s-%d", execARN, i))
	req.Header.Set("Keybrake-Item", fmt.Sprint(i))
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var eb struct {
		Code string `json:"code"`
	}
	json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&eb) //nolint:errcheck // success bodies have no code
	return resp.StatusCode, eb.Code
}

// transient is what the Step Functions integration retries
// (KeybrakeTransient): the store or the vendor was briefly unavailable, or
// the same Idempotency-Key is still in flight. A retry with the same key
// never charges twice.
func transient(status int, code string) bool {
	switch {
	case status == 0, status == http.StatusBadGateway:
		return true
	case status == http.StatusServiceUnavailable && code == string(keybrake.CodeStoreUnavailable):
		return true
	case status == http.StatusConflict && code == string(keybrake.CodeIdempotencyInProgress):
		return true
	}
	return false
}

// progress shows done/total on stderr while the fan-out runs: one line
// redrawn in place on a terminal, a few plain lines otherwise.
func progress(o Options, done *atomic.Int64) func() {
	if o.JSON {
		return func() {}
	}
	tty := false
	if f, ok := o.Stderr.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	stop := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		last := int64(-1)
		for {
			select {
			case <-stop:
				n := done.Load()
				if tty {
					fmt.Fprintf(o.Stderr, "\r   progress: %d/%d calls answered\n", n, o.Charges)
				} else if n != last {
					fmt.Fprintf(o.Stderr, "   progress: %d/%d calls answered\n", n, o.Charges)
				}
				return
			case <-tick.C:
				n := done.Load()
				if tty {
					fmt.Fprintf(o.Stderr, "\r   progress: %d/%d calls answered", n, o.Charges)
				} else if n != last && n > 0 && n < int64(o.Charges) {
					fmt.Fprintf(o.Stderr, "   progress: %d/%d calls answered\n", n, o.Charges)
					last = n
				}
			}
		}
	}()
	return func() { close(stop); <-finished }
}

func printSummary(out io.Writer, s *keybrake.RunSummary) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "   spent\t$%s\n", s.Spent)
	fmt.Fprintf(w, "   calls\t%d allowed, %d denied (%d unknown outcome)\n", s.Allowed, s.Denied, s.Unknown)
	for _, e := range s.ByEndpoint {
		fmt.Fprintf(w, "   endpoint\t%s %s: %d calls, $%s\n", e.Vendor, e.Endpoint, e.Calls, e.Spent)
	}
	for code, n := range s.DeniedByCode {
		fmt.Fprintf(w, "   denied\t%s: %d\n", code, n)
	}
	if s.FirstCall != nil {
		fmt.Fprintf(w, "   first / last call\t%s / %s\n", s.FirstCall.Format(time.RFC3339Nano), s.LastCall.Format(time.RFC3339Nano))
	}
	w.Flush()
}
