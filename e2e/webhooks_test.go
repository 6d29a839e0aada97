package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/server"
)

// receiver is a webhook endpoint as a user would write one: it checks
// Keybrake-Signature with nothing but the standard library (docs/operations.md's
// snippet), refuses stale or forged deliveries, fails its first failFirst
// good deliveries on purpose, and deduplicates on the event id.
type receiver struct {
	mu        sync.Mutex
	secret    string
	failFirst int
	attempts  int               // signed deliveries received
	forged    int               // deliveries whose signature did not verify
	events    map[string]hookEv // by event id
	dupes     int               // deliveries of an event already received
	addr      string
	srv       *http.Server
}

type hookEv struct {
	ID        string         `json:"id"`
	Type      string         `json:"type"`
	CreatedAt time.Time      `json:"created_at"`
	Data      map[string]any `json:"data"`
}

// verifySignature is the check every receiver does.
func verifySignature(header string, body []byte, secret string, tolerance time.Duration) bool {
	var ts string
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > tolerance {
		return false
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "."))
	m.Write(body)
	want := hex.EncodeToString(m.Sum(nil))
	for _, s := range sigs {
		if hmac.Equal([]byte(s), []byte(want)) {
			return true
		}
	}
	return false
}

func (rv *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if r.Method != http.MethodPost || !verifySignature(r.Header.Get("Keybrake-Signature"), body, rv.secret, 5*time.Minute) {
		rv.forged++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	rv.attempts++
	if rv.attempts <= rv.failFirst {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	var ev hookEv
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID == "" || ev.ID != r.Header.Get("Keybrake-Event-Id") {
		rv.forged++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if _, seen := rv.events[ev.ID]; seen {
		rv.dupes++
	}
	rv.events[ev.ID] = ev
	w.WriteHeader(http.StatusNoContent)
}

// startReceiver listens on addr ("127.0.0.1:0" for a new port).
func startReceiver(t *testing.T, rv *receiver, addr string) {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port of a receiver just stopped may take a moment to free
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	rv.mu.Lock()
	if rv.events == nil {
		rv.events = map[string]hookEv{}
	}
	rv.addr = ln.Addr().String()
	rv.srv = &http.Server{Handler: rv, ReadHeaderTimeout: 5 * time.Second}
	srv := rv.srv
	rv.mu.Unlock()
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { srv.Close() })
}

func (rv *receiver) stop() {
	rv.mu.Lock()
	srv := rv.srv
	rv.mu.Unlock()
	srv.Close()
}

func (rv *receiver) url() string { return "http://" + rv.addr + "/keybrake" }

func (rv *receiver) setSecret(s string) { rv.mu.Lock(); rv.secret = s; rv.mu.Unlock() }

// received returns the events received so far by type.
func (rv *receiver) received() map[string][]hookEv {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	out := map[string][]hookEv{}
	for _, e := range rv.events {
		out[e.Type] = append(out[e.Type], e)
	}
	for _, list := range out {
		sort.Slice(list, func(i, j int) bool { return list[i].CreatedAt.Before(list[j].CreatedAt) })
	}
	return out
}

func (rv *receiver) count() (events, attempts, forged int) {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return len(rv.events), rv.attempts, rv.forged
}

// allDelivered waits until a webhook has n deliveries, all recorded as
// delivered, and returns them.
func allDelivered(t *testing.T, admin *client.Client, hookID string, n int) *client.Page[client.Delivery] {
	t.Helper()
	var page *client.Page[client.Delivery]
	waitFor(t, time.Minute, fmt.Sprintf("%d deliveries recorded as delivered", n), func() bool {
		var err error
		if page, err = admin.ListDeliveries(context.Background(), hookID, 100, ""); err != nil || len(page.Data) != n {
			return false
		}
		for _, d := range page.Data {
			if d.State != "delivered" {
				return false
			}
		}
		return true
	})
	return page
}

func fastWebhooks(cfg *server.Config) {
	cfg.Observe.WebhookPoll = 20 * time.Millisecond
	cfg.Observe.WebhookMinBackoff = 50 * time.Millisecond
	cfg.Observe.WebhookMaxBackoff = 200 * time.Millisecond
	cfg.Observe.AnomalyInterval = 50 * time.Millisecond
}

// Threshold, cap and revoke events reach a real receiver, signed, after it
// refused the first deliveries; every attempt is recorded.
func TestWebhookEventsAreSignedAndRetried(t *testing.T) {
	env := kbtest.Start(t, kbtest.Options{Configure: fastWebhooks})
	rv := &receiver{failFirst: 2}
	startReceiver(t, rv, "127.0.0.1:0")
	ctx := context.Background()
	hook, err := env.Admin.CreateWebhook(ctx, client.WebhookParams{URL: rv.url(), Events: []string{"key.spend_threshold", "key.cap_exhausted", "key.revoked"}, Description: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hook.ID, "wh_") || !strings.HasPrefix(hook.Secret, "whsec_") {
		t.Fatalf("created webhook: %+v", hook)
	}
	rv.setSecret(hook.Secret)
	list, err := env.Admin.ListWebhooks(ctx)
	if err != nil || len(list.Data) != 1 || list.Data[0].Secret != "" || list.Data[0].URL != rv.url() {
		t.Fatalf("list: %+v %v (the secret is shown only at creation)", list, err)
	}

	thresholds := []int{50, 100}
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "4", AgentRunLabel: "run-hooks", AgentName: "biller", AlertThresholds: &thresholds})
	before := env.Stripe.Requests()
	for i := 0; i < 4; i++ {
		if r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd"); r.Status != 200 {
			t.Fatalf("charge %d: %d %s", i, r.Status, r.Body)
		}
	}
	expectDenied(t, env.Stripe, before+4, env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd"),
		http.StatusTooManyRequests, "cap_exhausted")
	expectDenied(t, env.Stripe, before+4, env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd"),
		http.StatusTooManyRequests, "cap_exhausted")
	if _, err := env.Admin.RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Admin.RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}

	waitFor(t, time.Minute, "four events", func() bool { n, _, _ := rv.count(); return n == 4 })
	got := rv.received()
	if len(got["key.spend_threshold"]) != 2 || len(got["key.cap_exhausted"]) != 1 || len(got["key.revoked"]) != 1 {
		t.Fatalf("events: %+v", got)
	}
	th := got["key.spend_threshold"]
	if th[0].Data["threshold_percent"] != 50.0 || th[0].Data["spent_usd"] != "2.00" || th[1].Data["threshold_percent"] != 100.0 ||
		th[0].Data["key_id"] != k.ID || th[0].Data["agent_run_label"] != "run-hooks" || th[0].Data["agent_name"] != "biller" || th[0].Data["cap_usd"] != "4.00" {
		t.Fatalf("threshold events: %+v", th)
	}
	if c := got["key.cap_exhausted"][0].Data; c["cap"] != "daily" || c["spent_usd"] != "4.00" || c["requested_usd"] != "1.00" {
		t.Fatalf("cap event: %v", c)
	}
	// The key recorded what the vendor charged: four $1 payment intents.
	if v := getKey(t, env, k.ID); *v.SpentUSD != 4_000_000 || len(env.Stripe.Intents()) != 4 {
		t.Fatalf("spent $%s, vendor intents %d", v.SpentUSD, len(env.Stripe.Intents()))
	}

	// The refused deliveries were retried, and every attempt is listed (the
	// worker records an attempt after the receiver answered it).
	deliveries := allDelivered(t, env.Admin, hook.ID, 4)
	attempts, failed := 0, 0
	for _, d := range deliveries.Data {
		if d.State != "delivered" || d.DeliveredAt == nil || len(d.Log) != d.Attempts || d.LastStatus != 204 {
			t.Errorf("delivery %+v", d)
		}
		if _, ok := rv.received()[string(d.EventType)]; !ok {
			t.Errorf("delivery of %s not received", d.EventID)
		}
		attempts += d.Attempts
		for _, a := range d.Log {
			if a.Status == 500 {
				failed++
			}
		}
	}
	if _, n, forged := rv.count(); attempts != n || failed != 2 || forged != 0 {
		t.Fatalf("recorded %d attempts (%d refused), the receiver saw %d (%d forged)", attempts, failed, n, forged)
	}
	fams := scrape(t, env.URL+"/metrics", kbtest.AdminToken)
	wantSample(t, fams, "keybrake_webhook_deliveries_total", map[string]string{"result": "retry"}, 2)
	wantSample(t, fams, "keybrake_webhook_deliveries_total", map[string]string{"result": "delivered"}, 4)

	// Deleting the webhook stops deliveries to it.
	if err := env.Admin.DeleteWebhook(ctx, hook.ID); err != nil {
		t.Fatal(err)
	}
	var ce *client.Error
	if err := env.Admin.DeleteWebhook(ctx, hook.ID); !errors.As(err, &ce) || ce.Code != "not_found" {
		t.Fatalf("second delete: %v", err)
	}
	k2 := env.Issue(t, client.IssueParams{})
	if _, err := env.Admin.RevokeKey(ctx, k2.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // ten poll intervals: nothing may arrive
	if n, _, _ := rv.count(); n != 4 {
		t.Fatalf("a deleted webhook received %d events", n-4)
	}
}

