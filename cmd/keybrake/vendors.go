package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/keybrake/keybrake/pricing"
	"github.com/keybrake/keybrake/server"
)

// vendorFlags are the vendor settings of `keybrake serve`. Credentials come
// from the environment only.
type vendorFlags struct {
	fxRates []string
}

func addVendorFlags(fl *pflag.FlagSet, v *vendorFlags) {
	fl.StringSliceVar(&v.fxRates, "fx-rate", splitList(os.Getenv("KEYBRAKE_FX_RATES")), "USD price of one unit of a currency, CUR=RATE, repeatable (env KEYBRAKE_FX_RATES=EUR=1.08,GBP=1.27)")
}

// config reads the vendors' credentials from the environment and the
// prices from flags.
func (v *vendorFlags) config() (server.VendorConfig, error) {
	fx := pricing.DefaultFX()
	for _, r := range v.fxRates {
		if err := fx.ParseFXList(r); err != nil {
			return server.VendorConfig{}, fmt.Errorf("--fx-rate: %w", err)
		}
	}
	return server.VendorConfig{
		StripeSecretKey: os.Getenv("KEYBRAKE_STRIPE_SECRET_KEY"),
		StripeBaseURL:   os.Getenv("KEYBRAKE_STRIPE_BASE_URL"),
		FX:              fx,
	}, nil
}

// describeVendors says which vendors have a credential, for the start-up
// log line (never the credential itself).
func describeVendors(vc server.VendorConfig) string {
	var parts []string
	if vc.StripeSecretKey != "" {
		parts = append(parts, "stripe")
	} else {
		parts = append(parts, "stripe(unconfigured)")
	}
	return strings.Join(parts, ",")
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}
