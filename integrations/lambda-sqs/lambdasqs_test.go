package lambdasqs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/integrations/internal/lambdalocal"
	"github.com/keybrake/keybrake/integrations/issuer"
	lambdasqs "github.com/keybrake/keybrake/integrations/lambda-sqs"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
)

const queueARN = "arn:aws:sqs:us-east-1:123456789012:billing"

func message(id, body string) events.SQSMessage {
	return events.SQSMessage{
		MessageId: id, ReceiptHandle: "rh-" + id, Body: body, EventSource: "aws:sqs", EventSourceARN: queueARN,
		AWSRegion: "us-east-1", Attributes: map[string]string{"ApproximateReceiveCount": "1"},
	}
}

func charge(customer string, cents int) string {
	return fmt.Sprintf(`{"customer":%q,"amount_cents":%d,"currency":"usd"}`, customer, cents)
}

type fixture struct {
	kb *kbtest.Env
	st *sandbox.Stripe
	h  *lambdasqs.Handler
}

func setup(t *testing.T, fault func(*http.Request, int) sandbox.Fault) *fixture {
	t.Helper()
	st := sandbox.NewStripe(kbtest.StripeSecret)
	st.Fault = fault
	kb := kbtest.Start(t, kbtest.Options{Upstream: st})
	h := lambdasqs.New(lambdasqs.Config{
		URL: kb.URL, AdminURL: "http://" + kb.Server.AdminAddr(), Token: issuer.StaticToken(kbtest.AdminToken),
		MessageCapUSD: "50", Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	}, nil)
	return &fixture{kb: kb, st: st, h: h}
}

func failures(r events.SQSEventResponse) []string {
	var ids []string
	for _, f := range r.BatchItemFailures {
		ids = append(ids, f.ItemIdentifier)
	}
	sort.Strings(ids)
	return ids
}

// keysOf returns the keys issued for a message (its messageId is the label).
func (f *fixture) keysOf(t *testing.T, messageID string) []client.Key {
	t.Helper()
	page, err := f.kb.Admin.ListKeys(context.Background(), client.ListKeysParams{AgentRunLabel: messageID})
	if err != nil {
		t.Fatal(err)
	}
	return page.Data
}

func (f *fixture) requestsFor(messageID string) int {
	n := 0
	for _, r := range f.st.Received() {
		if _, k, _ := strings.Cut(r.Header.Get("Idempotency-Key"), ":"); k == messageID {
			n++
		}
	}
	return n
}

