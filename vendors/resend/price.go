package resend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
)

// MaxBatch is the most emails one POST /emails/batch may carry (Resend's
// own limit).
const MaxBatch = 100

// emailPricer prices emails.send and emails.batch: every to, cc and bcc
// recipient is one email at PerRecipient, summed over a batch. A send whose
// recipients cannot be counted is refused, never forwarded unpriced.
type emailPricer struct {
	batch bool
	s     *emailSettings
}

// emailSettings are shared by both sends, written under
// operations.resend.emails.send.
type emailSettings struct {
	PerRecipient keybrake.Micros
}

func (p *emailPricer) Params() pricing.Params {
	if p.batch {
		return nil // priced with emails.send's settings
	}
	return pricing.Params{{Name: "per_recipient", Doc: "price of one email (one to, cc or bcc recipient)", Value: &p.s.PerRecipient}}
}

func (p *emailPricer) Describe() string {
	s := "recipients (to + cc + bcc) × " + p.s.PerRecipient.String()
	if p.batch {
		s += ", summed over the batch (emails.send's settings)"
	}
	return s
}

func (p *emailPricer) Price(_ context.Context, c *keybrake.PriceCall) (*keybrake.Quote, error) {
	var counts []int
	var err error
	if p.batch {
		counts, err = BatchRecipients(c.Body)
	} else {
		var n int
		n, err = Recipients(c.Body)
		counts = []int{n}
	}
	if err != nil {
		var ke *keybrake.Error
		if errors.As(err, &ke) {
			return nil, ke
		}
		return nil, unpriceable("%v", err)
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	per := p.s.PerRecipient
	q := &keybrake.Quote{Amount: pricing.Mul(per, int64(total))}
	q.Settle = func(resp *keybrake.VendorResponse) (keybrake.Micros, bool) {
		n, ok := accepted(resp, counts, p.batch)
		return pricing.Mul(per, int64(n)), ok
	}
	return q, nil
}

// broadcastCreate keeps creating a broadcast free: with "send": true it is
// also sent, to an audience Keybrake cannot see.
type broadcastCreate struct{}

func (broadcastCreate) Price(_ context.Context, c *keybrake.PriceCall) (*keybrake.Quote, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(c.Body, &obj); err != nil {
		return nil, unpriceable("body is not a JSON object: %v", err)
	}
	for k, v := range obj {
		if strings.EqualFold(k, "send") && string(bytes.TrimSpace(v)) != "false" {
			return nil, unpriceable(`creating a broadcast with "send" sends it to an audience Keybrake cannot count; create the draft, then POST /broadcasts/{id}/send, which the pricing file prices`)
		}
	}
	return &keybrake.Quote{}, nil
}

func (broadcastCreate) Describe() string { return `0 ("send" refused)` }

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

// accepted counts the recipients of what Resend accepted: the whole send,
// or for a batch every email not listed in "errors" (permissive mode
// reports rejected emails by index). An answer that does not say which
// emails were accepted leaves the estimate standing (ok=false).
func accepted(resp *keybrake.VendorResponse, counts []int, batch bool) (int, bool) {
	if resp.Truncated {
		return 0, false
	}
	var obj struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
		Errors []struct {
			Index *int `json:"index"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(resp.Body, &obj); err != nil {
		return 0, false
	}
	if !batch {
		return counts[0], true
	}
	rejected := map[int]bool{}
	for _, e := range obj.Errors {
		if e.Index == nil || *e.Index < 0 || *e.Index >= len(counts) || rejected[*e.Index] {
			return 0, false
		}
		rejected[*e.Index] = true
	}
	if len(obj.Data)+len(rejected) != len(counts) {
		return 0, false
	}
	n := 0
	for i, c := range counts {
		if !rejected[i] {
			n += c
		}
	}
	return n, true
}
