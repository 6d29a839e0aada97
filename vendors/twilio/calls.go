package twilio

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
)

// maxTimeLimit is the longest TimeLimit Twilio accepts (24 hours on some
// accounts; the default is four).
const maxTimeLimit = 24 * time.Hour

// voice is what outbound calls and conference participants cost: a rate per
// minute for every leg, surcharges, and the TimeLimit Keybrake sets on a
// call that names none. Both operations read the same settings, written
// under operations.twilio.calls.create.
type voice struct {
	PerMinute           pricing.CountryPrices
	DefaultTimeLimit    time.Duration
	RecordingPerMinute  keybrake.Micros
	AMDPerCall          keybrake.Micros
	ConferencePerMinute keybrake.Micros
	// RemoteLegs, when set, is the most legs an operator vouches a call
	// driven by a Url or ApplicationSid (TwiML Keybrake cannot see) opens,
	// its own included; each leg beyond the first costs RemoteLegPerMinute.
	// Unset, such calls are refused.
	RemoteLegs         int
	RemoteLegPerMinute keybrake.Micros
}

func defaultVoice() *voice {
	return &voice{
		PerMinute:           pricing.Countries("US", defaultVoiceNorthAmerica, "CA", defaultVoiceNorthAmerica),
		DefaultTimeLimit:    defaultTimeLimit,
		RecordingPerMinute:  pricing.MustUSD(defaultRecordingPerMinute),
		AMDPerCall:          pricing.MustUSD(defaultAMDPerCall),
		ConferencePerMinute: pricing.MustUSD(defaultConferencePerMinute),
	}
}

// callPricer prices calls.create and conference participants as a bounded
// duration: (rate of every leg + recording) × the call's maximum duration in
// whole minutes, plus per-call surcharges. A request that names TimeLimit is
// priced for it exactly; one that names none gets a TimeLimit Keybrake sets
// (the configured default, cut to the key's remaining budget in whole
// minutes, at least one) and is forwarded with it.
type callPricer struct {
	v           *voice
	participant bool
}

func (p *callPricer) Params() pricing.Params {
	if p.participant {
		return nil // priced with calls.create's settings
	}
	return pricing.Params{
		{Name: "per_minute", Doc: "per-minute rate of one call leg by destination", Value: &p.v.PerMinute},
		{Name: "default_time_limit", Doc: "the TimeLimit Keybrake sets on a call that names none (cut to the key's budget)", Value: &p.v.DefaultTimeLimit},
		{Name: "recording_per_minute", Doc: "added per minute for each recording (Record, <Record>, <Dial record>)", Value: &p.v.RecordingPerMinute},
		{Name: "amd_per_call", Doc: "added once for answering-machine detection", Value: &p.v.AMDPerCall},
		{Name: "conference_per_minute", Doc: "added per minute for a conference participant", Value: &p.v.ConferencePerMinute},
		{Name: "remote_twiml", Doc: "allows calls driven by Url or ApplicationSid", Value: pricing.Params{
			{Name: "max_legs", Doc: "the most legs such a call opens, its own included (0: refused)", Value: &p.v.RemoteLegs},
			{Name: "extra_leg_per_minute", Doc: "per-minute rate of each leg beyond the first", Value: &p.v.RemoteLegPerMinute},
		}},
	}
}

func (p *callPricer) Describe() string {
	s := "per-minute rate of each leg (" + p.v.PerMinute.String() + ") × TimeLimit"
	if p.participant {
		s += " + conference " + p.v.ConferencePerMinute.String() + "/min (calls.create's settings)"
	} else {
		s += fmt.Sprintf(" (default %d min, cut to the key's budget)", minutes(p.v.DefaultTimeLimit))
	}
	return s
}

