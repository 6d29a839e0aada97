package ui_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// TestBrowserHostileInput issues a key whose label, agent name and metadata
// are markup, sends a call on a path that is markup too, and opens every
// page that shows them: each renders as the literal text, no dialog opens,
// and no element the markup describes exists in the page.
func TestBrowserHostileInput(t *testing.T) {
	env := kbtest.Start(t)
	const (
		label = `<img src=x onerror=alert(1)>`
		agent = `<script>alert(2)</script>`
		meta  = `"><svg onload=alert(3)>`
	)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "10", AgentRunLabel: label, AgentName: agent,
		Metadata: map[string]string{"note": meta}})
	charge(t, env, k.VaultKey, 100, http.StatusOK)
	// A denied call on a path that is markup: it is audited as it came.
	// It is written byte for byte: an HTTP client would percent-encode it.
	path := `/v1/<svg/onload=alert(4)>`
	if status, _ := kbtest.RawRequest(t, env.URL, "POST "+path+" HTTP/1.1\r\nHost: keybrake\r\nAuthorization: Bearer "+k.VaultKey+
		"\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"); status < 400 {
		t.Fatalf("POST %s: HTTP %d, want a refusal", path, status)
	}
	if n := env.Stripe.Requests(); n != 1 {
		t.Fatalf("the vendor received %d requests, want only the 1 allowed charge", n)
	}

	b := newBrowser(t)
	b.open(env.URL + "/ui/signin")
	b.signIn(kbtest.AdminToken)
	pages := []string{
		"/ui/", "/ui/keys", "/ui/keys?q=" + url.QueryEscape("<img"), "/ui/keys/" + k.ID,
		"/ui/run?label=" + url.QueryEscape(label), "/ui/runs", "/ui/audit", "/ui/reports",
	}
	for _, p := range pages {
		b.open(env.URL + p)
		if strings.Contains(b.location(), "/ui/signin") {
			t.Fatalf("%s sent the browser to sign-in", p)
		}
		// No element the hostile strings describe was created.
		if b.eval(`document.querySelector('img[src="x"], svg[onload], [onerror], [onload]') !== null`) {
			t.Errorf("%s: hostile markup became an element", p)
		}
		if b.eval(`Array.from(document.scripts).some(s => !s.src || !s.src.includes('/ui/static/ui.js'))`) {
			t.Errorf("%s: a script other than the dashboard's is in the page", p)
		}
		body := b.text("main")
		switch p {
		case "/ui/keys", "/ui/keys/" + k.ID, "/ui/runs", "/ui/":
			if !strings.Contains(body, label) {
				t.Errorf("%s: the label is not shown as text: %q", p, body)
			}
		}
		if p == "/ui/keys/"+k.ID {
			for _, s := range []string{agent, meta} {
				if !strings.Contains(body, s) {
					t.Errorf("key detail: %q is not shown as text", s)
				}
			}
		}
		if p == "/ui/audit" && !strings.Contains(body, path) {
			t.Errorf("audit log: the path %q is not shown as text: %q", path, body)
		}
	}
	// The audit log refreshes its rows from the fragment; let it, and look again.
	b.open(env.URL + "/ui/audit")
	b.do("wait for a refresh", waitText("[data-live-status]", "updated"))
	if !strings.Contains(b.text("main"), path) || b.eval(`document.querySelector('svg[onload]') !== null`) {
		t.Error("the refreshed audit rows do not show the path as text")
	}
	b.noDialogs()
	b.noProblems()
}
