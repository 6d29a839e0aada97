package twilio

import (
	"encoding/xml"
	"io"
	"strings"

	"github.com/keybrake/keybrake/pricing"
)

// TwiMLPlan is what inline TwiML commits a call to, beyond its own leg.
type TwiMLPlan struct {
	Dial       []string // numbers dialled as second legs (at most one)
	Recordings int      // <Record> verbs and recorded <Dial>s
	AMD        bool     // a <Number> with machine detection
}

// Bounds of inline TwiML: Twilio's own limit on the Twiml parameter, and a
// nesting depth no legitimate document reaches.
const (
	maxTwiML      = 4000
	maxTwiMLDepth = 8
)

// The verbs a priced call may use, and what may nest in them. Anything else
// (<Conference>, <Enqueue>, <Redirect>, <Connect>, <Sip>, <Client>, <Pay>,
// <Start>, …) is refused: it opens legs or costs Keybrake cannot bound.
var (
	topVerbs    = set("Say", "Play", "Pause", "Gather", "Hangup", "Reject", "Record", "Dial")
	gatherNests = set("Say", "Play", "Pause")
	// SSML inside <Say> only changes how text is spoken.
	ssml = set("break", "emphasis", "lang", "p", "phoneme", "prosody", "s", "say-as", "sub", "w",
		"effect", "domain", "auto-breaths", "breath", "whispered")
)

// ReadTwiML reads inline TwiML and says what it commits the call to: at most
// one <Dial> with exactly one number (a second leg, priced at that number's
// rate for the call's duration) and the recordings it makes. It refuses what
// Keybrake cannot bound: more numbers, conferences, queues, SIP and client
// legs, redirects, and any action URL (which would fetch TwiML Keybrake
// never sees). Verbs are matched exactly, as Twilio reads them.
func ReadTwiML(s string) (*TwiMLPlan, error) {
	if len(s) > maxTwiML {
		return nil, unpriceable("Twiml is longer than %d characters", maxTwiML)
	}
	d := xml.NewDecoder(strings.NewReader(s))
	d.Strict = true
	r := &twimlReader{d: d, plan: &TwiMLPlan{}}
	if err := r.document(); err != nil {
		return nil, err
	}
	if len(r.plan.Dial) > 0 && r.loops {
		return nil, unpriceable("<Gather> or <Record> with <Dial> can run the document again and dial again; Keybrake refuses that combination")
	}
	return r.plan, nil
}

type twimlReader struct {
	d     *xml.Decoder
	plan  *TwiMLPlan
	dials int
	loops bool // a verb that may re-request the document
}

func bad(format string, args ...any) error {
	return unpriceable("Twiml: "+format, args...)
}

func (r *twimlReader) token() (xml.Token, error) {
	t, err := r.d.Token()
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		return nil, bad("not well-formed XML: %v", err)
	}
	switch x := t.(type) {
	case xml.Directive:
		return nil, bad("<!DOCTYPE> and other directives are not accepted")
	case xml.ProcInst:
		if x.Target != "xml" {
			return nil, bad("processing instructions are not accepted")
		}
	}
	return t, nil
}

func (r *twimlReader) document() error {
	seenRoot := false
	for {
		t, err := r.token()
		if err == io.EOF {
			if !seenRoot {
				return bad("no <Response>")
			}
			return nil
		}
		if err != nil {
			return err
		}
		switch x := t.(type) {
		case xml.StartElement:
			if seenRoot || x.Name.Local != "Response" || x.Name.Space != "" {
				return bad("the document is one <Response>")
			}
			seenRoot = true
			if err := r.children(x, topVerbs, false, 1); err != nil {
				return err
			}
		case xml.CharData:
			if strings.TrimSpace(string(x)) != "" {
				return bad("text outside <Response>")
			}
		}
	}
}

// children reads the content of parent up to its end element; speech is
// true inside <Say>, where only SSML may nest.
func (r *twimlReader) children(parent xml.StartElement, allowed map[string]bool, speech bool, depth int) error {
	if depth > maxTwiMLDepth {
		return bad("nested deeper than %d elements", maxTwiMLDepth)
	}
	for {
		t, err := r.token()
		if err == io.EOF {
			return bad("<%s> is not closed", parent.Name.Local)
		}
		if err != nil {
			return err
		}
		switch x := t.(type) {
		case xml.EndElement:
			return nil
		case xml.CharData:
			if parent.Name.Local == "Response" && strings.TrimSpace(string(x)) != "" {
				return bad("text directly in <Response>")
			}
		case xml.StartElement:
			if err := r.element(x, allowed, speech, depth+1); err != nil {
				return err
			}
		}
	}
}

