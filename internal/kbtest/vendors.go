package kbtest

import (
	"net/http/httptest"
	"testing"

	"github.com/keybrake/keybrake/internal/sandbox"
	"github.com/keybrake/keybrake/pricing"
	"github.com/keybrake/keybrake/server"
)

// Credentials of the Twilio and Resend sandboxes; like StripeSecret they are
// canaries that must never show up in a log or a client answer.
const (
	TwilioAccountSID = "ACcanary00000000000000000000000001"
	TwilioAuthToken  = "CANARYtwilioTOKEN0123456789abcdef"
	ResendAPIKey     = "re_CANARYresendKEY0123456789"
)

// Fakes are sandbox Twilio and Resend upstreams on local ports, counting
// every request they receive.
type Fakes struct {
	Twilio       *sandbox.Twilio
	TwilioServer *httptest.Server
	Resend       *sandbox.Resend
	ResendServer *httptest.Server
	// Prices, when set, replaces the built-in price table.
	Prices *pricing.Table
}

// StartFakes starts both sandboxes and stops them when t ends.
func StartFakes(t testing.TB) *Fakes {
	t.Helper()
	f := &Fakes{Twilio: sandbox.NewTwilio(TwilioAccountSID, TwilioAuthToken), Resend: sandbox.NewResend(ResendAPIKey)}
	f.TwilioServer = httptest.NewServer(f.Twilio)
	t.Cleanup(f.TwilioServer.Close)
	f.ResendServer = httptest.NewServer(f.Resend)
	t.Cleanup(f.ResendServer.Close)
	return f
}

// Configure points a server's Twilio and Resend at the sandboxes, with
// their credentials (and f.Prices, when set). Use it as Options.Configure,
// or call it from one.
func (f *Fakes) Configure(cfg *server.Config) {
	cfg.Vendors.TwilioAccountSID = TwilioAccountSID
	cfg.Vendors.TwilioAuthToken = TwilioAuthToken
	cfg.Vendors.TwilioBaseURL = f.TwilioServer.URL
	cfg.Vendors.ResendAPIKey = ResendAPIKey
	cfg.Vendors.ResendBaseURL = f.ResendServer.URL
	if f.Prices != nil {
		cfg.Vendors.Prices = f.Prices
	}
}

// StartWithFakes runs Keybrake with the sandbox Stripe, Twilio and Resend
// behind it. configure, when not nil, runs after the fakes are wired.
func StartWithFakes(t testing.TB, configure func(*server.Config)) (*Env, *Fakes) {
	t.Helper()
	f := StartFakes(t)
	env := Start(t, Options{Configure: func(cfg *server.Config) {
		f.Configure(cfg)
		if configure != nil {
			configure(cfg)
		}
	}})
	return env, f
}
