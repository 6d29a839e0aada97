package ui_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keybrake/keybrake/admin"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/server"
	"github.com/keybrake/keybrake/ui"
)

const wantCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

var pagePaths = []string{"/ui/", "/ui/keys", "/ui/keys?status=active", "/ui/runs", "/ui/audit", "/ui/reports", "/ui/webhooks",
	"/ui/run?label=run-sec", "/ui/nowhere"}

func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{AgentRunLabel: "run-sec"})
	anon, o := newOperator(t, env), newOperator(t, env)
	o.signIn()
	paths := append([]string{"/ui/signin", "/ui/static/ui.css", "/ui/static/ui.js", "/ui/fragments/audit", "/ui/keys/" + k.ID}, pagePaths...)
	for _, who := range []*operator{anon, o} {
		for _, p := range paths {
			a := who.get(p)
			h := a.header
			if h.Get("Content-Security-Policy") != wantCSP || h.Get("X-Content-Type-Options") != "nosniff" ||
				h.Get("Referrer-Policy") != "no-referrer" || h.Get("X-Frame-Options") != "DENY" {
				t.Errorf("GET %s (HTTP %d): security headers %v", p, a.status, h)
			}
		}
	}
	if a := o.get("/ui/keys"); a.header.Get("Cache-Control") != "no-store" {
		t.Errorf("a page with key data may be cached: Cache-Control %q", a.header.Get("Cache-Control"))
	}
	if a := o.get("/ui/static/ui.js"); !strings.HasPrefix(a.header.Get("Content-Type"), "text/javascript") {
		t.Errorf("ui.js served as %q", a.header.Get("Content-Type"))
	}
	// No page carries inline script or style, which the CSP would block.
	for _, p := range append([]string{"/ui/signin"}, pagePaths...) {
		body := o.get(p).body
		if strings.Contains(body, "<script>") || strings.Contains(body, " style=") || strings.Contains(body, "<style") ||
			strings.Contains(body, " onclick=") || strings.Contains(body, "javascript:") {
			t.Errorf("GET %s has inline script or style", p)
		}
	}
}

// Without a session no page or fragment shows anything, and no form acts.
func TestNoSessionNoData(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{AgentRunLabel: "run-sec"})
	o := newOperator(t, env)
	for _, p := range append(pagePaths, "/ui/keys/"+k.ID) {
		a := o.get(p)
		if a.status != http.StatusSeeOther || !strings.HasPrefix(a.header.Get("Location"), "/ui/signin") {
			t.Errorf("GET %s without a session: HTTP %d to %q, want 303 to sign-in", p, a.status, a.header.Get("Location"))
		}
		if strings.Contains(a.body, k.ID) || strings.Contains(a.body, "run-sec") {
			t.Errorf("GET %s without a session shows key data", p)
		}
	}
	if a := o.get("/ui/fragments/audit"); a.status != http.StatusUnauthorized || strings.Contains(a.body, k.ID) {
		t.Errorf("the audit fragment without a session: HTTP %d %q, want 401 and nothing", a.status, a.body)
	}
	a := o.send("POST", "/ui/keys/"+k.ID+"/revoke", url.Values{"confirm": {"yes"}})
	if a.status != http.StatusSeeOther || !strings.HasPrefix(a.header.Get("Location"), "/ui/signin") {
		t.Errorf("revoke without a session: HTTP %d to %q", a.status, a.header.Get("Location"))
	}
	if v, _ := env.Admin.GetKey(context.Background(), k.ID); v.Status != "active" {
		t.Fatalf("a revoke without a session changed the key: %s", v.Status)
	}
}