// The parameters a call or participant may carry. Anything else is refused:
// Twilio adds parameters, and one Keybrake does not know may cost money it
// did not price. Twiml, Url and ApplicationSid are checked separately.
var (
	callParams = set("To", "From", "Url", "Method", "Twiml", "ApplicationSid", "StatusCallback", "StatusCallbackEvent",
		"StatusCallbackMethod", "SendDigits", "Timeout", "Record", "RecordingChannels", "RecordingStatusCallback",
		"RecordingStatusCallbackMethod", "RecordingStatusCallbackEvent", "RecordingTrack", "SipAuthUsername", "SipAuthPassword",
		"MachineDetection", "MachineDetectionTimeout", "MachineDetectionSpeechThreshold", "MachineDetectionSpeechEndThreshold",
		"MachineDetectionSilenceTimeout", "AsyncAmd", "AsyncAmdStatusCallback", "AsyncAmdStatusCallbackMethod", "Trim",
		"CallerId", "CallReason", "CallToken", "Byoc", "TimeLimit", "FallbackUrl", "FallbackMethod")
	participantParams = set("To", "From", "StatusCallback", "StatusCallbackMethod", "StatusCallbackEvent", "Label", "Timeout",
		"Record", "Muted", "Beep", "StartConferenceOnEnter", "EndConferenceOnExit", "WaitUrl", "WaitMethod", "EarlyMedia",
		"MaxParticipants", "ConferenceRecord", "ConferenceTrim", "ConferenceStatusCallback", "ConferenceStatusCallbackMethod",
		"ConferenceStatusCallbackEvent", "RecordingChannels", "RecordingStatusCallback", "RecordingStatusCallbackMethod",
		"SipAuthUsername", "SipAuthPassword", "Region", "ConferenceRecordingStatusCallback", "ConferenceRecordingStatusCallbackMethod",
		"RecordingStatusCallbackEvent", "ConferenceRecordingStatusCallbackEvent", "Coaching", "CallSidToCoach", "JitterBufferSize",
		"Byoc", "CallerId", "CallReason", "RecordingTrack", "TimeLimit", "MachineDetection", "MachineDetectionTimeout",
		"MachineDetectionSpeechThreshold", "MachineDetectionSpeechEndThreshold", "MachineDetectionSilenceTimeout",
		"AmdStatusCallback", "AmdStatusCallbackMethod", "Trim", "CallToken")
	// repeatable parameters (Twilio takes a list)
	repeatable = set("StatusCallbackEvent", "RecordingStatusCallbackEvent", "ConferenceStatusCallbackEvent",
		"ConferenceRecordingStatusCallbackEvent")
)

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

func (p *callPricer) Price(_ context.Context, c *keybrake.PriceCall) (*keybrake.Quote, error) {
	form := c.Form
	known := callParams
	if p.participant {
		known = participantParams
	}
	for k, vals := range form {
		if !known[k] {
			return nil, unpriceable("parameter %q is not one Keybrake prices for %s; it is refused", truncate(k), c.Op.Name)
		}
		if len(vals) > 1 && !repeatable[k] {
			return nil, unpriceable("%s is given more than once", k)
		}
	}
	to, err := destination(form, "To")
	if err != nil {
		return nil, err
	}
	rate, ok := p.rate(to)
	if !ok {
		return nil, unpriceable("no voice price for %s (%s); add operations.twilio.calls.create.per_minute.countries.%s (or .default) to the pricing file",
			maskNumber(to), countryName(to), countryName(to))
	}
	perMinute := rate
	var base keybrake.Micros
	if p.participant {
		perMinute = keybrake.AddCapped(perMinute, p.v.ConferencePerMinute)
		if truthy(form.Get("ConferenceRecord")) {
			perMinute = keybrake.AddCapped(perMinute, p.v.RecordingPerMinute)
		}
	} else {
		legs, err := p.legs(form)
		if err != nil {
			return nil, err
		}
		perMinute = keybrake.AddCapped(perMinute, legs.perMinute)
		if legs.amd {
			base = keybrake.AddCapped(base, p.v.AMDPerCall)
		}
	}
	if truthy(form.Get("Record")) {
		perMinute = keybrake.AddCapped(perMinute, p.v.RecordingPerMinute)
	}
	if md := form.Get("MachineDetection"); md != "" && !strings.EqualFold(md, "none") {
		base = keybrake.AddCapped(base, p.v.AMDPerCall)
	}

	m := pricing.Minutes{Base: base, PerMinute: perMinute, Max: minutes(min(p.v.DefaultTimeLimit, maxTimeLimit))}
	if s, ok := form["TimeLimit"]; ok {
		secs, err := strconv.Atoi(s[0])
		if err != nil || secs < 1 || secs > int(maxTimeLimit/time.Second) {
			return nil, unpriceable("TimeLimit must be whole seconds from 1 to %d, got %q", int(maxTimeLimit/time.Second), truncate(s[0]))
		}
		m.Fixed = (secs + 59) / 60
		return m.Quote(), nil
	}
	q := m.Quote()
	body := c.Body
	q.Finalize = func(reserved keybrake.Micros) ([]byte, error) {
		return withTimeLimit(body, m.Reserved(reserved)*60), nil
	}
	return q, nil
}

