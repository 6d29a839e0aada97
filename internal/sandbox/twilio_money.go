package sandbox

import (
	"encoding/xml"
	"strconv"
	"strings"
	"unicode/utf16"

	"github.com/keybrake/keybrake"
)

// TwilioRates are what the sandbox Twilio charges, by E.164 prefix (the
// longest wins). They stand for Twilio's own prices, so a test can compare
// them with what Keybrake recorded; they are computed here independently of
// Keybrake's pricers.
type TwilioRates struct {
	SMS       map[string]keybrake.Micros // per segment
	MMS       map[string]keybrake.Micros // per message
	Voice     map[string]keybrake.Micros // per minute of one leg
	Unpriced  keybrake.Micros            // any destination not listed, per segment or minute
	Number    keybrake.Micros            // buying a phone number
	Recording keybrake.Micros            // per minute
	AMD       keybrake.Micros            // per call
	Confer    keybrake.Micros            // per participant minute
}

// DefaultTwilioRates are close to Twilio's US and Canada list prices; other
// destinations cost as much as an expensive one.
func DefaultTwilioRates() *TwilioRates {
	return &TwilioRates{
		SMS:       map[string]keybrake.Micros{"+1": 14_500, "+44": 46_300, "+49": 87_200},
		MMS:       map[string]keybrake.Micros{"+1": 30_000},
		Voice:     map[string]keybrake.Micros{"+1": 14_000, "+44": 100_000},
		Unpriced:  500_000,
		Number:    1_150_000,
		Recording: 2_500,
		AMD:       7_500,
		Confer:    1_800,
	}
}

func (s *Twilio) rates() *TwilioRates {
	if s.Rates != nil {
		return s.Rates
	}
	return DefaultTwilioRates()
}

func rate(m map[string]keybrake.Micros, number string, unpriced keybrake.Micros) keybrake.Micros {
	for n := len(number); n > 1; n-- {
		if p, ok := m[number[:n]]; ok {
			return p
		}
	}
	return unpriced
}

// TwilioMove is what one message, call or purchase cost at the sandbox.
type TwilioMove struct {
	Kind string // "sms", "mms", "call", "participant", "number", "redirect"
	Sid  string
	Cost keybrake.Micros
}

// Moved sums what the sandbox Twilio charged, in micro-dollars.
func (s *Twilio) Moved() keybrake.Micros {
	s.mu.Lock()
	defer s.mu.Unlock()
	var total keybrake.Micros
	for _, m := range s.moved {
		total = keybrake.AddCapped(total, m.Cost)
	}
	return total
}

// Moves lists what the sandbox Twilio charged.
func (s *Twilio) Moves() []TwilioMove {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TwilioMove(nil), s.moved...)
}

// smsSegments counts segments the simplest conservative way: GSM-7 only for
// plain printable ASCII (153 per part), otherwise UTF-16 code units (67 per
// part).
func smsSegments(body string) int64 {
	gsm := true
	for _, r := range body {
		if r < 0x20 || r > 0x7e || strings.ContainsRune("`[]{}^\\|~", r) {
			gsm = false
			break
		}
	}
	n, single, part := len(body), 160, 153
	if !gsm {
		n, single, part = len(utf16.Encode([]rune(body))), 70, 67
	}
	if n <= single {
		return 1
	}
	return int64((n + part - 1) / part)
}

// moveMessage charges a message: its segments at the destination's SMS
// rate, or its MMS rate. Call with s.mu held.
func (s *Twilio) moveMessage(sid string, form map[string][]string) {
	rt := s.rates()
	to := first(form, "To")
	if len(form["MediaUrl"]) > 0 || strings.EqualFold(first(form, "SendAsMms"), "true") {
		s.moved = append(s.moved, TwilioMove{Kind: "mms", Sid: sid, Cost: rate(rt.MMS, to, rt.Unpriced)})
		return
	}
	cost := rate(rt.SMS, to, rt.Unpriced) * keybrake.Micros(smsSegments(first(form, "Body")))
	s.moved = append(s.moved, TwilioMove{Kind: "sms", Sid: sid, Cost: cost})
}

func first(form map[string][]string, k string) string {
	if v := form[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// twilioMaxTimeLimit is Twilio's default TimeLimit: 4 hours.
const twilioMaxTimeLimit = 14400

// moveCall charges a call the worst it can cost: every leg it opens (its
// own, each number its TwiML dials) at its destination's rate for its whole
// TimeLimit (Twilio's default of four hours when it names none), plus
// recording and machine detection. Legs the sandbox cannot count
// (conferences, queues, SIP, remote TwiML beyond UrlLegs) make it
// unbounded. Call with s.mu held.
func (s *Twilio) moveCall(sid string, form map[string][]string, participant bool) {
	rt := s.rates()
	limit := twilioMaxTimeLimit
	if v, err := strconv.Atoi(first(form, "TimeLimit")); err == nil && v > 0 {
		limit = v
	}
	minutes := keybrake.Micros((limit + 59) / 60)
	perMinute := rate(rt.Voice, first(form, "To"), rt.Unpriced)
	unbounded := false
	switch {
	case participant:
		perMinute += rt.Confer
		if strings.EqualFold(first(form, "ConferenceRecord"), "true") {
			perMinute += rt.Recording
		}
	case first(form, "Twiml") != "":
		legs, recs, ok := twimlLegs(first(form, "Twiml"))
		unbounded = !ok
		for _, n := range legs {
			perMinute += rate(rt.Voice, n, rt.Unpriced)
		}
		perMinute += rt.Recording * keybrake.Micros(recs)
	default: // Url or ApplicationSid
		if s.UrlLegs < 1 {
			unbounded = true
		}
		perMinute += rt.Unpriced * keybrake.Micros(max(s.UrlLegs-1, 0))
	}
	if strings.EqualFold(first(form, "Record"), "true") {
		perMinute += rt.Recording
	}
	cost := perMinute * minutes
	if md := first(form, "MachineDetection"); md != "" {
		cost += rt.AMD
	}
	if unbounded {
		cost = keybrake.Micros(Unbounded)
	}
	kind := "call"
	if participant {
		kind = "participant"
	}
	s.moved = append(s.moved, TwilioMove{Kind: kind, Sid: sid, Cost: cost})
}

// twimlLegs finds the numbers a TwiML document dials and its recordings;
// ok is false for legs it cannot count.
func twimlLegs(doc string) (numbers []string, recordings int, ok bool) {
	d := xml.NewDecoder(strings.NewReader(doc))
	var inDial, inNumber bool
	var text strings.Builder
	for {
		t, err := d.Token()
		if err != nil {
			return numbers, recordings, err.Error() == "EOF"
		}
		switch x := t.(type) {
		case xml.StartElement:
			switch strings.ToLower(x.Name.Local) {
			case "dial":
				inDial = true
				text.Reset()
				for _, a := range x.Attr {
					if a.Name.Local == "record" && a.Value != "do-not-record" {
						recordings++
					}
				}
			case "number":
				inNumber = true
				text.Reset()
			case "record":
				recordings++
			case "conference", "queue", "enqueue", "sip", "client", "redirect", "connect", "application":
				return nil, 0, false
			}
		case xml.CharData:
			if inDial {
				text.Write(x)
			}
		case xml.EndElement:
			switch strings.ToLower(x.Name.Local) {
			case "number":
				numbers = append(numbers, strings.TrimSpace(text.String()))
				text.Reset()
				inNumber = false
			case "dial":
				if n := strings.TrimSpace(text.String()); n != "" && !inNumber {
					numbers = append(numbers, n)
				}
				inDial = false
			}
		}
	}
}
