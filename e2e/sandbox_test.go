package e2e

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/server"
)

func health(t *testing.T, base string) map[string]any {
	t.Helper()
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz: %d %v", resp.StatusCode, err)
	}
	return h
}

// With --sandbox, the vendors without a credential are answered by local
// sandboxes, and say so; a vendor with a credential stays real; a base URL
// configured for a vendor without a credential is never called.
func TestSandboxMode(t *testing.T) {
	var configured atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		configured.Add(1)
		http.Error(w, "not a sandbox", http.StatusTeapot)
	}))
	defer elsewhere.Close()
	env := kbtest.Start(t, kbtest.Options{Configure: func(c *server.Config) {
		c.Sandbox = true
		c.Vendors.TwilioBaseURL = elsewhere.URL // no Twilio credential: sandboxed all the same
	}})

	h := health(t, env.URL)
	if h["sandbox"] != true || strings.Join(toStrings(h["sandbox_vendors"]), ",") != "twilio,resend" || h["status"] != "ok" {
		t.Fatalf("/healthz %v, want sandbox true for twilio and resend", h)
	}
	if !strings.Contains(env.Logs.String(), "SANDBOX MODE") {
		t.Error("no SANDBOX MODE line at start")
	}

	// Stripe has a credential (kbtest's): the real upstream answers, unmarked.
	sk := env.Issue(t, client.IssueParams{})
	r := env.Do(t, sk.VaultKey, "POST", "/stripe/v1/payment_intents", "application/json", `{"amount":100,"currency":"usd"}`)
	if r.Status != 200 || r.Header.Get("Keybrake-Sandbox") != "" || env.Stripe.Requests() != 1 {
		t.Fatalf("stripe: %d sandbox=%q, %d requests at the configured Stripe", r.Status, r.Header.Get("Keybrake-Sandbox"), env.Stripe.Requests())
	}

	tk := env.Issue(t, client.IssueParams{Vendor: "twilio", DailyUSDCap: "5", AllowedEndpoints: []string{"messages.create"}})
	r = env.Do(t, "", "POST", "/twilio/2010-04-01/Accounts/ACagent/Messages.json", "application/x-www-form-urlencoded",
		"To=%2B15005550006&From=%2B15005550001&Body=hi", "Authorization", basic("ACagent", tk.VaultKey))
	var msg struct {
		SID        string `json:"sid"`
		AccountSID string `json:"account_sid"`
	}
	if r.Status != 201 || r.Header.Get("Keybrake-Sandbox") != "true" || json.Unmarshal(r.Body, &msg) != nil ||
		!strings.HasPrefix(msg.SID, "SM") || msg.AccountSID != server.SandboxTwilioSID {
		t.Fatalf("twilio: %d sandbox=%q %s", r.Status, r.Header.Get("Keybrake-Sandbox"), r.Body)
	}
	// A refusal on a sandboxed vendor is marked too, and reaches nothing.
	before := env.Server.SandboxRequests("twilio")
	r = env.Do(t, "", "GET", "/twilio/2010-04-01/Accounts/ACagent/Calls.json", "", "", "Authorization", basic("ACagent", tk.VaultKey))
	if r.Status != 403 || !strings.Contains(string(r.Body), "endpoint_not_allowed") || r.Header.Get("Keybrake-Sandbox") != "true" {
		t.Fatalf("twilio refusal: %d sandbox=%q %s", r.Status, r.Header.Get("Keybrake-Sandbox"), r.Body)
	}
	if n := env.Server.SandboxRequests("twilio"); n != before {
		t.Fatalf("the twilio sandbox received %d request(s) for a refused call", n-before)
	}
	if before != 1 {
		t.Errorf("the twilio sandbox received %d requests, want the one message", before)
	}
	if n := configured.Load(); n != 0 {
		t.Fatalf("the configured Twilio base URL received %d requests", n)
	}

	rk := env.Issue(t, client.IssueParams{Vendor: "resend", DailyUSDCap: "5", AllowedEndpoints: []string{"emails.send"}})
	r = env.Do(t, rk.VaultKey, "POST", "/resend/emails", "application/json", `{"from":"a@example.com","to":["b@example.com"],"subject":"s","text":"t"}`)
	if r.Status != 200 || r.Header.Get("Keybrake-Sandbox") != "true" || !strings.Contains(string(r.Body), "em_sandbox_") {
		t.Fatalf("resend: %d sandbox=%q %s", r.Status, r.Header.Get("Keybrake-Sandbox"), r.Body)
	}
	if v := getKey(t, env, rk.ID); v.SpentUSD.String() != "0.0009" {
		t.Errorf("the sandboxed email cost %s, want 0.0009", v.SpentUSD)
	}
}

// Sandbox mode is never the default: without it nothing is sandboxed, and
// a vendor without a credential refuses every call.
func TestSandboxIsNotTheDefault(t *testing.T) {
	env := kbtest.Start(t)
	if h := health(t, env.URL); h["sandbox"] != nil || h["sandbox_vendors"] != nil {
		t.Fatalf("/healthz %v without --sandbox", h)
	}
	if env.Server.SandboxVendors() != nil {
		t.Fatal("sandboxed vendors without --sandbox")
	}
	_, err := env.Admin.IssueKey(t.Context(), client.IssueParams{Vendor: "twilio", DailyUSDCap: "5", AllowedEndpoints: []string{"messages.create"}, ExpiresIn: "1h"})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Field != "vendor" || !strings.Contains(ce.Message, "no credential") {
		t.Fatalf("a twilio key without a credential: %v", err)
	}
	k := env.Issue(t, client.IssueParams{})
	r := env.Do(t, k.VaultKey, "POST", "/stripe/v1/payment_intents", "application/json", `{"amount":100,"currency":"usd"}`)
	if r.Status != 200 || r.Header.Get("Keybrake-Sandbox") != "" {
		t.Fatalf("stripe: %d sandbox=%q", r.Status, r.Header.Get("Keybrake-Sandbox"))
	}
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func toStrings(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}