func TestSignIn(t *testing.T) {
	env := kbtest.Start(t)
	tok, err := env.Admin.CreateToken(context.Background(), client.TokenParams{Name: "sfn", MaxDailyUSD: "50", Vendors: []string{"stripe"},
		Endpoints: []string{"POST /v1/payment_intents"}, MaxExpiresIn: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	o := newOperator(t, env)
	for _, tc := range []struct{ token, want string }{
		{"", "Enter the admin token"},
		{"wrong-token-0123456789abcdef", "Check KEYBRAKE_ADMIN_TOKEN"},
		{kbtest.AdminToken + "x", "Check KEYBRAKE_ADMIN_TOKEN"},
		{tok.Token, "Issuer tokens cannot sign in"},
	} {
		a := o.send("POST", "/ui/signin", url.Values{"token": {tc.token}})
		if a.status != http.StatusUnauthorized || !strings.Contains(a.body, tc.want) || a.header.Get("Set-Cookie") != "" {
			t.Errorf("sign in with %q: HTTP %d, cookie %q, body lacks %q", tc.token, a.status, a.header.Get("Set-Cookie"), tc.want)
		}
		if tc.token != "" && strings.Contains(a.body, tc.token) {
			t.Errorf("the sign-in page echoes the token it refused")
		}
	}
	if a := o.get("/ui/keys"); a.status != http.StatusSeeOther {
		t.Fatalf("refused sign-ins opened a session: HTTP %d", a.status)
	}

	a := o.send("POST", "/ui/signin", url.Values{"token": {kbtest.AdminToken}, "next": {"/ui/runs?days=7"}})
	c := a.header.Get("Set-Cookie")
	if a.status != http.StatusSeeOther || a.header.Get("Location") != "/ui/runs?days=7" {
		t.Fatalf("sign in: HTTP %d to %q", a.status, a.header.Get("Location"))
	}
	for _, want := range []string{"keybrake_session=", "Path=/ui/", "HttpOnly", "SameSite=Strict"} {
		if !strings.Contains(c, want) {
			t.Errorf("session cookie %q lacks %s", c, want)
		}
	}
	if strings.Contains(c, "Secure") || strings.Contains(c, kbtest.AdminToken) {
		t.Errorf("session cookie %q: Secure on plain HTTP, or it holds the token", c)
	}
	// Behind a TLS-terminating proxy the cookie is Secure.
	if c := o.send("POST", "/ui/signin", url.Values{"token": {kbtest.AdminToken}}, "X-Forwarded-Proto", "https").header.Get("Set-Cookie"); !strings.Contains(c, "; Secure") {
		t.Errorf("cookie behind https: %q, want Secure", c)
	}
	// Where to go next is never another site.
	for _, next := range []string{"//evil.example/ui/", "https://evil.example/", "/vault/keys", "/ui/\\evil", "javascript:alert(1)"} {
		a := o.send("POST", "/ui/signin", url.Values{"token": {kbtest.AdminToken}, "next": {next}})
		if a.header.Get("Location") != "/ui/" {
			t.Errorf("sign in with next=%q went to %q, want /ui/", next, a.header.Get("Location"))
		}
	}
	if strings.Contains(env.Logs.String(), kbtest.AdminToken) || strings.Contains(env.Logs.String(), tok.Token) ||
		strings.Contains(env.Logs.String(), "wrong-token") {
		t.Fatal("a token appears in the log")
	}
}

func TestSecureCookiesFlag(t *testing.T) {
	env := kbtest.Start(t, kbtest.Options{Configure: func(c *server.Config) { c.UI.SecureCookies = true }})
	a := newOperator(t, env).send("POST", "/ui/signin", url.Values{"token": {kbtest.AdminToken}})
	if c := a.header.Get("Set-Cookie"); !strings.Contains(c, "; Secure") {
		t.Fatalf("--ui-secure-cookies: cookie %q, want Secure", c)
	}
}

// A state-changing request needs the session, its CSRF token and this
// origin; each missing piece is refused and the key stays active.
func TestRevokeNeedsCSRFAndOrigin(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{})
	o := newOperator(t, env)
	o.signIn()
	path := "/ui/keys/" + k.ID + "/revoke"
	for _, tc := range []struct {
		name   string
		form   url.Values
		header []string
	}{
		{"no CSRF token", url.Values{"confirm": {"yes"}}, nil},
		{"a wrong CSRF token", url.Values{"confirm": {"yes"}, "csrf": {"x" + o.csrf}}, nil},
		{"another site's Origin", url.Values{"confirm": {"yes"}, "csrf": {o.csrf}}, []string{"Origin", "https://evil.example"}},
		{"no Origin", url.Values{"confirm": {"yes"}, "csrf": {o.csrf}}, []string{"Origin", ""}},
		{"a cross-site fetch", url.Values{"confirm": {"yes"}, "csrf": {o.csrf}}, []string{"Sec-Fetch-Site", "cross-site"}},
	} {
		if a := o.send("POST", path, tc.form, tc.header...); a.status != http.StatusForbidden {
			t.Errorf("revoke with %s: HTTP %d, want 403", tc.name, a.status)
		}
		if v, _ := env.Admin.GetKey(context.Background(), k.ID); v.Status != "active" {
			t.Fatalf("revoke with %s changed the key to %s", tc.name, v.Status)
		}
	}
	if a := o.send("POST", "/ui/signin", url.Values{"token": {kbtest.AdminToken}}, "Origin", "https://evil.example"); a.status != http.StatusForbidden {
		t.Errorf("a cross-site sign-in: HTTP %d, want 403", a.status)
	}
	// Unconfirmed (no script): a confirmation page, and nothing revoked.
	a := o.send("POST", path, url.Values{"csrf": {o.csrf}, "return": {"/ui/keys"}})
	if a.status != http.StatusOK || !strings.Contains(a.body, "Revoke key") {
		t.Fatalf("unconfirmed revoke: HTTP %d, want the confirmation page", a.status)
	}
	if v, _ := env.Admin.GetKey(context.Background(), k.ID); v.Status != "active" {
		t.Fatal("an unconfirmed revoke revoked")
	}
	// Confirmed: revoked through the API's code, back where the operator was.
	a = o.send("POST", path, url.Values{"csrf": {o.csrf}, "return": {"/ui/keys?status=active"}, "confirm": {"yes"}})
	if a.status != http.StatusSeeOther || a.header.Get("Location") != "/ui/keys?status=active" {
		t.Fatalf("confirmed revoke: HTTP %d to %q", a.status, a.header.Get("Location"))
	}
	v, err := env.Admin.GetKey(context.Background(), k.ID)
	if err != nil || v.Status != "revoked" || v.RevokedAt == nil {
		t.Fatalf("after the dashboard's revoke GET /vault/keys/%s: %+v %v", k.ID, v, err)
	}
	if r := env.Do(t, k.VaultKey, "POST", "/stripe/v1/payment_intents", "application/json", `{"amount":100,"currency":"usd"}`); r.Status != http.StatusUnauthorized ||
		!strings.Contains(string(r.Body), "key_revoked") || env.Stripe.Requests() != 0 {
		t.Fatalf("a call after the revoke: HTTP %d %s, vendor requests %d", r.Status, r.Body, env.Stripe.Requests())
	}
	// Revoking again answers as the API does: the first revocation stands.
	if a := o.send("POST", path, url.Values{"csrf": {o.csrf}, "confirm": {"yes"}}); a.status != http.StatusSeeOther {
		t.Errorf("second revoke: HTTP %d", a.status)
	}
	if a := o.send("POST", "/ui/keys/vk_doesnotexist/revoke", url.Values{"csrf": {o.csrf}, "confirm": {"yes"}}); a.status != http.StatusNotFound {
		t.Errorf("revoke of an unknown key: HTTP %d, want 404", a.status)
	}
	// Signing out ends the session: its cookie and CSRF token open nothing.
	if a := o.send("POST", "/ui/signout", url.Values{"csrf": {o.csrf}}); a.status != http.StatusSeeOther {
		t.Fatalf("sign out: HTTP %d", a.status)
	}
	if a := o.get("/ui/keys"); a.status != http.StatusSeeOther {
		t.Fatalf("after sign-out /ui/keys: HTTP %d", a.status)
	}
}

// Hostile strings are escaped in the HTML the server sends, not only
// harmless in a browser.
func TestHostileStringsEscaped(t *testing.T) {
	env := kbtest.Start(t)
	label := `<img src=x onerror=alert(1)>`
	k := env.Issue(t, client.IssueParams{AgentRunLabel: label, AgentName: `"><script>alert(2)</script>`,
		Metadata: map[string]string{"x": `</td><svg onload=alert(3)>`}})
	env.Do(t, k.VaultKey, "POST", "/stripe/v1/payment_intents", "application/json", `{"amount":100,"currency":"usd"}`)
	o := newOperator(t, env)
	o.signIn()
	for _, p := range []string{"/ui/", "/ui/keys", "/ui/keys/" + k.ID, "/ui/runs", "/ui/run?label=" + url.QueryEscape(label), "/ui/audit", "/ui/fragments/audit", "/ui/reports"} {
		body := o.get(p).body
		for _, raw := range []string{"<img src=x", "<script>alert", "<svg onload"} {
			if strings.Contains(body, raw) {
				t.Errorf("GET %s contains %q unescaped", p, raw)
			}
		}
	}
	if body := o.get("/ui/keys/" + k.ID).body; !strings.Contains(body, "&lt;img src=x onerror=alert(1)&gt;") {
		t.Error("the key page does not show the label, escaped")
	}
}

// The dashboard is on the admin listener; --no-ui turns it off.
func TestListeners(t *testing.T) {
	off := kbtest.Start(t, kbtest.Options{Configure: func(c *server.Config) { c.UI.Disabled = true }})
	if a := newOperator(t, off).get("/ui/"); a.status != http.StatusNotFound || !strings.Contains(a.body, "--no-ui") {
		t.Errorf("--no-ui: GET /ui/ answered %d %q", a.status, a.body)
	}
	split := kbtest.Start(t, kbtest.Options{Configure: func(c *server.Config) { c.AdminAddr = "127.0.0.1:0" }})
	if a := newOperator(t, split).get("/ui/"); a.status != http.StatusNotFound || !strings.Contains(a.body, "admin listener") {
		t.Errorf("the proxy's listener with --admin-addr: GET /ui/ answered %d %q", a.status, a.body)
	}
	adm := newOperator(t, split)
	adm.base = "http://" + split.Server.AdminAddr()
	adm.signIn()
	if a := adm.get("/ui/keys"); a.status != http.StatusOK {
		t.Errorf("the admin listener: GET /ui/keys answered %d", a.status)
	}
}

// fakeClock is the sessions' clock in TestSessionTimeouts.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// Sessions end after the idle timeout (polling is not use) and after the
// maximum age whatever.
func TestSessionTimeouts(t *testing.T) {
	env := kbtest.Start(t)
	api, err := admin.New(admin.Config{Store: env.Server.Store(), Token: kbtest.AdminToken})
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Now()}
	h, err := ui.New(ui.Config{Store: env.Server.Store(), Admin: api, Token: kbtest.AdminToken,
		IdleTimeout: time.Minute, MaxAge: time.Hour, Clock: clock.Now, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	o := newOperator(t, env)
	o.base = srv.URL
	o.signIn()
	page := func(p string) int { t.Helper(); return o.get(p).status }

	clock.Add(50 * time.Second)
	if s := page("/ui/keys"); s != http.StatusOK {
		t.Fatalf("50s after sign-in: HTTP %d", s)
	}
	clock.Add(50 * time.Second) // 50s after the last page, 100s after sign-in
	if s := page("/ui/fragments/audit"); s != http.StatusOK {
		t.Fatalf("polling within the idle timeout: HTTP %d", s)
	}
	clock.Add(20 * time.Second) // 70s after the last page: polling did not count
	if s := page("/ui/fragments/audit"); s != http.StatusUnauthorized {
		t.Fatalf("polling past the idle timeout: HTTP %d, want 401", s)
	}
	if s := page("/ui/keys"); s != http.StatusSeeOther {
		t.Fatalf("a page past the idle timeout: HTTP %d, want 303 to sign-in", s)
	}

	o.signIn()
	for i := 1; i <= 71; i++ { // used every 50s: alive for 59m10s
		clock.Add(50 * time.Second)
		if s := page("/ui/keys"); s != http.StatusOK {
			t.Fatalf("a session in use, %v after sign-in: HTTP %d", time.Duration(i)*50*time.Second, s)
		}
	}
	clock.Add(50 * time.Second) // an hour after sign-in
	if s := page("/ui/keys"); s != http.StatusSeeOther {
		t.Fatalf("past the maximum age: HTTP %d, want 303", s)
	}
}