func TestBatchWithPartialFailures(t *testing.T) {
	f := setup(t, nil)
	ev := events.SQSEvent{Records: []events.SQSMessage{
		message("m-ok-1", charge("cus_1", 1250)),
		message("m-ok-2", charge("cus_2", 2000)),
		message("m-over-cap", charge("cus_3", 8000)), // $80 > the $50 per-message cap
		message("m-malformed", `not json`),
		message("m-ok-3", charge("cus_4", 4999)),
	}}
	resp, err := f.h.Handle(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(failures(resp), ","), "m-malformed,m-over-cap"; got != want {
		t.Fatalf("batch item failures %s, want %s", got, want)
	}
	// The vendor saw exactly the three good messages, each with its
	// messageId as Idempotency-Key; nothing for the refused ones.
	if n := len(f.st.Intents()); n != 3 {
		t.Errorf("%d PaymentIntents, want 3", n)
	}
	for id, want := range map[string]int{"m-ok-1": 1, "m-ok-2": 1, "m-ok-3": 1, "m-over-cap": 0, "m-malformed": 0} {
		if got := f.requestsFor(id); got != want {
			t.Errorf("Stripe received %d requests for %s, want %d", got, id, want)
		}
	}
	if f.st.Requests() != 3 {
		t.Errorf("Stripe received %d requests, want 3", f.st.Requests())
	}
	// One key per message, labelled with the messageId, revoked whatever
	// the outcome.
	for _, m := range ev.Records {
		keys := f.keysOf(t, m.MessageId)
		if len(keys) != 1 || keys[0].Status != keybrake.StatusRevoked || keys[0].DailyUSDCap != 50*keybrake.MicrosPerUSD {
			t.Errorf("%s: keys %+v, want one revoked $50 key", m.MessageId, keys)
		}
	}
	sum, err := f.kb.Admin.RunSummary(context.Background(), "m-over-cap")
	if err != nil {
		t.Fatal(err)
	}
	if sum.Denied != 1 || sum.DeniedByCode[keybrake.CodeCapExhausted] != 1 || sum.Spent != 0 {
		t.Errorf("run summary of the capped message: %+v", sum)
	}
}

// TestRedeliveryDoesNotChargeTwice: Stripe applies the charge and answers
// 500; the message goes back to the queue and is delivered again with the
// same messageId. The second delivery has a new key but the same
// Idempotency-Key: one PaymentIntent.
func TestRedeliveryDoesNotChargeTwice(t *testing.T) {
	var mu sync.Mutex
	failed := false
	f := setup(t, func(r *http.Request, _ int) sandbox.Fault {
		mu.Lock()
		defer mu.Unlock()
		if !failed {
			failed = true
			return sandbox.FailAfterApply
		}
		return sandbox.NoFault
	})
	ev := events.SQSEvent{Records: []events.SQSMessage{message("m-retry", charge("cus_9", 1500))}}
	resp, _ := f.h.Handle(context.Background(), ev)
	if got := failures(resp); len(got) != 1 || got[0] != "m-retry" {
		t.Fatalf("first delivery: failures %v, want m-retry back on the queue", got)
	}
	ev.Records[0].Attributes["ApproximateReceiveCount"] = "2"
	resp, _ = f.h.Handle(context.Background(), ev)
	if got := failures(resp); len(got) != 0 {
		t.Fatalf("redelivery: failures %v", got)
	}
	if n := len(f.st.Intents()); n != 1 {
		t.Fatalf("%d PaymentIntents for one message delivered twice, want 1", n)
	}
	if n := f.requestsFor("m-retry"); n != 2 {
		t.Errorf("Stripe received %d requests, want 2 (the failed one and the deduplicated redelivery)", n)
	}
	keys := f.keysOf(t, "m-retry")
	if len(keys) != 2 {
		t.Fatalf("%d keys for two deliveries, want 2", len(keys))
	}
	for _, k := range keys {
		if k.Status != keybrake.StatusRevoked {
			t.Errorf("key %s is %s", k.ID, k.Status)
		}
	}
}

func TestFIFOBatchStopsAtFirstFailure(t *testing.T) {
	f := setup(t, nil)
	fifo := func(id, body string) events.SQSMessage {
		m := message(id, body)
		m.EventSourceARN = queueARN + ".fifo"
		m.Attributes["MessageGroupId"] = "customer-group"
		return m
	}
	ev := events.SQSEvent{Records: []events.SQSMessage{
		fifo("f-1", charge("cus_1", 100)),
		fifo("f-2", charge("cus_2", 9900)), // over the cap
		fifo("f-3", charge("cus_3", 100)),
	}}
	resp, _ := f.h.Handle(context.Background(), ev)
	if got, want := strings.Join(failures(resp), ","), "f-2,f-3"; got != want {
		t.Fatalf("failures %s, want %s (the failed message and everything after it)", got, want)
	}
	if f.requestsFor("f-3") != 0 || len(f.keysOf(t, "f-3")) != 0 {
		t.Error("a message after the failure was processed")
	}
	if f.requestsFor("f-1") != 1 || f.requestsFor("f-2") != 0 {
		t.Error("want f-1 charged and nothing sent for f-2")
	}
}

func TestKeybrakeDownFailsEveryMessage(t *testing.T) {
	f := setup(t, nil)
	h := lambdasqs.New(lambdasqs.Config{URL: "http://127.0.0.1:1", Token: issuer.StaticToken(kbtest.AdminToken), MessageCapUSD: "50",
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))}, nil)
	ev := events.SQSEvent{Records: []events.SQSMessage{message("d-1", charge("cus_1", 100)), message("d-2", charge("cus_2", 100))}}
	resp, err := h.Handle(context.Background(), ev)
	if err != nil || len(resp.BatchItemFailures) != 2 {
		t.Fatalf("failures %v, err %v: want both messages back on the queue", resp.BatchItemFailures, err)
	}
	if f.st.Requests() != 0 {
		t.Error("Stripe received a request")
	}
}

