package demo

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/sandbox"
	"github.com/keybrake/keybrake/server"
)

// uiDemo is what `demo --ui` adds: Twilio and Resend sandboxes, a store
// clock the history can move back, and two webhook receivers (one up, one
// down) so the dashboard's webhook page has deliveries to show.
type uiDemo struct {
	offset      atomic.Int64
	servers     []*httptest.Server
	hookURL     string
	downHookURL string
}

const (
	sandboxTwilioSID   = "ACdemo0000000000000000000000000000"
	sandboxTwilioToken = "demoTwilioSandboxToken0123456789"
	sandboxResendKey   = "re_demo_sandbox_key"
)

func startUIDemo(cfg *server.Config) (*uiDemo, error) {
	u := &uiDemo{}
	serve := func(h http.Handler) string {
		s := httptest.NewServer(h)
		u.servers = append(u.servers, s)
		return s.URL
	}
	cfg.Vendors.TwilioAccountSID, cfg.Vendors.TwilioAuthToken = sandboxTwilioSID, sandboxTwilioToken
	cfg.Vendors.TwilioBaseURL = serve(sandbox.NewTwilio(sandboxTwilioSID, sandboxTwilioToken))
	cfg.Vendors.ResendAPIKey = sandboxResendKey
	cfg.Vendors.ResendBaseURL = serve(sandbox.NewResend(sandboxResendKey))
	u.hookURL = serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })) + "/keybrake"
	u.downHookURL = serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "receiver down for maintenance", http.StatusServiceUnavailable)
	})) + "/alerts"
	cfg.Clock = func() time.Time { return time.Now().Add(time.Duration(u.offset.Load())) }
	cfg.Observe.WebhookPoll = 200 * time.Millisecond
	return u, nil
}

func (u *uiDemo) target(base string, admin *client.Client) Target {
	return Target{URL: base, Admin: admin, SetClock: func(d time.Duration) { u.offset.Store(int64(d)) },
		WebhookURL: u.hookURL, DownWebhookURL: u.downHookURL}
}

func (u *uiDemo) close() {
	for _, s := range u.servers {
		s.Close()
	}
}
