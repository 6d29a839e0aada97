package storetest

import (
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/store"
)

func agent(name string) keyOpt { return func(k *keybrake.Key, _ *time.Duration) { k.AgentName = name } }
func thresholds(p ...int) keyOpt {
	return func(k *keybrake.Key, _ *time.Duration) { k.AlertThresholds = append([]int{}, p...) }
}

func newWebhook(t *testing.T, s store.Store, events ...string) *keybrake.Webhook {
	t.Helper()
	w, err := s.CreateWebhook(ctx(t), &keybrake.Webhook{ID: keybrake.NewID("wh_"), URL: "http://127.0.0.1:1/hook",
		Events: events, Description: "storetest"}, "plain:whsec_test")
	if err != nil {
		t.Fatalf("CreateWebhook: %v", err)
	}
	return w
}

// sentEvent is a claimed delivery with its body decoded.
type sentEvent struct {
	out  *keybrake.Outgoing
	ID   string         `json:"id"`
	Type string         `json:"type"`
	At   time.Time      `json:"created_at"`
	Data map[string]any `json:"data"`
}

// claimAll leases every due delivery (for an hour) and decodes its body:
// the events written since the last claimAll.
func claimAll(t *testing.T, s store.Store) []sentEvent {
	t.Helper()
	out, err := s.ClaimDeliveries(ctx(t), "storetest", time.Hour, 1000)
	if err != nil {
		t.Fatalf("ClaimDeliveries: %v", err)
	}
	var evs []sentEvent
	for _, o := range out {
		e := sentEvent{out: o}
		if err := json.Unmarshal(o.Body, &e); err != nil {
			t.Fatalf("event body %s: %v", o.Body, err)
		}
		if e.ID != o.EventID || e.At.IsZero() {
			t.Fatalf("event body %s does not match delivery %+v", o.Body, o)
		}
		evs = append(evs, e)
	}
	return evs
}

func types(evs []sentEvent) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func wantEvents(t *testing.T, what string, evs []sentEvent, want ...string) {
	t.Helper()
	if got := types(evs); !slices.Equal(got, want) {
		t.Fatalf("%s: events %v, want %v", what, got, want)
	}
}

