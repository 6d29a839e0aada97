package resend

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	resendgo "github.com/resend/resend-go/v3"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
)

func newVendor(t testing.TB, yaml string) *Vendor {
	t.Helper()
	tb := pricing.Default()
	if yaml != "" {
		if err := tb.Apply("p.yaml", []byte(yaml)); err != nil {
			t.Fatal(err)
		}
	}
	v, err := New(Config{APIKey: "re_real"})
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.ApplyTo(v); err != nil {
		t.Fatal(err)
	}
	return v
}

// quoted is a priced request: what it reserves, and its quote.
type quoted struct {
	Estimate keybrake.Micros
	q        *keybrake.Quote
	op       *keybrake.Operation
}

// prepare runs a request through what the proxy does before reserving.
func (v *Vendor) prepare(req *keybrake.VendorRequest) (*quoted, error) {
	if err := keybrake.CheckBody(req); err != nil {
		return nil, err
	}
	p, err := v.Prepare(req)
	if err != nil {
		return nil, err
	}
	op, params := v.Catalog().Resolve(req.Method, req.Path)
	if op == nil {
		return nil, keybrake.Errorf(keybrake.CodeUnknownOperation, "%s %s", req.Method, req.Path)
	}
	q, err := op.Quote(context.Background(), &keybrake.PriceCall{Method: req.Method, Path: req.Path, Params: params, Header: req.Header, Body: p.Body})
	if err != nil {
		return nil, err
	}
	return &quoted{Estimate: q.Amount, q: q, op: op}, nil
}

func (v *Vendor) settle(p *quoted, resp *keybrake.VendorResponse) (keybrake.Micros, string, bool) {
	id := v.ObjectID(resp)
	if p.q.Settle == nil {
		return p.Estimate, id, true
	}
	a, ok := p.q.Settle(resp)
	return a, id, ok
}

func jsonReq(path, body string) *keybrake.VendorRequest {
	return &keybrake.VendorRequest{Method: "POST", Path: path, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(body)}
}

func TestRecipients(t *testing.T) {
	cases := []struct {
		body string
		n    int
	}{
		{`{"from":"a@x.com","to":"b@y.com","subject":"s"}`, 1},
		{`{"to":["b@y.com","c@y.com"],"cc":"d@y.com","bcc":["e@y.com"]}`, 4},
		{`{"to":"b@y.com, c@y.com"}`, 2},
		{`{"to":"\"Doe, J\" <j@y.com>"}`, 1},
		{`{"to":["b@y.com"],"cc":null,"bcc":[]}`, 1},
		{`{"t\u006f":"b@y.com"}`, 1}, // escaped key is still "to"
		{`{"to":"nobody"}`, 1},
	}
	for _, c := range cases {
		n, err := Recipients([]byte(c.body))
		if err != nil || n != c.n {
			t.Errorf("%s: %d %v, want %d", c.body, n, err, c.n)
		}
	}
	for _, bad := range []string{
		``, `[]`, `{"from":"a@x.com"}`, `{"to":[]}`, `{"to":null}`, `{"to":1}`, `{"to":[1]}`, `{"to":{"a":"b"}}`,
		`{"to":"a@x.com","to":"b@x.com"}`, `{"TO":"a@x.com","to":"b@x.com"}`, `{"to":"a@x.com","Cc":"c@x.com"}`,
		`{"to":"a@x.com"} {}`, `{"to":"a@x.com"`, `{"to":"a@x.com",}`,
	} {
		if n, err := Recipients([]byte(bad)); err == nil {
			t.Errorf("%s: accepted as %d recipients", bad, n)
		}
	}
}

func TestPrepare(t *testing.T) {
	v := newVendor(t, "operations:\n  resend.emails.batch: {fixed: \"0.01\"}\n  resend.domains.list: {fixed: \"0.5\"}\n  resend.broadcasts.send: {fixed: 5}\n")
	p, err := v.prepare(jsonReq("/emails", `{"to":["a@x.com","b@x.com"],"cc":"c@x.com"}`))
	if err != nil || p.Estimate != 2700 {
		t.Fatalf("single: %+v %v", p, err)
	}
	var batch []string
	for i := 0; i < 3; i++ {
		batch = append(batch, fmt.Sprintf(`{"to":"u%d@x.com","bcc":["audit@x.com"]}`, i))
	}
	p, err = v.prepare(jsonReq("/emails/batch", "["+strings.Join(batch, ",")+"]"))
	if err != nil || p.Estimate != 6*900+10000 {
		t.Fatalf("batch: %+v %v", p, err)
	}
	p, err = v.prepare(&keybrake.VendorRequest{Method: "GET", Path: "/domains", Header: http.Header{}})
	if err != nil || p.Estimate != 500000 {
		t.Fatalf("fixed: %+v %v", p, err)
	}
	p, err = v.prepare(&keybrake.VendorRequest{Method: "GET", Path: "/emails/em_1", Header: http.Header{}})
	if err != nil || p.Estimate != 0 || p.op.Name != "emails.retrieve" {
		t.Fatalf("get: %+v %v", p, err)
	}
	p, err = v.prepare(jsonReq("/broadcasts/b_1/send", `{}`))
	if err != nil || p.Estimate != 5_000_000 {
		t.Fatalf("broadcast: %+v %v", p, err)
	}
}

