package resend

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"

	"github.com/keybrake/keybrake"
)

// MaxBatch is the most emails one POST /emails/batch may carry (Resend's
// own limit).
const MaxBatch = 100

var (
	sendEmail     = keybrake.MustParseRule("POST /emails")
	sendBatch     = keybrake.MustParseRule("POST /emails/batch")
	sendBroadcast = keybrake.MustParseRule("POST /broadcasts/*/send")
)

// detail is carried from Prepare to Settle.
type detail struct {
	fixed    keybrake.Micros
	perEmail keybrake.Micros
	counts   []int // recipients of each email sent; nil for other calls
	batch    bool
}

func unpriceable(format string, args ...any) error {
	return keybrake.Errorf(keybrake.CodeUnpriceableRequest, format, args...)
}

// Prepare prices sends: every to, cc and bcc recipient is one email at the
// per-email price, summed over a batch; a fixed endpoint price from the
// pricing file is added. A send whose recipients cannot be counted is
// refused, never forwarded unpriced. Broadcast sends go to an audience
// Keybrake cannot see, so they need a fixed price in the pricing file.
func (v *Vendor) Prepare(req *keybrake.VendorRequest) (*keybrake.Prepared, error) {
	p := &keybrake.Prepared{Body: req.Body}
	d := &detail{perEmail: v.prices.PerEmail}
	var hasFixed bool
	d.fixed, hasFixed = v.prices.Endpoints.Lookup(req.Method, req.Path)
	p.Detail = d

	single := sendEmail.Match(req.Method, req.Path)
	batch := sendBatch.Match(req.Method, req.Path)
	if !single && !batch {
		if sendBroadcast.Match(req.Method, req.Path) && !hasFixed {
			return nil, unpriceable("broadcast sends go to an audience whose size Keybrake cannot see; price them in the pricing file (resend.endpoints.\"POST /broadcasts/*/send\") to allow them")
		}
		p.Estimate = d.fixed
		p.Priced = d.fixed > 0
		return p, nil
	}
	p.Priced = true
	if err := keybrake.CheckPricedBody(req); err != nil {
		return nil, err
	}
	if ct, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type")); ct != "application/json" {
		return nil, unpriceable("Resend takes JSON bodies (Content-Type application/json), got %q", ct)
	}
	var err error
	if single {
		var n int
		n, err = Recipients(req.Body)
		d.counts = []int{n}
	} else {
		d.batch = true
		d.counts, err = BatchRecipients(req.Body)
	}
	if err != nil {
		var ke *keybrake.Error
		if errors.As(err, &ke) {
			return nil, ke
		}
		return nil, unpriceable("%v", err)
	}
	total := 0
	for _, n := range d.counts {
		total += n
	}
	p.Estimate = keybrake.AddCapped(mul(d.perEmail, total), d.fixed)
	return p, nil
}

func mul(price keybrake.Micros, n int) keybrake.Micros {
	var total keybrake.Micros
	for i := 0; i < n; i++ {
		total = keybrake.AddCapped(total, price)
	}
	return total
}

// Recipients counts the emails one send request makes: to + cc + bcc.
// Each may be a string or a list of strings; a string holding several
// addresses ("a@x.com, b@y.com") counts one per "@", so a count can only
// err high. A body with no "to" recipient, a field given twice or in
// another letter case (TO, Cc), or a recipient that is not a string is
// refused: Keybrake prices exactly what it reads, or nothing.
func Recipients(body []byte) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	n, err := recipients(dec)
	if err != nil {
		return 0, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return 0, fmt.Errorf("body has data after the JSON object")
	}
	return n, nil
}