func (p *callPricer) rate(to string) (keybrake.Micros, bool) {
	r, _, ok := p.v.PerMinute.Lookup(to)
	return r, ok
}

// legs works out what the call's instructions add per minute: the legs and
// recordings of inline TwiML, or the operator's vouched-for bound on remote
// TwiML.
type callLegs struct {
	perMinute keybrake.Micros
	amd       bool
}

func (p *callPricer) legs(form url.Values) (callLegs, error) {
	var out callLegs
	n := 0
	for _, k := range []string{"Twiml", "Url", "ApplicationSid"} {
		if len(form[k]) > 0 {
			n++
		}
	}
	if n != 1 {
		return out, unpriceable("a call names exactly one of Twiml, Url or ApplicationSid")
	}
	if tw := form["Twiml"]; len(tw) == 1 {
		if len(form["FallbackUrl"]) > 0 {
			return out, unpriceable("FallbackUrl runs TwiML Keybrake cannot see when the inline TwiML fails; it is refused with Twiml")
		}
		plan, err := ReadTwiML(tw[0])
		if err != nil {
			return out, err
		}
		for _, number := range plan.Dial {
			rate, ok := p.rate(number)
			if !ok {
				return out, unpriceable("no voice price for the <Dial> number %s (%s); add operations.twilio.calls.create.per_minute.countries.%s to the pricing file",
					maskNumber(number), countryName(number), countryName(number))
			}
			out.perMinute = keybrake.AddCapped(out.perMinute, rate)
		}
		out.perMinute = keybrake.AddCapped(out.perMinute, pricing.Mul(p.v.RecordingPerMinute, int64(plan.Recordings)))
		out.amd = plan.AMD
		return out, nil
	}
	if p.v.RemoteLegs < 1 {
		return out, unpriceable("a call driven by Url or ApplicationSid runs TwiML Keybrake cannot see, so it cannot bound its legs; send Twiml, " +
			"or vouch for a bound with operations.twilio.calls.create.remote_twiml.max_legs (and extra_leg_per_minute) in the pricing file")
	}
	out.perMinute = pricing.Mul(p.v.RemoteLegPerMinute, int64(p.v.RemoteLegs-1))
	return out, nil
}

// minutes rounds a duration up to whole minutes, at least one.
func minutes(d time.Duration) int {
	return max(1, int((d+time.Minute-1)/time.Minute))
}

func truthy(s string) bool { return strings.EqualFold(s, "true") }

// withTimeLimit appends TimeLimit to a form body that has none, keeping
// every other byte as the client sent it.
func withTimeLimit(body []byte, seconds int) []byte {
	out := append([]byte(nil), body...)
	if len(out) > 0 {
		out = append(out, '&')
	}
	return append(out, "TimeLimit="+strconv.Itoa(seconds)...)
}
