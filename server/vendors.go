package server

import (
	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
	"github.com/keybrake/keybrake/vendors/resend"
	"github.com/keybrake/keybrake/vendors/stripe"
	"github.com/keybrake/keybrake/vendors/twilio"
)

// VendorConfig holds each vendor's real credential, upstream base URL and
// the prices calls are charged at. A vendor without a credential is still
// routed, but refuses every call (vendor_not_configured), and keys cannot
// be issued for it.
type VendorConfig struct {
	StripeSecretKey string
	StripeBaseURL   string // default https://api.stripe.com

	TwilioAccountSID string
	TwilioAuthToken  string
	TwilioBaseURL    string // default https://api.twilio.com

	ResendAPIKey  string
	ResendBaseURL string // default https://api.resend.com

	// Prices is the effective price table (built-in defaults overridden by
	// a pricing file); nil means the built-in defaults.
	Prices *pricing.Table
	// FX, when set, replaces Prices.FX (callers that only set rates).
	FX *pricing.FX
}

// Table returns the effective price table: Prices (or the defaults) with
// FX applied.
func (vc VendorConfig) Table() *pricing.Table {
	t := vc.Prices
	if t == nil {
		t = pricing.Default()
	} else {
		t = t.Clone()
	}
	if vc.FX != nil {
		t.FX = vc.FX
	}
	return t
}

// buildVendors constructs the vendors the proxy serves: Stripe, Twilio and
// Resend, each at /{name}/… and at its own root paths, with the pricing
// file laid over their catalogues.
func buildVendors(vc VendorConfig) ([]keybrake.Vendor, error) {
	return BuildVendors(vc, vc.Table())
}

// BuildVendors constructs the vendors with a price table applied: `serve`
// and `keybrake pricing` build the same catalogues.
func BuildVendors(vc VendorConfig, t *pricing.Table) ([]keybrake.Vendor, error) {
	sv, err := stripe.New(vc.StripeBaseURL, vc.StripeSecretKey, t.FX)
	if err != nil {
		return nil, err
	}
	tv, err := twilio.New(twilio.Config{
		BaseURL: vc.TwilioBaseURL, AccountSID: vc.TwilioAccountSID, AuthToken: vc.TwilioAuthToken, FX: t.FX,
	})
	if err != nil {
		return nil, err
	}
	rv, err := resend.New(resend.Config{BaseURL: vc.ResendBaseURL, APIKey: vc.ResendAPIKey})
	if err != nil {
		return nil, err
	}
	if err := t.ApplyTo(sv, tv, rv); err != nil {
		return nil, err
	}
	return []keybrake.Vendor{sv, tv, rv}, nil
}
