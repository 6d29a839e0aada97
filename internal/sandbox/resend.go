package sandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// Resend is a local stand-in for Resend's email API: POST /emails and
// POST /emails/batch (strict, or permissive with x-batch-validation, where
// an email without a subject is rejected by index), Bearer API key,
// Idempotency-Key (a replay answers the first response; another body or a
// concurrent use answers 409), and errors in Resend's shape. It counts the
// emails it "sent" (one per recipient, as Resend bills) and can inject the
// same faults as the Stripe sandbox. Nothing is delivered.
type Resend struct {
	APIKey string
	// Fault, when set, chooses a fault for each request (n counts from 1).
	Fault func(r *http.Request, n int) Fault

	// Audience is how many contacts a broadcast reaches (default 1000).
	Audience int

	recorder
	idem idemCache
	mu   sync.Mutex
	sent []ResendEmail
	seq  int
}

// ResendPerEmail is what the sandbox charges for one email: Resend's $0.90
// per 1,000.
const ResendPerEmail = 900

// Moved is what the sandbox Resend charged, in micro-dollars: one email per
// recipient, a broadcast's whole audience.
func (s *Resend) Moved() int64 {
	return int64(s.Recipients()) * ResendPerEmail
}

// ResendEmail is one accepted email.
type ResendEmail struct {
	ID         string
	Recipients int
}

// NewResend returns a sandbox accepting apiKey.
func NewResend(apiKey string) *Resend {
	return &Resend{APIKey: apiKey}
}

// Sent returns the emails accepted.
func (s *Resend) Sent() []ResendEmail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ResendEmail(nil), s.sent...)
}

// Recipients sums the recipients of every accepted email.
func (s *Resend) Recipients() int {
	n := 0
	for _, e := range s.Sent() {
		n += e.Recipients
	}
	return n
}

func (s *Resend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, body := s.record(r)
	if r.Header.Get("Authorization") != "Bearer "+s.APIKey {
		writeResendError(w, http.StatusUnauthorized, "invalid_api_key", "API key is invalid")
		return
	}
	fault := NoFault
	if s.Fault != nil {
		fault = s.Fault(r, n)
	}
	serveWithFault(w, r, fault, func() answer {
		status, b, how := s.idem.do(r, body, func() (int, []byte) { return s.apply(r, body) })
		switch how {
		case idemInFlight:
			status, b = http.StatusConflict, resendError(http.StatusConflict, "concurrent_idempotent_requests", "Same idempotency key used while original request is still in progress.")
		case idemMismatch:
			status, b = http.StatusConflict, resendError(http.StatusConflict, "invalid_idempotent_request", "Same idempotency key used with a different request payload.")
		}
		return answer{status, http.Header{"Content-Type": {"application/json"}}, b}
	}, func(w http.ResponseWriter, msg string) {
		writeResendError(w, http.StatusInternalServerError, "internal_server_error", msg)
	})
}

type resendEmailRequest struct {
	From    string          `json:"from"`
	To      json.RawMessage `json:"to"`
	Cc      json.RawMessage `json:"cc"`
	Bcc     json.RawMessage `json:"bcc"`
	Subject string          `json:"subject"`
}

func countList(raw json.RawMessage) int {
	if len(raw) == 0 || string(raw) == "null" {
		return 0
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return 1
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return len(list)
	}
	return 0
}

func (e resendEmailRequest) valid() (int, string) {
	n := countList(e.To)
	if n == 0 {
		return 0, "Missing `to` field."
	}
	if e.From == "" {
		return 0, "Missing `from` field."
	}
	if e.Subject == "" {
		return 0, "Missing `subject` field."
	}
	return n + countList(e.Cc) + countList(e.Bcc), ""
}

func (s *Resend) newID() string {
	s.seq++
	return fmt.Sprintf("em_sandbox_%06d", s.seq)
}

