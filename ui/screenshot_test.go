package ui_test

import (
	"bytes"
	"context"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keybrake/keybrake/internal/demo"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/server"
)

// TestScreenshots plays the demo data set (a month of runs over the three
// sandboxes) and photographs every page. The pictures go to the folder in
// KEYBRAKE_UI_SCREENSHOTS when it is set — `KEYBRAKE_UI_SCREENSHOTS=docs/ui
// go test ./ui -run Screenshots` refreshes the README's — and to a
// temporary folder otherwise, so CI checks that every page renders.
func TestScreenshots(t *testing.T) {
	dir := os.Getenv("KEYBRAKE_UI_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	} else if !filepath.IsAbs(dir) {
		dir = filepath.Join("..", dir) // relative to the repository, not ./ui
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var offset atomic.Int64
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(receiver.Close)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	t.Cleanup(down.Close)
	env, _ := kbtest.StartWithFakes(t, func(c *server.Config) {
		c.Clock = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
		c.Observe.WebhookPoll = 50 * time.Millisecond
	})
	seeded, err := demo.Seed(context.Background(), demo.Target{URL: env.URL, Admin: env.Admin,
		SetClock: func(d time.Duration) { offset.Store(int64(d)) }, WebhookURL: receiver.URL + "/keybrake", DownWebhookURL: down.URL + "/alerts"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("data set: %d keys, %d calls", seeded.Keys, seeded.Calls)

	b := newBrowser(t)
	shoot := func(name, path string) {
		t.Helper()
		b.open(env.URL + path)
		b.do("settle", chromedp.Sleep(200*time.Millisecond))
		img := run(b, "screenshot "+name, chromedp.CaptureScreenshot())
		cfg, err := png.DecodeConfig(bytes.NewReader(img))
		if err != nil || cfg.Width != 1280 || cfg.Height < 800 {
			t.Fatalf("%s: not a page-sized PNG (%v, %dx%d)", name, err, cfg.Width, cfg.Height)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), img, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b.open(env.URL + "/ui/signin")
	shoot("signin", "/ui/signin")
	b.signIn(kbtest.AdminToken)
	shoot("overview", "/ui/")
	shoot("keys", "/ui/keys")
	shoot("key", "/ui/keys/"+seeded.Active)
	shoot("runs", "/ui/runs")
	shoot("run", "/ui/run?label="+url.QueryEscape(seeded.Runaway))
	shoot("audit", "/ui/audit")
	shoot("reports", "/ui/reports")
	shoot("webhooks", "/ui/webhooks")
	// A phone's width: the side bar becomes a top bar, tables scroll.
	b.do("narrow viewport", chromedp.EmulateViewport(390, 844))
	b.open(env.URL + "/ui/")
	b.do("settle", chromedp.Sleep(200*time.Millisecond))
	img := run(b, "screenshot narrow", chromedp.CaptureScreenshot())
	if err := os.WriteFile(filepath.Join(dir, "overview-narrow.png"), img, 0o644); err != nil {
		t.Fatal(err)
	}
	b.noDialogs()
	b.noProblems()
}