func testSpendThresholdEvents(t *testing.T, s store.Store) {
	hook := newWebhook(t, s, "*")
	k, _ := newKey(t, s, daily(10*usd), thresholds(50, 80, 100), label("run-alerts"), agent("billing"))
	ids := []int64{mustAllow(t, s, charge(k, 4*usd)).CallID}
	wantEvents(t, "40% of the cap", claimAll(t, s))

	mustAllow(t, s, charge(k, 1*usd))
	evs := claimAll(t, s)
	wantEvents(t, "50% reached", evs, "key.spend_threshold")
	d := evs[0].Data
	if d["key_id"] != k.ID || d["agent_run_label"] != "run-alerts" || d["agent_name"] != "billing" || d["threshold_percent"] != 50.0 ||
		d["cap_usd"] != "10.00" || d["spent_usd"] != "5.00" || d["day"] != day(evs[0].At) || evs[0].out.WebhookID != hook.ID {
		t.Fatalf("threshold event data: %v", d)
	}

	ids = append(ids, mustAllow(t, s, charge(k, 4*usd)).CallID) // 90%: 80 reached
	evs = claimAll(t, s)
	wantEvents(t, "90% reached", evs, "key.spend_threshold")
	if evs[0].Data["threshold_percent"] != 80.0 || evs[0].Data["spent_usd"] != "9.00" {
		t.Fatalf("80%% event: %v", evs[0].Data)
	}
	// A refusal releases $4 (50%); reaching 80% again fires nothing.
	settle(t, s, keybrake.Settlement{CallID: ids[1], Outcome: keybrake.OutcomeForwarded, Status: 402})
	mustAllow(t, s, charge(k, 3*usd))
	wantEvents(t, "80% reached a second time", claimAll(t, s))
	mustAllow(t, s, charge(k, 2*usd)) // 100%
	evs = claimAll(t, s)
	wantEvents(t, "100% reached", evs, "key.spend_threshold")
	if evs[0].Data["threshold_percent"] != 100.0 || evs[0].Data["spent_usd"] != "10.00" {
		t.Fatalf("100%% event: %v", evs[0].Data)
	}

	// One jump across several thresholds fires each of them.
	k2, _ := newKey(t, s, daily(10*usd), thresholds(80, 20, 50))
	mustAllow(t, s, charge(k2, 9*usd))
	evs = claimAll(t, s)
	wantEvents(t, "0% to 90% at once", evs, "key.spend_threshold", "key.spend_threshold", "key.spend_threshold")
	var got []float64
	for _, e := range evs {
		got = append(got, e.Data["threshold_percent"].(float64))
	}
	slices.Sort(got)
	if !slices.Equal(got, []float64{20, 50, 80}) {
		t.Fatalf("thresholds fired: %v", got)
	}
	if v := getKey(t, s, k2.ID); !slices.Equal(v.AlertThresholds, []int{20, 50, 80}) {
		t.Fatalf("stored thresholds %v, want sorted [20 50 80]", v.AlertThresholds)
	}

	// No thresholds: no events.
	off, _ := newKey(t, s, daily(1*usd), thresholds())
	mustAllow(t, s, charge(off, 1*usd))
	wantEvents(t, "alerts off", claimAll(t, s))
	if v := getKey(t, s, off.ID); v.AlertThresholds == nil || len(v.AlertThresholds) != 0 {
		t.Fatalf("alerts off reads back as %v, want []", v.AlertThresholds)
	}

	// A settlement above its estimate can cross a threshold too.
	k3, _ := newKey(t, s, daily(10*usd), thresholds(50))
	c := mustAllow(t, s, charge(k3, 1*usd)).CallID
	wantEvents(t, "10%", claimAll(t, s))
	settle(t, s, ok2xx(c, 6*usd))
	evs = claimAll(t, s)
	wantEvents(t, "settled at 60%", evs, "key.spend_threshold")
	if evs[0].Data["spent_usd"] != "6.00" {
		t.Fatalf("settlement event: %v", evs[0].Data)
	}
	checkLedger(t, s, k.ID)

	// Invalid thresholds are refused at issue.
	bad := &keybrake.Key{ID: keybrake.NewID("key_"), Vendor: "stripe", DailyCap: usd, Rules: k.Rules, AlertThresholds: []int{0}}
	if _, err := s.CreateKey(ctx(t), bad, keybrake.HashSecret(keybrake.NewVaultKey()), time.Hour); keybrake.ErrorCode(err) != keybrake.CodeInvalidRequest {
		t.Fatalf("threshold 0: %v, want invalid_request", err)
	}
}

