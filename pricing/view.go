package pricing

import (
	"github.com/keybrake/keybrake"
)

// View is the effective price table as `keybrake pricing --json` prints it:
// every amount a decimal string of dollars.
type View struct {
	Source string            `json:"source"` // pricing file, or "built-in"
	FX     map[string]string `json:"fx_usd_per_unit"`
	Stripe VendorView        `json:"stripe"`
	Twilio TwilioView        `json:"twilio"`
	Resend ResendView        `json:"resend"`
}

// VendorView lists a vendor's fixed endpoint prices.
type VendorView struct {
	Endpoints map[string]keybrake.Micros `json:"endpoints"`
}

// TwilioView is Twilio's part of the table.
type TwilioView struct {
	SMSPerSegment CountryView                `json:"sms_per_segment"`
	MMSPerMessage CountryView                `json:"mms_per_message"`
	CallMax       keybrake.Micros            `json:"call_max"`
	Endpoints     map[string]keybrake.Micros `json:"endpoints"`
}

// CountryView is a destination price list; Default is absent when
// destinations without a price are refused.
type CountryView struct {
	Countries map[string]keybrake.Micros `json:"countries"`
	Default   *keybrake.Micros           `json:"default"`
}

// ResendView is Resend's part of the table.
type ResendView struct {
	PerEmail  keybrake.Micros            `json:"per_email"`
	Endpoints map[string]keybrake.Micros `json:"endpoints"`
}

// View returns the table for printing.
func (t *Table) View() View {
	v := View{Source: t.Source, FX: map[string]string{}}
	if v.Source == "" {
		v.Source = "built-in"
	}
	for _, c := range t.FX.Currencies() {
		v.FX[c] = t.FX.RateString(c)
	}
	v.Stripe.Endpoints = endpointsView(t.Stripe.Endpoints)
	v.Twilio = TwilioView{
		SMSPerSegment: countryView(t.Twilio.SMS),
		MMSPerMessage: countryView(t.Twilio.MMS),
		CallMax:       t.Twilio.CallMax,
		Endpoints:     endpointsView(t.Twilio.Endpoints),
	}
	v.Resend = ResendView{PerEmail: t.Resend.PerEmail, Endpoints: endpointsView(t.Resend.Endpoints)}
	return v
}

func endpointsView(eps Endpoints) map[string]keybrake.Micros {
	m := map[string]keybrake.Micros{}
	for _, ep := range eps {
		m[ep.Rule.String()] = ep.Price
	}
	return m
}

func countryView(c CountryPrices) CountryView {
	v := CountryView{Countries: map[string]keybrake.Micros{}}
	for k, p := range c.ByKey {
		v.Countries[k] = p
	}
	if c.HasDefault {
		d := c.Default
		v.Default = &d
	}
	return v
}