func TestPrepareRefusals(t *testing.T) {
	v := newVendor(t, "")
	big := "[" + strings.TrimSuffix(strings.Repeat(`{"to":"a@x.com"},`, MaxBatch+1), ",") + "]"
	full := "[" + strings.TrimSuffix(strings.Repeat(`{"to":"a@x.com"},`, MaxBatch), ",") + "]"
	if p, err := v.prepare(jsonReq("/emails/batch", full)); err != nil || p.Estimate != 100*900 {
		t.Fatalf("100 emails: %v %v", p, err)
	}
	cases := []struct {
		req  *keybrake.VendorRequest
		code keybrake.Code
		sub  string
	}{
		{jsonReq("/emails/batch", big), keybrake.CodeInvalidRequest, "at most 100"},
		{jsonReq("/emails/batch", `[]`), keybrake.CodeUnpriceableRequest, "empty"},
		{jsonReq("/emails/batch", `{"to":"a@x.com"}`), keybrake.CodeUnpriceableRequest, "array"},
		{jsonReq("/emails/batch", `[{"to":"a@x.com"},{"from":"x"}]`), keybrake.CodeUnpriceableRequest, "email 1"},
		{jsonReq("/emails", `{"to":"a@x.com"`), keybrake.CodeUnpriceableRequest, "JSON"},
		{&keybrake.VendorRequest{Method: "POST", Path: "/emails", Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte(`{"to":"a@x.com"}`)}, keybrake.CodeUnpriceableRequest, "JSON bodies"},
		{&keybrake.VendorRequest{Method: "POST", Path: "/emails", Query: "to=x", Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"to":"a@x.com"}`)}, keybrake.CodeUnpriceableRequest, "query"},
		{jsonReq("/broadcasts/b_1/send", `{}`), keybrake.CodeUnpriceableRequest, "operations.resend.broadcasts.send.fixed"},
		{jsonReq("/broadcasts", `{"segment_id":"s","from":"a@x.com","subject":"s","send":true}`), keybrake.CodeUnpriceableRequest, "send"},
		{jsonReq("/broadcasts", `{"segment_id":"s","Send":"yes"}`), keybrake.CodeUnpriceableRequest, "send"},
		{jsonReq("/api-keys", `{"name":"x"}`), keybrake.CodeOperationForbidden, "bypassing"},
		{&keybrake.VendorRequest{Method: "GET", Path: "/webhooks/wh_1", Header: http.Header{}}, keybrake.CodeOperationForbidden, "signing secret"},
		{jsonReq("/emails/em_1", `{}`), keybrake.CodeUnknownOperation, ""},
	}
	for _, c := range cases {
		_, err := v.prepare(c.req)
		if keybrake.ErrorCode(err) != c.code || !strings.Contains(err.Error(), c.sub) {
			t.Errorf("%s %s: %v, want %s with %q", c.req.Path, c.req.Body, err, c.code, c.sub)
		}
	}
}

func TestSettle(t *testing.T) {
	v := newVendor(t, "")
	p, _ := v.prepare(jsonReq("/emails", `{"to":"a@x.com","cc":["b@x.com","c@x.com"]}`))
	if a, id, ok := v.settle(p, &keybrake.VendorResponse{Status: 200, Body: []byte(`{"id":"em_1"}`)}); a != 2700 || id != "em_1" || !ok {
		t.Errorf("single: %v %q %v", a, id, ok)
	}
	b, _ := v.prepare(jsonReq("/emails/batch", `[{"to":"a@x.com"},{"to":["b@x.com","c@x.com"]},{"to":"d@x.com"}]`))
	cases := []struct {
		body   string
		actual keybrake.Micros
		ok     bool
	}{
		{`{"data":[{"id":"1"},{"id":"2"},{"id":"3"}]}`, 3600, true},
		{`{"data":[{"id":"1"},{"id":"3"}],"errors":[{"index":1,"message":"bad"}]}`, 1800, true},
		{`{"data":[],"errors":[{"index":0},{"index":1},{"index":2}]}`, 0, true},
		{`{"data":[{"id":"1"}]}`, 0, false},                                   // which ones? the estimate stands
		{`{"data":[{"id":"1"},{"id":"2"}],"errors":[{"index":7}]}`, 0, false}, // out of range
		{`{"data":[{"id":"1"}],"errors":[{"index":1},{"index":1}]}`, 0, false},
		{`nope`, 0, false},
	}
	for _, c := range cases {
		a, _, ok := v.settle(b, &keybrake.VendorResponse{Status: 200, Body: []byte(c.body)})
		if a != c.actual || ok != c.ok {
			t.Errorf("%s: %v %v, want %v %v", c.body, a, ok, c.actual, c.ok)
		}
	}
}

// FuzzRecipients: never panics, and a count is at least one per "to".
func FuzzRecipients(f *testing.F) {
	for _, s := range []string{`{"to":"a@x.com"}`, `{"to":["a","b"],"cc":"c"}`, `{"TO":"x"}`, `[{"to":"a"}]`, `{"to":"a@b@c"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		if n, err := Recipients([]byte(body)); err == nil && n < 1 {
			t.Fatalf("%q: %d recipients", body, n)
		}
		if counts, err := BatchRecipients([]byte(body)); err == nil {
			if len(counts) < 1 || len(counts) > MaxBatch {
				t.Fatalf("%d emails", len(counts))
			}
			for _, n := range counts {
				if n < 1 {
					t.Fatalf("%q: email with %d recipients", body, n)
				}
			}
		}
	})
}

// FuzzSettleBatch: settlement never charges more than the estimate.
func FuzzSettleBatch(f *testing.F) {
	f.Add(`{"data":[{"id":"1"}],"errors":[{"index":1}]}`)
	f.Add(`{"data":[{"id":"1"},{"id":"2"}]}`)
	v := newVendor(f, "")
	p, err := v.prepare(jsonReq("/emails/batch", `[{"to":"a@x.com"},{"to":["b@x.com","c@x.com"]}]`))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body string) {
		a, _, ok := v.settle(p, &keybrake.VendorResponse{Status: 200, Body: []byte(body)})
		if ok && (a < 0 || a > p.Estimate) {
			t.Fatalf("%q: settled %v > estimate %v", body, a, p.Estimate)
		}
	})
}