func testCapAndRevokeEvents(t *testing.T, s store.Store) {
	all := newWebhook(t, s, "*")
	revokes := newWebhook(t, s, "key.revoked")
	k, _ := newKey(t, s, daily(2*usd), thresholds(), label("run-cap"), agent("mailer"))
	mustAllow(t, s, charge(k, 2*usd))
	mustDeny(t, s, charge(k, 1*usd), keybrake.CodeCapExhausted)
	evs := claimAll(t, s)
	wantEvents(t, "first cap denial", evs, "key.cap_exhausted")
	d := evs[0].Data
	if d["key_id"] != k.ID || d["agent_run_label"] != "run-cap" || d["cap"] != "daily" || d["cap_usd"] != "2.00" ||
		d["spent_usd"] != "2.00" || d["requested_usd"] != "1.00" || evs[0].out.WebhookID != all.ID {
		t.Fatalf("cap event data: %v", d)
	}
	mustDeny(t, s, charge(k, 1*usd), keybrake.CodeCapExhausted)
	wantEvents(t, "second cap denial of the day", claimAll(t, s))
	// Other denials are not cap events.
	den := charge(k, 1*usd)
	den.Denial = keybrake.Errorf(keybrake.CodeEndpointNotAllowed, "no")
	mustDeny(t, s, den, keybrake.CodeEndpointNotAllowed)
	wantEvents(t, "endpoint denial", claimAll(t, s))

	tc, _ := newKey(t, s, daily(100*usd), total(1*usd), thresholds())
	mustDeny(t, s, charge(tc, 2*usd), keybrake.CodeCapExhausted)
	evs = claimAll(t, s)
	wantEvents(t, "total cap", evs, "key.cap_exhausted")
	if evs[0].Data["cap"] != "total" || evs[0].Data["cap_usd"] != "1.00" {
		t.Fatalf("total cap event: %v", evs[0].Data)
	}

	if _, err := s.RevokeKey(ctx(t), k.ID); err != nil {
		t.Fatal(err)
	}
	evs = claimAll(t, s)
	wantEvents(t, "revoke", evs, "key.revoked", "key.revoked")
	hooks := []string{evs[0].out.WebhookID, evs[1].out.WebhookID}
	slices.Sort(hooks)
	want := []string{all.ID, revokes.ID}
	slices.Sort(want)
	if !slices.Equal(hooks, want) || evs[0].ID != evs[1].ID {
		t.Fatalf("one event to both webhooks: %+v", evs)
	}
	if evs[0].Data["key_id"] != k.ID || evs[0].Data["revoked_at"] == nil || evs[0].Data["agent_name"] != "mailer" {
		t.Fatalf("revoked event data: %v", evs[0].Data)
	}
	if _, err := s.RevokeKey(ctx(t), k.ID); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "second revoke", claimAll(t, s))

	// A deleted webhook receives nothing more; its pending deliveries end.
	if _, err := s.DeleteWebhook(ctx(t), revokes.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteWebhook(ctx(t), revokes.ID); !errors.Is(err, keybrake.ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
	if _, err := s.RevokeKey(ctx(t), tc.ID); err != nil {
		t.Fatal(err)
	}
	evs = claimAll(t, s)
	wantEvents(t, "revoke after delete", evs, "key.revoked")
	if evs[0].out.WebhookID != all.ID {
		t.Fatalf("a deleted webhook got an event: %+v", evs[0].out)
	}
	hooksLeft, err := s.ListWebhooks(ctx(t))
	if err != nil || len(hooksLeft) != 1 || hooksLeft[0].ID != all.ID || !slices.Equal(hooksLeft[0].Events, []string{"*"}) {
		t.Fatalf("ListWebhooks after delete: %+v %v", hooksLeft, err)
	}
	if _, _, err := s.ListDeliveries(ctx(t), revokes.ID, 10, ""); !errors.Is(err, keybrake.ErrNotFound) {
		t.Fatalf("deliveries of a deleted webhook: %v, want ErrNotFound", err)
	}
}

func testOutbox(t *testing.T, s store.Store) {
	hook := newWebhook(t, s, "key.revoked")
	k, _ := newKey(t, s)
	if _, err := s.RevokeKey(ctx(t), k.ID); err != nil {
		t.Fatal(err)
	}
	claim := func(owner string, lease time.Duration) []*keybrake.Outgoing {
		t.Helper()
		out, err := s.ClaimDeliveries(ctx(t), owner, lease, 10)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	got := claim("a", time.Hour)
	if len(got) != 1 || got[0].URL != hook.URL || got[0].Secret != "plain:whsec_test" || got[0].Attempts != 0 {
		t.Fatalf("first claim: %+v", got)
	}
	if again := claim("b", time.Hour); len(again) != 0 {
		t.Fatalf("a leased delivery was claimed again: %+v", again)
	}
	id := got[0].DeliveryID
	record := func(r keybrake.AttemptResult) {
		t.Helper()
		if err := s.RecordAttempt(ctx(t), id, "a", r); err != nil {
			t.Fatal(err)
		}
	}
	record(keybrake.AttemptResult{Status: 500, Error: "HTTP 500", RetryIn: time.Hour, Duration: 3 * time.Millisecond})
	if again := claim("b", time.Hour); len(again) != 0 {
		t.Fatalf("claimed before its retry was due: %+v", again)
	}
	// Due again at once: the attempt count travels with it.
	if err := s.RecordAttempt(ctx(t), id, "a", keybrake.AttemptResult{Error: "connection refused", RetryIn: 0}); err != nil {
		t.Fatal(err)
	}
	got = claim("b", time.Hour)
	if len(got) != 1 || got[0].DeliveryID != id || got[0].Attempts != 2 {
		t.Fatalf("retry claim: %+v", got)
	}
	if err := s.RecordAttempt(ctx(t), id, "b", keybrake.AttemptResult{Status: 204, Delivered: true}); err != nil {
		t.Fatal(err)
	}
	if again := claim("c", 0); len(again) != 0 {
		t.Fatalf("a delivered event was claimed: %+v", again)
	}
	list, next, err := s.ListDeliveries(ctx(t), hook.ID, 10, "")
	if err != nil || next != "" || len(list) != 1 {
		t.Fatalf("ListDeliveries: %+v %q %v", list, next, err)
	}
	dl := list[0]
	if dl.State != keybrake.DeliveryDelivered || dl.Attempts != 3 || dl.DeliveredAt == nil || dl.EventType != keybrake.EventKeyRevoked ||
		dl.LastStatus != 204 || dl.NextAttemptAt != nil || len(dl.Log) != 3 {
		t.Fatalf("delivered row: %+v", dl)
	}
	if a := dl.Log[0]; a.N != 1 || a.Status != 500 || a.Error != "HTTP 500" || a.At.IsZero() {
		t.Fatalf("attempt 1: %+v", a)
	}
	if a := dl.Log[1]; a.N != 2 || a.Status != 0 || a.Error != "connection refused" {
		t.Fatalf("attempt 2: %+v", a)
	}

	// A lease that ends lets another worker take over (a crashed replica).
	k2, _ := newKey(t, s)
	if _, err := s.RevokeKey(ctx(t), k2.ID); err != nil {
		t.Fatal(err)
	}
	if got := claim("dies", time.Millisecond); len(got) != 1 {
		t.Fatalf("claim: %+v", got)
	}
	var taken []*keybrake.Outgoing
	eventually(t, "the lease to end", func() bool { taken = claim("survivor", time.Hour); return len(taken) == 1 })
	if err := s.RecordAttempt(ctx(t), taken[0].DeliveryID, "survivor", keybrake.AttemptResult{Status: 410, Error: "gone", GiveUp: true}); err != nil {
		t.Fatal(err)
	}
	list, _, _ = s.ListDeliveries(ctx(t), hook.ID, 1, "")
	if len(list) != 1 || list[0].State != keybrake.DeliveryFailed || list[0].LastError != "gone" {
		t.Fatalf("given up: %+v", list)
	}
	// Pages of one chain through every delivery once.
	page2, next2, err := s.ListDeliveries(ctx(t), hook.ID, 1, "")
	if err != nil || next2 == "" || len(page2) != 1 {
		t.Fatalf("page 1: %v %q %v", page2, next2, err)
	}
	page3, next3, err := s.ListDeliveries(ctx(t), hook.ID, 1, next2)
	if err != nil || next3 != "" || len(page3) != 1 || page3[0].ID != id {
		t.Fatalf("page 2: %v %q %v", page3, next3, err)
	}

	// Concurrent claimers never hold the same delivery at once.
	const n = 40
	for i := 0; i < n; i++ {
		kk, _ := newKey(t, s)
		if _, err := s.RevokeKey(ctx(t), kk.ID); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[int64]int{}
	err = parallel(8, func(i int) error {
		for {
			out, err := s.ClaimDeliveries(ctx(t), "w", time.Hour, 3)
			if err != nil {
				return err
			}
			if len(out) == 0 {
				return nil
			}
			mu.Lock()
			for _, o := range out {
				seen[o.DeliveryID]++
			}
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Fatalf("claimed %d distinct deliveries, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("delivery %d claimed %d times under one lease", id, c)
		}
	}
}