func recipients(dec *json.Decoder) (int, error) {
	tok, err := dec.Token()
	if err != nil {
		return 0, fmt.Errorf("body is not valid JSON: %v", err)
	}
	if tok != json.Delim('{') {
		return 0, fmt.Errorf("an email must be a JSON object")
	}
	seen := map[string]bool{}
	total, to := 0, 0
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return 0, fmt.Errorf("body is not valid JSON: %v", err)
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return 0, fmt.Errorf("body is not valid JSON: %v", err)
		}
		lower := strings.ToLower(key)
		if lower != "to" && lower != "cc" && lower != "bcc" {
			continue
		}
		if key != lower {
			return 0, fmt.Errorf("recipient field %q: write it in lower case (%s)", key, lower)
		}
		if seen[key] {
			return 0, fmt.Errorf("%s is given twice", key)
		}
		seen[key] = true
		n, err := countAddresses(key, raw)
		if err != nil {
			return 0, err
		}
		total += n
		if key == "to" {
			to = n
		}
	}
	if _, err := dec.Token(); err != nil {
		return 0, fmt.Errorf("body is not valid JSON: %v", err)
	}
	if to == 0 {
		return 0, fmt.Errorf("to is required: Keybrake prices an email by its recipients")
	}
	return total, nil
}

func countAddresses(field string, raw json.RawMessage) (int, error) {
	s := bytes.TrimSpace(raw)
	if string(s) == "null" {
		return 0, nil
	}
	var one string
	if err := json.Unmarshal(s, &one); err == nil {
		return addresses(one), nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(s, &list); err != nil {
		return 0, fmt.Errorf("%s must be an address or a list of addresses", field)
	}
	n := 0
	for _, item := range list {
		if err := json.Unmarshal(item, &one); err != nil {
			return 0, fmt.Errorf("%s must be an address or a list of addresses", field)
		}
		n += addresses(one)
	}
	return n, nil
}

func addresses(s string) int {
	return max(1, strings.Count(s, "@"))
}

// BatchRecipients counts the recipients of each email of a batch: a JSON
// array of 1 to MaxBatch emails.
func BatchRecipients(body []byte) ([]int, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("body is not valid JSON: %v", err)
	}
	if tok != json.Delim('[') {
		return nil, fmt.Errorf("a batch must be a JSON array of emails")
	}
	var counts []int
	for dec.More() {
		if len(counts) == MaxBatch {
			return nil, keybrake.Errorf(keybrake.CodeInvalidRequest, "a batch holds at most %d emails; split it", MaxBatch)
		}
		n, err := recipients(dec)
		if err != nil {
			return nil, fmt.Errorf("email %d: %v", len(counts), err)
		}
		counts = append(counts, n)
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("body is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("body has data after the JSON array")
	}
	if len(counts) == 0 {
		return nil, fmt.Errorf("the batch is empty")
	}
	return counts, nil
}

// Settle charges the recipients of what Resend accepted: the whole send,
// or for a batch every email not listed in "errors" (permissive mode
// reports rejected emails by index). An answer that does not say which
// emails were accepted leaves the estimate standing.
func (v *Vendor) Settle(p *keybrake.Prepared, resp *keybrake.VendorResponse) (keybrake.Micros, string, bool) {
	d, _ := p.Detail.(*detail)
	if d == nil {
		d = &detail{}
	}
	if resp.Truncated {
		return 0, "", false
	}
	var obj struct {
		ID   string `json:"id"`
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
		Errors []struct {
			Index *int `json:"index"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(resp.Body, &obj); err != nil {
		return 0, "", d.counts == nil && d.fixed == 0
	}
	if d.counts == nil {
		return d.fixed, obj.ID, true
	}
	if !d.batch {
		return keybrake.AddCapped(mul(d.perEmail, d.counts[0]), d.fixed), obj.ID, true
	}
	id := ""
	if len(obj.Data) > 0 {
		id = obj.Data[0].ID
	}
	rejected := map[int]bool{}
	for _, e := range obj.Errors {
		if e.Index == nil || *e.Index < 0 || *e.Index >= len(d.counts) || rejected[*e.Index] {
			return 0, id, false
		}
		rejected[*e.Index] = true
	}
	if len(obj.Data)+len(rejected) != len(d.counts) {
		return 0, id, false
	}
	accepted := 0
	for i, n := range d.counts {
		if !rejected[i] {
			accepted += n
		}
	}
	return keybrake.AddCapped(mul(d.perEmail, accepted), d.fixed), id, true
}
