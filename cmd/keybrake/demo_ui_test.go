package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer the demo writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// `keybrake demo --ui` seeds its history, plays the scenario, prints the
// dashboard's URL and token, and keeps serving until its context ends.
func TestDemoUI(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- runContext(ctx, []string{"demo", "--ui", "--charges", "30", "--cap", "10"}, &out, &errOut)
	}()

	re := regexp.MustCompile(`URL\s+(http://\S+/ui/)\s+admin token\s+(\S+)`)
	var m []string
	deadline := time.Now().Add(2 * time.Minute)
	for m == nil {
		select {
		case code := <-done:
			t.Fatalf("demo --ui ended (%d) before printing the dashboard:\n%s\n%s", code, out.String(), errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo --ui printed no dashboard URL:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
		m = re.FindStringSubmatch(out.String())
	}
	dash, token := m[1], m[2]
	for _, want := range []string{"succeeded       10", "401 key_revoked", "days of sandbox history"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo --ui output lacks %q:\n%s", want, out.String())
		}
	}

	// The server is still up: sign in with the printed token and see the
	// seeded keys, the scenario's among them.
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	origin := strings.TrimSuffix(dash, "/ui/")
	req, _ := http.NewRequest("POST", dash+"signin", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", origin)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "Calls blocked today") {
		t.Fatalf("sign in to the demo's dashboard: HTTP %d\n%s", resp.StatusCode, body)
	}
	resp, err = hc.Get(dash + "keys?q=agent-billing")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "keybrake-demo") && !strings.Contains(string(body), "billing-agent") {
		t.Fatalf("the demo dashboard's keys page shows no demo keys:\n%s", body)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("demo --ui exited %d after its context ended:\n%s", code, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo --ui did not stop after its context was cancelled")
	}
	if _, err := http.Get(dash + "signin"); err == nil {
		t.Fatal("the demo's server still answers after the demo stopped")
	}
}
