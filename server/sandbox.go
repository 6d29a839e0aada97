package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/keybrake/keybrake/internal/sandbox"
)

// Sandbox mode (`keybrake serve --sandbox`) is the quick start without a
// vendor account: every vendor that has no credential configured is
// answered by a built-in local stand-in (internal/sandbox, the ones the
// demo and the tests use), on a loopback port of its own, with credentials
// Keybrake makes up and holds. It is never the default, and it says so
// everywhere: a warning at start, "sandbox": true in /healthz, and
// Keybrake-Sandbox: true on every answer of a sandboxed vendor. A vendor
// with a credential configured stays real.
//
// The made-up credentials are shaped so they can never pass for real ones
// (a Twilio account SID is AC and 32 lowercase hex digits; this one is
// upper case and spells what it is), and they are only ever sent to the
// loopback sandbox: its base URL replaces any configured one.
const (
	SandboxStripeSecret = "sk_test_KEYBRAKE_LOCAL_SANDBOX_not_a_stripe_key"
	SandboxTwilioSID    = "ACKEYBRAKELOCALSANDBOXNOTATWILIOSID"
	SandboxTwilioToken  = "KEYBRAKELOCALSANDBOXNOTATWILIOTOKEN"
	SandboxResendKey    = "re_KEYBRAKE_LOCAL_SANDBOX_not_a_resend_key"
)

// sandboxes are the stand-ins a --sandbox server runs.
type sandboxes struct {
	vendors  []string // the vendors they answer for, in order
	servers  []*http.Server
	counters map[string]interface{ Requests() int }
}

// startSandboxes points every vendor of vc without a credential at a local
// sandbox it starts, and returns them (nil when sandbox mode is off).
func startSandboxes(vc *VendorConfig, logger *slog.Logger) (*sandboxes, error) {
	sb := &sandboxes{counters: map[string]interface{ Requests() int }{}}
	serve := func(name string, h interface {
		http.Handler
		Requests() int
		KeepAtMost(n int)
	}) (string, error) {
		h.KeepAtMost(1000) // what a test reads; a long-running sandbox keeps no more
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("sandbox stopped", "vendor", name, "err", err.Error())
			}
		}()
		sb.vendors = append(sb.vendors, name)
		sb.servers = append(sb.servers, srv)
		sb.counters[name] = h
		return "http://" + ln.Addr().String(), nil
	}
	var err error
	if vc.StripeSecretKey == "" {
		vc.StripeSecretKey = SandboxStripeSecret
		if vc.StripeBaseURL, err = serve("stripe", sandbox.NewStripe(SandboxStripeSecret)); err != nil {
			return nil, errors.Join(err, sb.close(context.Background()))
		}
	}
	if vc.TwilioAccountSID == "" && vc.TwilioAuthToken == "" {
		vc.TwilioAccountSID, vc.TwilioAuthToken = SandboxTwilioSID, SandboxTwilioToken
		if vc.TwilioBaseURL, err = serve("twilio", sandbox.NewTwilio(SandboxTwilioSID, SandboxTwilioToken)); err != nil {
			return nil, errors.Join(err, sb.close(context.Background()))
		}
	}
	if vc.ResendAPIKey == "" {
		vc.ResendAPIKey = SandboxResendKey
		if vc.ResendBaseURL, err = serve("resend", sandbox.NewResend(SandboxResendKey)); err != nil {
			return nil, errors.Join(err, sb.close(context.Background()))
		}
	}
	return sb, nil
}

// close stops the sandboxes (after the proxy drained: calls in flight to
// them settle first).
func (sb *sandboxes) close(ctx context.Context) error {
	if sb == nil {
		return nil
	}
	var errs []error
	for _, srv := range sb.servers {
		errs = append(errs, srv.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// SandboxVendors are the vendors a --sandbox server answers from its local
// sandboxes (none otherwise).
func (s *Server) SandboxVendors() []string {
	if s.sandboxes == nil {
		return nil
	}
	return append([]string(nil), s.sandboxes.vendors...)
}

// SandboxRequests is how many requests the vendor's sandbox received (0
// for a vendor that is not sandboxed): what tests read to show a refusal
// reached nothing.
func (s *Server) SandboxRequests(vendor string) int {
	if s.sandboxes == nil || s.sandboxes.counters[vendor] == nil {
		return 0
	}
	return s.sandboxes.counters[vendor].Requests()
}