// TestHandlerBinary runs cmd/sqs-charge under the Lambda runtime API with an
// SQS event as Lambda sends it, and reads the partial batch response as
// Lambda does.
func TestHandlerBinary(t *testing.T) {
	f := setup(t, nil)
	bin := filepath.Join(t.TempDir(), "sqs-charge")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	if out, err := exec.Command("go", append(args, "./cmd/sqs-charge")...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	logs := &kbtest.SyncBuffer{}
	svc, err := lambdalocal.Start([]lambdalocal.Function{{Name: "sqs-charge", Path: bin, Env: []string{
		"KEYBRAKE_URL=" + f.kb.URL, "KEYBRAKE_ADMIN_URL=http://" + f.kb.Server.AdminAddr(),
		"KEYBRAKE_ISSUER_TOKEN=" + kbtest.AdminToken, "KEYBRAKE_MESSAGE_CAP_USD=25",
	}}}, logs)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	payload, _ := json.Marshal(events.SQSEvent{Records: []events.SQSMessage{
		message("b-1", charge("cus_1", 2500)),
		message("b-2", charge("cus_2", 2501)), // one cent over the $25 cap
	}})
	out, fnErr, err := svc.Invoke(context.Background(), "sqs-charge", payload)
	if err != nil || fnErr != nil {
		t.Fatalf("invoke: %v %v\n%s", err, fnErr, logs.String())
	}
	var resp struct {
		BatchItemFailures []struct {
			ItemIdentifier string `json:"itemIdentifier"`
		} `json:"batchItemFailures"`
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.BatchItemFailures) != 1 || resp.BatchItemFailures[0].ItemIdentifier != "b-2" {
		t.Fatalf("response %s, want b-2 as the one batch item failure", out)
	}
	if f.requestsFor("b-1") != 1 || f.requestsFor("b-2") != 0 {
		t.Errorf("Stripe: %d requests for b-1, %d for b-2; want 1 and 0", f.requestsFor("b-1"), f.requestsFor("b-2"))
	}
	if !strings.Contains(logs.String(), `"message_id":"b-2"`) {
		t.Errorf("the function did not log the failed message:\n%s", logs.String())
	}
}

// An issue whose answer is lost (a 502 from the load balancer after
// Keybrake made the key) is retried within the delivery with the same
// Idempotency-Key, and gets the same key: one key, one cap, per delivery.
func TestIssueAnswerLostGetsTheSameKey(t *testing.T) {
	st := sandbox.NewStripe(kbtest.StripeSecret)
	kb := kbtest.Start(t, kbtest.Options{Upstream: st, Configure: kbtest.Sealing})
	target, _ := url.Parse("http://" + kb.Server.AdminAddr())
	admin := httputil.NewSingleHostReverseProxy(target)
	var issues atomic.Int32
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/vault/keys" && issues.Add(1) == 1 {
			admin.ServeHTTP(httptest.NewRecorder(), r) // the key is made; its answer is lost
			http.Error(w, "upstream connection reset", http.StatusBadGateway)
			return
		}
		admin.ServeHTTP(w, r)
	}))
	defer front.Close()
	h := lambdasqs.New(lambdasqs.Config{
		URL: kb.URL, AdminURL: front.URL, Token: issuer.StaticToken(kbtest.AdminToken),
		MessageCapUSD: "50", Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	}, nil)
	resp, _ := h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{message("m-lost", charge("cus_1", 700))}})
	if got := failures(resp); len(got) != 0 {
		t.Fatalf("failures %v", got)
	}
	if n := issues.Load(); n != 2 {
		t.Fatalf("%d issue requests, want 2 (the lost one and its retry)", n)
	}
	f := &fixture{kb: kb, st: st, h: h}
	keys := f.keysOf(t, "m-lost")
	if len(keys) != 1 || keys[0].Status != keybrake.StatusRevoked {
		t.Fatalf("keys %+v, want one, revoked", keys)
	}
	if n := len(st.Intents()); n != 1 {
		t.Errorf("%d PaymentIntents, want 1", n)
	}
}