// A run that spends far over its agent's other runs fires run.spend_anomaly
// while it can still spend, once.
func TestWebhookSpendAnomaly(t *testing.T) {
	env := kbtest.Start(t, kbtest.Options{Configure: fastWebhooks})
	rv := &receiver{}
	startReceiver(t, rv, "127.0.0.1:0")
	hook, err := env.Admin.CreateWebhook(context.Background(), client.WebhookParams{URL: rv.url(), Events: []string{"run.spend_anomaly"}})
	if err != nil {
		t.Fatal(err)
	}
	rv.setSecret(hook.Secret)
	charge := func(label string, cents int) {
		k := env.Issue(t, client.IssueParams{AgentRunLabel: label, AgentName: "nightly"})
		if r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount="+strconv.Itoa(cents)+"&currency=usd"); r.Status != 200 {
			t.Fatalf("charge: %d", r.Status)
		}
	}
	charge("nightly-1", 100)
	charge("nightly-2", 120)
	charge("nightly-3", 110)
	time.Sleep(200 * time.Millisecond) // four detection rounds: nothing is anomalous yet
	if n, _, _ := rv.count(); n != 0 {
		t.Fatalf("%d anomaly events before any anomaly", n)
	}
	charge("nightly-4", 2000) // $20 against a $1.10 median
	waitFor(t, time.Minute, "the anomaly event", func() bool { n, _, _ := rv.count(); return n == 1 })
	ev := rv.received()["run.spend_anomaly"][0]
	if ev.Data["agent_run_label"] != "nightly-4" || ev.Data["baseline_usd"] != "1.10" || ev.Data["spent_usd"] != "20.00" ||
		ev.Data["factor"] != "18.18" || ev.Data["threshold_factor"] != "3.00" || ev.Data["agent_name"] != "nightly" {
		t.Fatalf("anomaly event: %+v", ev)
	}
	time.Sleep(200 * time.Millisecond)
	if n, attempts, _ := rv.count(); n != 1 || attempts != 1 {
		t.Fatalf("the anomaly fired again: %d events, %d deliveries", n, attempts)
	}
}

