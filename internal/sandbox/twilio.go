package sandbox

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/keybrake/keybrake"
)

// Twilio is a local stand-in for Twilio's REST API: it creates messages
// and calls (queued, price null, as Twilio answers at creation), fetches
// them, checks HTTP Basic AccountSid:AuthToken and that the path's account
// is that account, and answers errors in Twilio's shape. It counts what it
// received and can inject the same faults as the Stripe sandbox. It is not
// Twilio: nothing is delivered.
type Twilio struct {
	AccountSID string
	AuthToken  string
	// Fault, when set, chooses a fault for each request (n counts from 1).
	Fault func(r *http.Request, n int) Fault
	// CreationPrice, when set, is the price messages carry in the creation
	// answer ("-0.00790"); by default it is null, as Twilio's usually is.
	CreationPrice string

	// Rates price what the sandbox moves (twilio_money.go); nil: defaults.
	Rates *TwilioRates
	// UrlLegs is how many legs a call driven by Url or ApplicationSid opens,
	// its own included; 0 counts such a call as unbounded.
	UrlLegs int

	recorder
	mu       sync.Mutex
	messages []*TwilioMessage
	calls    []map[string]any
	moved    []TwilioMove
}

// TwilioMessage is the part of Twilio's Message resource the sandbox keeps.
type TwilioMessage struct {
	Sid         string  `json:"sid"`
	AccountSid  string  `json:"account_sid"`
	To          string  `json:"to"`
	From        string  `json:"from"`
	Body        string  `json:"body"`
	Status      string  `json:"status"`
	NumSegments string  `json:"num_segments"`
	NumMedia    string  `json:"num_media"`
	Direction   string  `json:"direction"`
	APIVersion  string  `json:"api_version"`
	Price       *string `json:"price"`
	PriceUnit   string  `json:"price_unit"`
	DateCreated string  `json:"date_created"`
	URI         string  `json:"uri"`
}

// NewTwilio returns a sandbox accepting sid:token.
func NewTwilio(sid, token string) *Twilio {
	return &Twilio{AccountSID: sid, AuthToken: token}
}

// Messages returns the messages created.
func (s *Twilio) Messages() []TwilioMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]TwilioMessage, len(s.messages))
	for i, m := range s.messages {
		out[i] = *m
	}
	return out
}

// PriceMessages sets the price of every message still unpriced, as Twilio
// does minutes after creation ("-0.00790").
func (s *Twilio) PriceMessages(price string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.messages {
		if m.Price == nil {
			p := price
			m.Price = &p
		}
	}
}

// Calls is how many calls were created.
func (s *Twilio) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

func (s *Twilio) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, body := s.record(r)
	user, pass, ok := r.BasicAuth()
	if !ok || user != s.AccountSID || pass != s.AuthToken {
		writeTwilioError(w, http.StatusUnauthorized, 20003, "Authenticate")
		return
	}
	fault := NoFault
	if s.Fault != nil {
		fault = s.Fault(r, n)
	}
	serveWithFault(w, r, fault, func() answer {
		status, b := s.apply(r, body)
		return answer{status, http.Header{"Content-Type": {"application/json"}, "Twilio-Request-Id": {fmt.Sprintf("RQsandbox%d", n)}}, b}
	}, func(w http.ResponseWriter, msg string) {
		writeTwilioError(w, http.StatusInternalServerError, 20500, msg)
	})
}

