package main

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/keybrake/keybrake/pricing"
	"github.com/keybrake/keybrake/server"
)

// vendorFlags are the vendor settings of `keybrake serve` and `keybrake
// pricing`. Credentials come from the environment only:
//
//	KEYBRAKE_STRIPE_SECRET_KEY, KEYBRAKE_STRIPE_BASE_URL
//	KEYBRAKE_TWILIO_ACCOUNT_SID, KEYBRAKE_TWILIO_AUTH_TOKEN, KEYBRAKE_TWILIO_BASE_URL
//	KEYBRAKE_RESEND_API_KEY, KEYBRAKE_RESEND_BASE_URL
type vendorFlags struct {
	pricingFile string
	fxRates     []string
}

func addVendorFlags(fl *pflag.FlagSet, v *vendorFlags) {
	fl.StringVar(&v.pricingFile, "pricing", os.Getenv("KEYBRAKE_PRICING_FILE"), "a pricing `FILE` (YAML or JSON) overriding the built-in prices; keybrake pricing prints the result (env KEYBRAKE_PRICING_FILE)")
	fl.StringSliceVar(&v.fxRates, "fx-rate", splitList(os.Getenv("KEYBRAKE_FX_RATES")), "USD price of one unit of a currency, as `CUR=RATE`; repeatable; overrides the pricing file's fx (env KEYBRAKE_FX_RATES=EUR=1.08,GBP=1.27)")
}

// prices builds the effective price table: built-in defaults, then the
// pricing file, then --fx-rate. A malformed file is an error naming its
// line and field.
func (v *vendorFlags) prices() (*pricing.Table, error) {
	t := pricing.Default()
	if v.pricingFile != "" {
		var err error
		if t, err = pricing.Load(v.pricingFile); err != nil {
			return nil, err
		}
	}
	for _, r := range v.fxRates {
		if err := t.FX.ParseFXList(r); err != nil {
			return nil, fmt.Errorf("--fx-rate: %w", err)
		}
	}
	return t, nil
}

// config reads the vendors' credentials from the environment and the
// prices from flags and the pricing file.
func (v *vendorFlags) config() (server.VendorConfig, error) {
	t, err := v.prices()
	if err != nil {
		return server.VendorConfig{}, err
	}
	return server.VendorConfig{
		StripeSecretKey:  os.Getenv("KEYBRAKE_STRIPE_SECRET_KEY"),
		StripeBaseURL:    os.Getenv("KEYBRAKE_STRIPE_BASE_URL"),
		TwilioAccountSID: os.Getenv("KEYBRAKE_TWILIO_ACCOUNT_SID"),
		TwilioAuthToken:  os.Getenv("KEYBRAKE_TWILIO_AUTH_TOKEN"),
		TwilioBaseURL:    os.Getenv("KEYBRAKE_TWILIO_BASE_URL"),
		ResendAPIKey:     os.Getenv("KEYBRAKE_RESEND_API_KEY"),
		ResendBaseURL:    os.Getenv("KEYBRAKE_RESEND_BASE_URL"),
		Prices:           t,
	}, nil
}

// describeVendors says which vendors have a credential and where prices
// come from, for the start-up log line (never a credential itself).
func describeVendors(vc server.VendorConfig, sandboxed []string) string {
	var parts []string
	add := func(name string, configured bool) {
		switch {
		case slices.Contains(sandboxed, name):
			parts = append(parts, name+"(sandbox)")
		case configured:
			parts = append(parts, name)
		default:
			parts = append(parts, name+"(unconfigured)")
		}
	}
	add("stripe", vc.StripeSecretKey != "")
	add("twilio", vc.TwilioAccountSID != "" && vc.TwilioAuthToken != "")
	add("resend", vc.ResendAPIKey != "")
	s := strings.Join(parts, ",")
	if vc.Prices != nil && vc.Prices.Source != "" {
		s += "; pricing=" + vc.Prices.Source
	}
	return s
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}