// With --webhook-deny-private, receivers on local addresses are refused:
// at creation when the URL names one, and when dialled whatever the URL
// says. (No test resolves a name through DNS: tests reach only loopback.)
func TestWebhookSSRFGuard(t *testing.T) {
	env := kbtest.Start(t, kbtest.Options{Configure: func(cfg *server.Config) {
		fastWebhooks(cfg)
		cfg.Observe.WebhookDenyPrivate = true
	}})
	rv := &receiver{}
	startReceiver(t, rv, "127.0.0.1:0")
	ctx := context.Background()
	_, port, _ := net.SplitHostPort(rv.addr)
	for _, u := range []string{rv.url(), "http://10.0.0.8/hook", "http://[::1]:" + port + "/", "http://localhost:" + port + "/"} {
		var ce *client.Error
		if _, err := env.Admin.CreateWebhook(ctx, client.WebhookParams{URL: u, Events: []string{"*"}}); !errors.As(err, &ce) || ce.Field != "url" {
			t.Errorf("%s: %v, want a refusal naming url", u, err)
		}
	}
	// A webhook registered before the guard was turned on (written to the
	// store directly here) is refused when dialled: the guard checks the
	// address actually connected to.
	hook, err := env.Server.Store().CreateWebhook(ctx, &keybrake.Webhook{ID: keybrake.NewID("wh_"), URL: rv.url(), Events: []string{"*"}}, "plain:whsec_old")
	if err != nil {
		t.Fatal(err)
	}
	rv.setSecret("whsec_old")
	k := env.Issue(t, client.IssueParams{})
	if _, err := env.Admin.RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	var last client.Delivery
	waitFor(t, time.Minute, "a refused attempt", func() bool {
		page, err := env.Admin.ListDeliveries(ctx, hook.ID, 10, "")
		if err != nil || len(page.Data) != 1 || page.Data[0].Attempts == 0 {
			return false
		}
		last = page.Data[0]
		return true
	})
	if last.State != "pending" || !strings.Contains(last.LastError, "private or local") || last.LastStatus != 0 {
		t.Fatalf("guarded delivery: %+v", last)
	}
	if _, attempts, forged := rv.count(); attempts+forged != 0 {
		t.Fatalf("the guarded receiver was reached %d times", attempts+forged)
	}

	// Bad requests name the field.
	for _, p := range []client.WebhookParams{
		{URL: "ftp://example.com/x", Events: []string{"*"}},
		{URL: "https://example.com/x"},
		{URL: "https://example.com/x", Events: []string{"key.exploded"}},
		{URL: "https://user:pw@example.com/x", Events: []string{"*"}},
	} {
		var ce *client.Error
		if _, err := env.Admin.CreateWebhook(ctx, p); !errors.As(err, &ce) || ce.Code != "invalid_request" || ce.Field == "" {
			t.Errorf("%+v: %v", p, err)
		}
	}
}
