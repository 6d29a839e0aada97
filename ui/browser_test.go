package ui_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// charge sends one $amount/100 payment intent through Keybrake and returns
// the call id Keybrake assigned.
func charge(t *testing.T, env *kbtest.Env, vaultKey string, cents int, wantStatus int) int64 {
	t.Helper()
	r := env.Do(t, vaultKey, "POST", "/stripe/v1/payment_intents", "application/json",
		`{"amount":`+strconv.Itoa(cents)+`,"currency":"usd","customer":"cus_ui"}`)
	if r.Status != wantStatus {
		t.Fatalf("charge: HTTP %d, want %d: %s", r.Status, wantStatus, r.Body)
	}
	id, err := strconv.ParseInt(r.Header.Get("Keybrake-Call-Id"), 10, 64)
	if err != nil {
		t.Fatalf("no Keybrake-Call-Id on the answer: %v", err)
	}
	return id
}

// TestBrowserDashboard is the on-call path in a real browser: sign in
// (wrong token, issuer token, right token), find the key that real
// proxied calls spent through, revoke it with its Revoke button, see the
// next call refused with nothing sent to the vendor, and watch the audit
// log pick up a new call without a reload.
func TestBrowserDashboard(t *testing.T) {
	env := kbtest.Start(t)
	b := newBrowser(t)
	ctx := context.Background()

	label := "arn:aws:states:us-east-1:123456789012:execution:billing:ui-run-1"
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "10", AgentRunLabel: label, AgentName: "billing-agent"})
	for i := 0; i < 3; i++ {
		charge(t, env, k.VaultKey, 150, http.StatusOK)
	}
	intents := env.Stripe.Intents()
	if len(intents) != 3 {
		t.Fatalf("the sandbox has %d payment intents, want 3", len(intents))
	}
	for _, pi := range intents {
		if pi.Amount != 150 || pi.Currency != "usd" {
			t.Fatalf("the sandbox received %d %s, want 150 usd (what the key recorded)", pi.Amount, pi.Currency)
		}
	}
	tok, err := env.Admin.CreateToken(ctx, client.TokenParams{Name: "sfn", MaxDailyUSD: "50", Vendors: []string{"stripe"},
		Endpoints: []string{"POST /v1/payment_intents"}, MaxExpiresIn: "1h"})
	if err != nil {
		t.Fatal(err)
	}

	// No session: every page sends the browser to sign-in, with nothing else.
	b.open(env.URL + "/ui/keys")
	if loc := b.location(); !strings.HasPrefix(loc, env.URL+"/ui/signin") {
		t.Fatalf("without a session /ui/keys ended at %s, want the sign-in page", loc)
	}
	if html := b.html(); strings.Contains(html, k.ID) || strings.Contains(html, label) {
		t.Fatal("the sign-in page shows key data")
	}

	// A wrong token, then an issuer token: still on sign-in, a clear message, no data.
	b.signIn("not-the-admin-token-0123456789")
	if loc := b.location(); !strings.HasPrefix(loc, env.URL+"/ui/signin") {
		t.Fatalf("a wrong token ended at %s, want the sign-in page", loc)
	}
	if msg := b.text("[role=alert]"); !strings.Contains(msg, "not this Keybrake's admin token") {
		t.Fatalf("wrong token: message %q", msg)
	}
	b.signIn(tok.Token)
	if msg := b.text("[role=alert]"); !strings.Contains(msg, "Issuer tokens cannot sign in") {
		t.Fatalf("issuer token: message %q", msg)
	}
	if html := b.html(); strings.Contains(html, k.ID) || strings.Contains(html, kbtest.AdminToken) || strings.Contains(html, tok.Token) {
		t.Fatal("a refused sign-in shows key data or echoes a token")
	}

	// The right token: back to the keys page it asked for.
	b.signIn(kbtest.AdminToken)
	if loc := b.location(); loc != env.URL+"/ui/keys" {
		t.Fatalf("after sign-in the browser is at %s, want %s/ui/keys", loc, env.URL)
	}
	if strings.Contains(b.location(), kbtest.AdminToken) || strings.Contains(b.html(), kbtest.AdminToken) {
		t.Fatal("the admin token appears in the URL or the page")
	}
	cookies := run(b, "cookies", func(ctx context.Context, t *chromedp.Target) ([]*network.Cookie, error) {
		res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{})
		return res.Cookies, err
	})
	if len(cookies) != 1 || cookies[0].Name != "keybrake_session" || !cookies[0].HTTPOnly || cookies[0].SameSite != network.CookieSameSiteStrict ||
		cookies[0].Value == kbtest.AdminToken {
		got, _ := json.Marshal(cookies)
		t.Fatalf("session cookie: %s; want one HttpOnly SameSite=Strict keybrake_session holding no token", got)
	}

	// The key and its spend after the real calls.
	row := `tr[data-key-id="` + k.ID + `"]`
	if got := b.text(row + ` td[data-col=status]`); got != "active" {
		t.Fatalf("status cell %q, want active", got)
	}
	if got := b.text(row + " td.spend"); !strings.Contains(got, "$4.50") {
		t.Fatalf("spend today cell %q, want $4.50 (3 × $1.50)", got)
	}
	if v, err := env.Admin.GetKey(ctx, k.ID); err != nil || v.SpentTodayUSD == nil || v.SpentTodayUSD.String() != "4.50" {
		t.Fatalf("the key recorded %v (%v), want the $4.50 the sandbox charged and the page shows", v, err)
	}
	if got := b.text(row); !strings.Contains(got, label) || !strings.Contains(got, "billing-agent") || !strings.Contains(got, "POST /v1/payment_intents") || !strings.Contains(got, "$10.00") {
		t.Fatalf("key row %q lacks the label, agent, endpoint or cap", got)
	}
	// Its detail page lists the calls with their cost and the vendor's object ids.
	b.clickAndWait("open the key", chromedp.Click(chromedp.CSS(row+" a[href='/ui/keys/"+k.ID+"']")))
	calls := b.text("table.calls tbody")
	for _, pi := range intents {
		if !strings.Contains(calls, pi.ID) {
			t.Fatalf("key detail calls %q lack the sandbox's payment intent %s", calls, pi.ID)
		}
	}
	if strings.Count(calls, "forwarded") != 3 || strings.Count(calls, "$1.50") != 3 {
		t.Fatalf("key detail calls %q: want 3 forwarded calls at $1.50", calls)
	}

	// Revoke with the row's button (its accessible name is "Revoke"),
	// confirm in the dialog, and the row says revoked.
	b.open(env.URL + "/ui/keys")
	revoke := b.byName("button", "Revoke")
	if !b.eval(`document.querySelector('` + revoke + `').closest('tr').dataset.keyId === '` + k.ID + `'`) {
		t.Fatal("the Revoke button is not in the key's row")
	}
	b.do("press Revoke", chromedp.Click(chromedp.CSS(revoke)), chromedp.WaitVisible(chromedp.CSS("#confirm-dialog[open]")))
	if got := b.text("#confirm-dialog"); !strings.Contains(got, k.ID) || !strings.Contains(got, "key_revoked") {
		t.Fatalf("confirmation dialog %q does not name the key and what happens", got)
	}
	if env.Stripe.Requests() != 3 {
		t.Fatal("the vendor was called while the dialog was open")
	}
	confirm := b.byNameIn("#confirm-dialog", "button", "Revoke key")
	b.clickAndWait("confirm the revoke", chromedp.Click(chromedp.CSS(confirm)))
	if got := b.text(row + ` td[data-col=status]`); got != "revoked" {
		t.Fatalf("after the revoke the status cell says %q, want revoked", got)
	}
	if got := b.text("[role=status]"); !strings.Contains(got, "Revoked "+k.ID) {
		t.Fatalf("flash %q", got)
	}
	r := env.Do(t, k.VaultKey, "POST", "/stripe/v1/payment_intents", "application/json", `{"amount":150,"currency":"usd"}`)
	var refusal struct {
		Code string `json:"code"`
	}
	json.Unmarshal(r.Body, &refusal) //nolint:errcheck // checked below
	if r.Status != http.StatusUnauthorized || refusal.Code != "key_revoked" {
		t.Fatalf("a call after the dashboard's revoke: HTTP %d %s, want 401 key_revoked", r.Status, r.Body)
	}
	if n := env.Stripe.Requests(); n != 3 {
		t.Fatalf("the vendor received %d requests, want the 3 from before the revoke", n)
	}
	v, err := env.Admin.GetKey(ctx, k.ID)
	if err != nil || v.Status != "revoked" {
		t.Fatalf("GET /vault/keys/%s after the dashboard's revoke: %+v %v", k.ID, v, err)
	}

	// The audit log shows a new call without a reload.
	k2 := env.Issue(t, client.IssueParams{DailyUSDCap: "5", AgentRunLabel: "ui-run-2"})
	b.open(env.URL + "/ui/audit")
	b.do("mark the page", chromedp.Evaluate[chromedp.Void](`window.__sameDocument = true`))
	id := charge(t, env, k2.VaultKey, 200, http.StatusOK)
	b.do("wait for the new row", chromedp.WaitVisible(chromedp.CSS(`tr[data-call-id="`+strconv.FormatInt(id, 10)+`"]`)))
	if !b.eval(`window.__sameDocument === true`) {
		t.Fatal("the audit log reloaded the page to show the new call")
	}
	if got := b.text(`tr[data-call-id="` + strconv.FormatInt(id, 10) + `"]`); !strings.Contains(got, k2.ID) || !strings.Contains(got, "$2.00") {
		t.Fatalf("new audit row %q lacks the key or the cost", got)
	}

	// Sign out: the pages are closed again.
	b.clickAndWait("sign out", chromedp.Click(chromedp.CSS(b.byName("button", "Sign out"))))
	b.open(env.URL + "/ui/keys")
	if loc := b.location(); !strings.HasPrefix(loc, env.URL+"/ui/signin") {
		t.Fatalf("after signing out /ui/keys ended at %s, want sign-in", loc)
	}
	b.noDialogs()
	b.noProblems()
}