func (r *twimlReader) element(el xml.StartElement, allowed map[string]bool, speech bool, depth int) error {
	name := el.Name.Local
	if speech {
		if !ssml[name] {
			return bad("<%s> inside <Say> is not SSML", truncate(name))
		}
		return r.children(el, nil, true, depth)
	}
	if el.Name.Space != "" || !allowed[name] {
		return bad("<%s> is refused: Keybrake cannot bound the legs or costs it opens (it prices Say, Play, Pause, Gather, Hangup, Reject, Record and one <Dial> with one <Number>)", truncate(name))
	}
	if err := noActions(el); err != nil {
		return err
	}
	switch name {
	case "Say":
		return r.children(el, nil, true, depth)
	case "Play", "Pause", "Hangup", "Reject":
		return r.leaf(el)
	case "Gather":
		if in := attr(el, "input"); in != "" && in != "dtmf" {
			return bad("<Gather input=%q>: only dtmf is priced (speech recognition costs extra)", truncate(in))
		}
		r.loops = true
		return r.children(el, gatherNests, false, depth)
	case "Record":
		if t := attr(el, "transcribe"); strings.EqualFold(t, "true") || attr(el, "transcribeCallback") != "" {
			return bad("<Record transcribe> costs extra and is refused")
		}
		r.plan.Recordings++
		r.loops = true
		return r.leaf(el)
	case "Dial":
		return r.dial(el, depth)
	}
	return bad("<%s> is refused", name)
}

// noActions refuses attributes that make Twilio fetch more TwiML: a verb's
// action, a <Dial>'s referUrl, a <Number>'s url.
func noActions(el xml.StartElement) error {
	for _, a := range el.Attr {
		switch strings.ToLower(a.Name.Local) {
		case "action", "referurl", "url":
			return bad("<%s %s=…> would run TwiML Keybrake cannot see; it is refused", el.Name.Local, a.Name.Local)
		}
	}
	return nil
}

func attr(el xml.StartElement, name string) string {
	for _, a := range el.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// leaf reads an element that may hold text but no elements.
func (r *twimlReader) leaf(el xml.StartElement) error {
	for {
		t, err := r.token()
		if err != nil {
			if err == io.EOF {
				return bad("<%s> is not closed", el.Name.Local)
			}
			return err
		}
		switch t.(type) {
		case xml.EndElement:
			return nil
		case xml.StartElement:
			return bad("<%s> holds no elements", el.Name.Local)
		}
	}
}

// dial reads a <Dial>: exactly one number, as <Number> or as text.
func (r *twimlReader) dial(el xml.StartElement, depth int) error {
	r.dials++
	if r.dials > 1 {
		return bad("more than one <Dial>")
	}
	if rec := attr(el, "record"); rec != "" && rec != "do-not-record" {
		r.plan.Recordings++
	}
	var text strings.Builder
	var numbers []string
	for {
		t, err := r.token()
		if err != nil {
			if err == io.EOF {
				return bad("<Dial> is not closed")
			}
			return err
		}
		switch x := t.(type) {
		case xml.EndElement:
			if s := strings.TrimSpace(text.String()); s != "" {
				numbers = append(numbers, s)
			}
			if len(numbers) != 1 {
				return bad("<Dial> must reach exactly one number, got %d", len(numbers))
			}
			if !pricing.ValidE164(numbers[0]) {
				return bad("<Dial> number must be E.164, such as +15551234567")
			}
			r.plan.Dial = append(r.plan.Dial, numbers[0])
			return nil
		case xml.CharData:
			text.Write(x)
		case xml.StartElement:
			if x.Name.Local != "Number" || x.Name.Space != "" {
				return bad("<Dial><%s> is refused: only one <Number> is priced", truncate(x.Name.Local))
			}
			if err := noActions(x); err != nil {
				return err
			}
			if md := attr(x, "machineDetection"); md != "" {
				r.plan.AMD = true
			}
			n, err := r.text(x)
			if err != nil {
				return err
			}
			numbers = append(numbers, n)
		}
	}
}

// text reads an element's text content.
func (r *twimlReader) text(el xml.StartElement) (string, error) {
	var b strings.Builder
	for {
		t, err := r.token()
		if err != nil {
			if err == io.EOF {
				return "", bad("<%s> is not closed", el.Name.Local)
			}
			return "", err
		}
		switch x := t.(type) {
		case xml.EndElement:
			return strings.TrimSpace(b.String()), nil
		case xml.CharData:
			b.Write(x)
		case xml.StartElement:
			return "", bad("<%s> holds only text", el.Name.Local)
		}
	}
}