func (s *Twilio) apply(r *http.Request, body []byte) (int, []byte) {
	if r.Method == http.MethodGet && (r.URL.Path == "/2010-04-01/Accounts.json" || r.URL.Path == "/2010-04-01/Accounts") {
		b, _ := json.Marshal(map[string]any{"accounts": []any{s.account()}})
		return http.StatusOK, b
	}
	acct := "/2010-04-01/Accounts/" + s.AccountSID
	if r.URL.Path == acct || r.URL.Path == acct+".json" {
		b, _ := json.Marshal(s.account())
		return http.StatusOK, b
	}
	prefix := acct + "/"
	if !strings.HasPrefix(r.URL.Path, prefix) {
		return http.StatusNotFound, twilioError(http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found")
	}
	// Twilio serves each resource with or without .json or .xml.
	rest := strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, prefix), ".json"), ".xml")
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return http.StatusBadRequest, twilioError(http.StatusBadRequest, 21000, "body is not form-encoded")
	}
	switch {
	case r.Method == http.MethodPost && rest == "Messages":
		if form.Get("To") == "" {
			return http.StatusBadRequest, twilioError(http.StatusBadRequest, 21604, "A 'To' phone number is required.")
		}
		if form.Get("Body") == "" && len(form["MediaUrl"]) == 0 {
			return http.StatusBadRequest, twilioError(http.StatusBadRequest, 21602, "Message body is required.")
		}
		m := &TwilioMessage{
			Sid: "SM" + randomHex(16), AccountSid: s.AccountSID, To: form.Get("To"), From: form.Get("From"),
			Body: form.Get("Body"), Status: "queued", NumSegments: "1", NumMedia: fmt.Sprint(len(form["MediaUrl"])),
			Direction: "outbound-api", APIVersion: "2010-04-01", PriceUnit: "USD",
			DateCreated: time.Now().UTC().Format(time.RFC1123Z),
		}
		if s.CreationPrice != "" {
			p := s.CreationPrice
			m.Price = &p
		}
		m.URI = "/2010-04-01/Accounts/" + s.AccountSID + "/Messages/" + m.Sid + ".json"
		s.mu.Lock()
		s.messages = append(s.messages, m)
		s.moveMessage(m.Sid, form)
		s.mu.Unlock()
		b, _ := json.Marshal(m)
		return http.StatusCreated, b
	case r.Method == http.MethodGet && rest == "Messages":
		s.mu.Lock()
		defer s.mu.Unlock()
		b, _ := json.Marshal(map[string]any{"messages": s.messages, "page": 0})
		return http.StatusOK, b
	case r.Method == http.MethodGet && strings.HasPrefix(rest, "Messages/"):
		sid := strings.TrimPrefix(rest, "Messages/")
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, m := range s.messages {
			if m.Sid == sid {
				b, _ := json.Marshal(m)
				return http.StatusOK, b
			}
		}
		return http.StatusNotFound, twilioError(http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found")
	case r.Method == http.MethodPost && (rest == "Calls" || strings.HasPrefix(rest, "Conferences/") && strings.HasSuffix(rest, "/Participants")):
		if form.Get("To") == "" {
			return http.StatusBadRequest, twilioError(http.StatusBadRequest, 21201, "No 'To' number is specified")
		}
		c := map[string]any{"sid": "CA" + randomHex(16), "account_sid": s.AccountSID, "to": form.Get("To"), "from": form.Get("From"),
			"status": "queued", "price": nil, "price_unit": "USD", "direction": "outbound-api", "api_version": "2010-04-01"}
		s.mu.Lock()
		s.calls = append(s.calls, c)
		s.moveCall(c["sid"].(string), form, rest != "Calls")
		s.mu.Unlock()
		b, _ := json.Marshal(c)
		return http.StatusCreated, b
	case r.Method == http.MethodPost && strings.HasPrefix(rest, "Calls/"):
		// Status ends a call; new TwiML or a longer TimeLimit runs legs
		// nobody bounded.
		s.mu.Lock()
		defer s.mu.Unlock()
		for k := range form {
			if k != "Status" {
				s.moved = append(s.moved, TwilioMove{Kind: "redirect", Sid: rest, Cost: keybrake.Micros(Unbounded)})
			}
		}
		b, _ := json.Marshal(map[string]any{"sid": strings.TrimPrefix(rest, "Calls/"), "status": form.Get("Status")})
		return http.StatusOK, b
	case r.Method == http.MethodPost && strings.HasPrefix(rest, "IncomingPhoneNumbers"):
		sid := "PN" + randomHex(16)
		s.mu.Lock()
		s.moved = append(s.moved, TwilioMove{Kind: "number", Sid: sid, Cost: s.rates().Number})
		s.mu.Unlock()
		b, _ := json.Marshal(map[string]any{"sid": sid, "phone_number": form.Get("PhoneNumber")})
		return http.StatusCreated, b
	case rest == "Keys" || rest == "SigningKeys":
		b, _ := json.Marshal(map[string]any{"sid": "SK" + randomHex(16), "secret": "SANDBOXtwilioKEYsecret"})
		return http.StatusCreated, b
	}
	return http.StatusNotFound, twilioError(http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found")
}

func (s *Twilio) account() map[string]any {
	return map[string]any{"sid": s.AccountSID, "friendly_name": "sandbox", "status": "active", "auth_token": s.AuthToken}
}

func twilioError(status, code int, msg string) []byte {
	b, _ := json.Marshal(map[string]any{"code": code, "message": msg, "more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code), "status": status})
	return b
}

func writeTwilioError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(twilioError(status, code, msg)) //nolint:errcheck
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) //nolint:errcheck // never fails
	return hex.EncodeToString(b)
}