// resend-go shows a refusal's code: a 429 as RateLimitError, others as
// "[ERROR]: <message>".
func TestErrorResponseThroughResendGo(t *testing.T) {
	v := newVendor(t, "")
	for _, c := range []struct {
		code keybrake.Code
		want string
	}{
		{keybrake.CodeCapExhausted, "cap_exhausted"},
		{keybrake.CodeEndpointNotAllowed, "endpoint_not_allowed"},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			reply := &keybrake.ErrorReply{Code: c.code, Message: "refused"}
			_, body := v.ErrorResponse(reply)
			b, _ := json.Marshal(body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(reply.Status())
			w.Write(b) //nolint:errcheck
		}))
		client := resendgo.NewClient("kbvk")
		client.BaseURL, _ = client.BaseURL.Parse(srv.URL + "/")
		_, err := client.Emails.Send(&resendgo.SendEmailRequest{From: "a@x.com", To: []string{"b@x.com"}, Subject: "s", Text: "t"})
		srv.Close()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v", c.code, err)
		}
		if c.code == keybrake.CodeCapExhausted {
			var rl *resendgo.RateLimitError
			if !asRateLimit(err, &rl) || !strings.Contains(rl.Message, "(HTTP 429)") {
				t.Errorf("429 is not a RateLimitError: %T %v", err, err)
			}
		}
	}
	_, body := v.ErrorResponse(&keybrake.ErrorReply{Code: keybrake.CodeCapExhausted, Message: "m", KeyID: "key_1"})
	b, _ := json.Marshal(body)
	var top map[string]any
	json.NewDecoder(bytes.NewReader(b)).Decode(&top) //nolint:errcheck
	if top["code"] != "cap_exhausted" || top["statusCode"] != float64(429) || top["name"] != "cap_exhausted" || top["key_id"] != "key_1" {
		t.Errorf("body %s", b)
	}
}

func asRateLimit(err error, target **resendgo.RateLimitError) bool {
	rl, ok := err.(*resendgo.RateLimitError)
	if ok {
		*target = rl
	}
	return ok
}

func TestVendorBasics(t *testing.T) {
	v, err := New(Config{BaseURL: "http://127.0.0.1:9/", APIKey: "re_real"})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := http.NewRequest("POST", "http://keybrake/emails", nil)
	out.Header.Set("Idempotency-Key", "k1")
	v.Direct(out, &keybrake.Prepared{UpstreamPath: "/emails/batch"})
	if out.URL.String() != "http://127.0.0.1:9/emails/batch" || out.Header.Get("Authorization") != "Bearer re_real" || out.Header.Get("Idempotency-Key") != "k1" {
		t.Errorf("%s %v", out.URL, out.Header)
	}
	for path, want := range map[string]bool{"/emails": true, "/emails/batch": true, "/domains/d1": true, "/v1/charges": false, "/emailsx": false, "/2010-04-01/Accounts": false} {
		if v.Owns(path) != want {
			t.Errorf("Owns(%s) != %v", path, want)
		}
	}
	if !v.DedupesIdempotency() || !v.Configured() {
		t.Error("flags")
	}
	if u, _ := New(Config{}); u.Configured() {
		t.Error("configured without a key")
	}
	if _, err := New(Config{BaseURL: "not a url"}); err == nil {
		t.Error("bad base URL")
	}
}
