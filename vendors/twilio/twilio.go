// Package twilio puts Twilio's REST API (api.twilio.com/2010-04-01) behind
// Keybrake: its operation catalogue (catalog.go: messages priced by segments
// and destination, calls bounded by the TimeLimit Keybrake sets, the account
// and its API keys forbidden), the {AccountSid} path segment swapped for the
// real account, the real credentials as HTTP Basic, and Keybrake's refusals
// in Twilio's own error shape so twilio-go reports them.
package twilio

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/canon"
	"github.com/keybrake/keybrake/pricing"
)

// DefaultBaseURL is Twilio's REST API host.
const DefaultBaseURL = "https://api.twilio.com"

// apiPrefix is the versioned root of every path this vendor serves.
const apiPrefix = "/2010-04-01/"

// Config configures the Twilio vendor.
type Config struct {
	BaseURL    string // default https://api.twilio.com
	AccountSID string // the real account: AC…
	AuthToken  string
	// FX converts a price Twilio reports in another currency (price_unit);
	// nil means USD only.
	FX *pricing.FX
}

// Vendor is the Twilio upstream.
type Vendor struct {
	base    *url.URL
	sid     string
	token   string
	fx      *pricing.FX
	catalog *keybrake.Catalog
}

// New returns the Twilio vendor. Without both an account SID and an auth
// token it is unconfigured (every call refused).
func New(c Config) (*Vendor, error) {
	u, err := keybrake.ParseBaseURL("twilio", c.BaseURL, DefaultBaseURL)
	if err != nil {
		return nil, err
	}
	if c.AccountSID != "" && !alnum(c.AccountSID) {
		return nil, fmt.Errorf("KEYBRAKE_TWILIO_ACCOUNT_SID must be letters and digits (AC…)")
	}
	if c.FX == nil {
		c.FX = pricing.DefaultFX()
	}
	v := &Vendor{base: u, sid: c.AccountSID, token: c.AuthToken, fx: c.FX}
	if v.catalog, err = newCatalog(v); err != nil {
		return nil, err
	}
	return v, nil
}

func (v *Vendor) Name() string { return "twilio" }

// Catalog is Twilio's operation catalogue (catalog.go).
func (v *Vendor) Catalog() *keybrake.Catalog { return v.catalog }

const formType = "application/x-www-form-urlencoded"

// Prepare puts the real account SID in the path, parses a POST's form
// under Twilio's grammar (PascalCase names, only list parameters repeated;
// canon.ParseFlatForm) for the operation's pricer, and forwards the form
// re-encoded from that parse. Twilio takes only form-encoded bodies; what
// Keybrake cannot read it does not forward.
func (v *Vendor) Prepare(req *keybrake.VendorRequest) (*keybrake.Prepared, error) {
	p := &keybrake.Prepared{Body: req.Body, UpstreamPath: v.upstreamPath(req.Path)}
	if req.Method != http.MethodPost {
		return p, nil
	}
	var ct string
	if raw := req.Header.Get("Content-Type"); raw != "" {
		var err error
		if ct, _, err = mime.ParseMediaType(raw); err != nil {
			return nil, keybrake.Errorf(keybrake.CodeUnpriceableRequest, "Content-Type %q cannot be parsed", raw)
		}
	}
	if ct != formType && ct != "" {
		return nil, keybrake.Errorf(keybrake.CodeUnpriceableRequest, "Twilio takes form-encoded bodies (Content-Type %s), got %q", formType, ct)
	}
	form, err := canon.ParseFlatForm(req.Body, canon.DefaultLimits, listParam)
	if err != nil {
		return nil, err
	}
	if p.Body, err = form.Encode(); err != nil {
		return nil, err
	}
	p.Form = form.Values()
	if len(p.Body) > 0 {
		p.ContentType = formType
	}
	return p, nil
}

// listParam names the parameters Twilio takes as lists, the only ones a
// form may repeat.
func listParam(name string) bool {
	return repeatable[name] || name == "MediaUrl" || name == "PersistentAction"
}

// upstreamPath replaces the {AccountSid} segment of
// /2010-04-01/Accounts/{AccountSid}/… (or …/Accounts/{AccountSid}.json)
// with the real account, so agents never hold it.
func (v *Vendor) upstreamPath(path string) string {
	const accounts = apiPrefix + "Accounts/"
	if !strings.HasPrefix(path, accounts) {
		return path
	}
	rest := path[len(accounts):]
	seg, tail, more := strings.Cut(rest, "/")
	if more {
		return accounts + v.sid + "/" + tail
	}
	for _, ext := range []string{".json", ".xml"} {
		if strings.HasSuffix(seg, ext) {
			return accounts + v.sid + ext
		}
	}
	return accounts + v.sid
}

// ObjectID reads the sid of the resource Twilio answered with (JSON; an
// .xml or extension-less path answers XML, whose sid is not read).
func (v *Vendor) ObjectID(resp *keybrake.VendorResponse) string {
	if resp.Truncated {
		return ""
	}
	var obj struct {
		Sid string `json:"sid"`
	}
	if json.Unmarshal(resp.Body, &obj) != nil {
		return ""
	}
	return obj.Sid
}

func owns(path string) bool { return strings.HasPrefix(path, apiPrefix) }

// Owns claims Twilio's 2010-04-01 API at the root, where twilio-go sends it
// once its transport points at Keybrake.
func (v *Vendor) Owns(path string) bool { return owns(path) }

func (v *Vendor) Configured() bool { return v.sid != "" && v.token != "" }

// DedupesIdempotency is false: Twilio has no request idempotency, so a
// retry after an unknown outcome could send a second SMS.
func (v *Vendor) DedupesIdempotency() bool { return false }

// Direct aims the request at Twilio with the real account's Basic auth.
func (v *Vendor) Direct(out *http.Request, p *keybrake.Prepared) {
	keybrake.Aim(out, v.base, p)
	out.SetBasicAuth(v.sid, v.token)
}

func (v *Vendor) RequestID(h http.Header) string { return h.Get("Twilio-Request-Id") }

// twilioError is Twilio's error body, which twilio-go decodes into
// TwilioRestError{Code int, Message, MoreInfo, Status, Details}. Code must
// be a number (a string makes the SDK fail with "error decoding the
// response"), so Keybrake's code leads the message and is repeated in
// details.
type twilioError struct {
	Code     int                  `json:"code"`
	Message  string               `json:"message"`
	MoreInfo string               `json:"more_info"`
	Status   int                  `json:"status"`
	Details  *keybrake.ErrorReply `json:"details"`
}

// MoreInfo is where every Keybrake refusal on Twilio routes points.
const MoreInfo = "https://github.com/keybrake/keybrake/blob/main/docs/vendors.md#errors"

// ErrorCode is the numeric code of a refusal: 20000 + its HTTP status
// (20429 for cap_exhausted, 20403 for endpoint_not_allowed), in the 20xxx
// range Twilio uses for API-level errors.
func ErrorCode(status int) int { return 20000 + status }

// ErrorResponse renders a refusal as Twilio's error object, with
// "cap_exhausted: …" readable in the message twilio-go shows.
func (v *Vendor) ErrorResponse(r *keybrake.ErrorReply) (http.Header, any) {
	return nil, twilioError{
		Code:     ErrorCode(r.Status()),
		Message:  string(r.Code) + ": " + r.Message,
		MoreInfo: MoreInfo,
		Status:   r.Status(),
		Details:  r,
	}
}

func alnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
