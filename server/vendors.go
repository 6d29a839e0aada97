package server

import (
	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
	"github.com/keybrake/keybrake/vendors/stripe"
)

// VendorConfig holds each vendor's real credential, upstream base URL and
// the prices calls are charged at. A vendor without a credential is still
// routed, but refuses every call (vendor_not_configured).
type VendorConfig struct {
	StripeSecretKey string
	StripeBaseURL   string // default https://api.stripe.com
	// FX prices non-USD currencies; nil means USD only.
	FX *pricing.FX
}

// buildVendors constructs the vendors the proxy serves.
func buildVendors(vc VendorConfig) ([]keybrake.Vendor, error) {
	fx := vc.FX
	if fx == nil {
		fx = pricing.DefaultFX()
	}
	sv, err := stripe.New(vc.StripeBaseURL, vc.StripeSecretKey, fx)
	if err != nil {
		return nil, err
	}
	return []keybrake.Vendor{sv}, nil
}