func (s *Resend) apply(r *http.Request, body []byte) (int, []byte) {
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/emails":
		var e resendEmailRequest
		if err := json.Unmarshal(body, &e); err != nil {
			return http.StatusUnprocessableEntity, resendError(http.StatusUnprocessableEntity, "validation_error", "Invalid JSON")
		}
		n, msg := e.valid()
		if msg != "" {
			return http.StatusUnprocessableEntity, resendError(http.StatusUnprocessableEntity, "validation_error", msg)
		}
		s.mu.Lock()
		id := s.newID()
		s.sent = append(s.sent, ResendEmail{ID: id, Recipients: n})
		s.mu.Unlock()
		b, _ := json.Marshal(map[string]string{"id": id})
		return http.StatusOK, b
	case r.Method == http.MethodPost && r.URL.Path == "/emails/batch":
		var emails []resendEmailRequest
		if err := json.Unmarshal(body, &emails); err != nil {
			return http.StatusUnprocessableEntity, resendError(http.StatusUnprocessableEntity, "validation_error", "Invalid JSON")
		}
		if len(emails) > 100 {
			return http.StatusUnprocessableEntity, resendError(http.StatusUnprocessableEntity, "validation_error", "Too many emails in batch (max 100).")
		}
		permissive := r.Header.Get("X-Batch-Validation") == "permissive"
		type batchErr struct {
			Index   int    `json:"index"`
			Message string `json:"message"`
		}
		var errs []batchErr
		counts := make([]int, len(emails))
		for i, e := range emails {
			n, msg := e.valid()
			if msg != "" {
				if !permissive {
					return http.StatusUnprocessableEntity, resendError(http.StatusUnprocessableEntity, "validation_error", fmt.Sprintf("emails[%d]: %s", i, msg))
				}
				errs = append(errs, batchErr{i, msg})
				counts[i] = -1
				continue
			}
			counts[i] = n
		}
		type idObj struct {
			ID string `json:"id"`
		}
		data := []idObj{}
		s.mu.Lock()
		for _, n := range counts {
			if n < 0 {
				continue
			}
			id := s.newID()
			s.sent = append(s.sent, ResendEmail{ID: id, Recipients: n})
			data = append(data, idObj{id})
		}
		s.mu.Unlock()
		resp := map[string]any{"data": data}
		if permissive {
			if errs == nil {
				errs = []batchErr{}
			}
			resp["errors"] = errs
		}
		b, _ := json.Marshal(resp)
		return http.StatusOK, b
	case r.Method == http.MethodGet && r.URL.Path == "/domains":
		return http.StatusOK, []byte(`{"object":"list","data":[]}`)
	case r.Method == http.MethodPost && r.URL.Path == "/api-keys":
		return http.StatusCreated, []byte(`{"id":"key_sandbox","token":"re_SANDBOXnewFULLaccessKEY"}`)
	case r.Method == http.MethodPost && (r.URL.Path == "/broadcasts" || strings.HasPrefix(r.URL.Path, "/broadcasts/") && strings.HasSuffix(r.URL.Path, "/send")):
		var b struct {
			Send bool `json:"send"`
		}
		json.Unmarshal(body, &b) //nolint:errcheck // a draft either way
		s.mu.Lock()
		id := s.newID()
		if b.Send || r.URL.Path != "/broadcasts" {
			n := s.Audience
			if n == 0 {
				n = 1000
			}
			s.sent = append(s.sent, ResendEmail{ID: id, Recipients: n})
		}
		s.mu.Unlock()
		out, _ := json.Marshal(map[string]string{"id": id})
		return http.StatusOK, out
	}
	return http.StatusNotFound, resendError(http.StatusNotFound, "not_found", "The requested endpoint does not exist.")
}

func resendError(status int, name, msg string) []byte {
	b, _ := json.Marshal(map[string]any{"statusCode": status, "name": name, "message": msg})
	return b
}

func writeResendError(w http.ResponseWriter, status int, name, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(resendError(status, name, msg)) //nolint:errcheck
}
