package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
	"github.com/keybrake/keybrake/pricing"
	"github.com/keybrake/keybrake/vendors/stripe"
)

// judge checks the cap's one promise for every request a test sends through
// one key, the way the issue states it. Each request must end one of two
// ways:
//
//   - refused with a 4xx, and the vendor received nothing for it (beyond
//     the GETs a lookup-priced call makes to read the object it acts on);
//   - forwarded, and after settlement the key's recorded spend is at least
//     what the vendor moved (in all, since the key was issued), with what
//     moved within the cap.
//
// (The third way, issuance refused, is checked where keys are issued.)
type judge struct {
	t        testing.TB
	env      *kbtest.Env
	key      *client.Key
	cap      keybrake.Micros
	received func() []sandbox.Received
	moved    func() keybrake.Micros
}

// verdict is how one request ended.
type verdict struct {
	r         *kbtest.Response
	forwarded bool
	code      string // Keybrake's refusal code, when refused
	lookups   int    // GETs Keybrake made to price it
}

func (j *judge) send(method, path, contentType, body string, header ...string) verdict {
	j.t.Helper()
	before := len(j.received())
	r := j.env.Do(j.t, j.key.VaultKey, method, path, contentType, body, header...)
	got := j.received()[before:]
	v := verdict{r: r}
	for _, g := range got {
		if g.Method == "GET" && (method != "GET" || !samePath(g.Path, path)) {
			v.lookups++
			continue
		}
		v.forwarded = true
	}
	if !v.forwarded {
		v.code = refusalCode(r.Body)
		if r.Status < 400 || r.Status >= 500 || v.code == "" {
			j.t.Fatalf("%s %s: nothing reached the vendor, yet the answer is %d %s (want a 4xx refusal)", method, path, r.Status, r.Body)
		}
		if v.lookups > 2 {
			j.t.Fatalf("%s %s: refused after %d lookups", method, path, v.lookups)
		}
	}
	j.holds(method + " " + path)
	return v
}

// holds checks the invariant now: recorded ≥ moved, moved ≤ cap.
func (j *judge) holds(what string) {
	j.t.Helper()
	k, err := j.env.Admin.GetKey(context.Background(), j.key.ID)
	if err != nil {
		j.t.Fatal(err)
	}
	recorded := *k.SpentUSD + *k.ReservedUSD
	moved := j.moved()
	if recorded < moved {
		j.t.Fatalf("after %s: the vendor moved $%s but the key recorded $%s", what, moved, recorded)
	}
	if moved > j.cap {
		j.t.Fatalf("after %s: the vendor moved $%s, above the key's cap of $%s", what, moved, j.cap)
	}
}

// refused asserts the request was refused with this code.
func (v verdict) refused(t testing.TB, code string) verdict {
	t.Helper()
	if v.forwarded || v.code != code {
		t.Fatalf("want a refusal with %s; got %d %s (forwarded %v)", code, v.r.Status, v.r.Body, v.forwarded)
	}
	return v
}

// ok asserts the request was forwarded and the vendor answered 2xx.
func (v verdict) ok(t testing.TB) verdict {
	t.Helper()
	if !v.forwarded || v.r.Status >= 300 {
		t.Fatalf("want a forwarded 2xx; got %d %s", v.r.Status, v.r.Body)
	}
	return v
}

func samePath(upstream, client string) bool {
	client, _, _ = strings.Cut(client, "?")
	for _, prefix := range []string{"/stripe", "/twilio", "/resend"} {
		client = strings.TrimPrefix(client, prefix)
	}
	// Twilio's account segment is swapped for the real one.
	return upstream == client || strings.HasPrefix(client, "/2010-04-01/Accounts/") && strings.Count(upstream, "/") == strings.Count(client, "/")
}

// refusalCode reads Keybrake's code from a refusal in any vendor's shape.
func refusalCode(body []byte) string {
	var e struct {
		Code    json.RawMessage `json:"code"`
		Details struct {
			Code string `json:"code"`
		} `json:"details"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	var s string
	if json.Unmarshal(e.Code, &s) == nil {
		return s
	}
	return e.Details.Code // Twilio: code is a number, Keybrake's is in details
}

// testFX is the exchange table kbtest's server runs with.
func testFX(t testing.TB) *pricing.FX {
	fx := pricing.DefaultFX()
	if err := fx.ParseFXList("EUR=1.10,JPY=0.0067,KWD=3.25,BHD=2.65"); err != nil {
		t.Fatal(err)
	}
	return fx
}

// stripeJudge judges a Stripe key against the sandbox's movements.
func stripeJudge(t testing.TB, env *kbtest.Env, k *client.Key) *judge {
	fx := testFX(t)
	return &judge{t: t, env: env, key: k, cap: k.DailyUSDCap, received: env.Stripe.Received, moved: func() keybrake.Micros {
		var total keybrake.Micros
		for cur, minor := range env.Stripe.MovedMinor() {
			m, err := fx.ToMicros(minor, stripe.Exponent(cur), cur)
			if err != nil {
				t.Fatalf("the sandbox moved %d %s, which has no rate: %v", minor, cur, err)
			}
			total = keybrake.AddCapped(total, m)
		}
		return total
	}}
}

// issueRefused asserts that issuing a key with these rules is refused with
// invalid_request naming the rule, and returns the message.
func issueRefused(t testing.TB, env *kbtest.Env, p client.IssueParams, mentions ...string) string {
	t.Helper()
	if p.ExpiresIn == "" {
		p.ExpiresIn = "1h"
	}
	if p.Vendor == "" {
		p.Vendor = "stripe"
	}
	if p.DailyUSDCap == "" {
		p.DailyUSDCap = "5"
	}
	_, err := env.Admin.IssueKey(context.Background(), p)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 400 || ce.Code != keybrake.CodeInvalidRequest || ce.Field != "allowed_endpoints" {
		t.Fatalf("issuing %v: %v, want 400 invalid_request on allowed_endpoints", p.AllowedEndpoints, err)
	}
	for _, m := range mentions {
		if !strings.Contains(ce.Message, m) {
			t.Fatalf("refusal %q does not mention %q", ce.Message, m)
		}
	}
	return ce.Message
}

// pricingFile parses a pricing file for a test server (its fx is kbtest's).
func pricingFile(t testing.TB, doc string) *pricing.Table {
	t.Helper()
	tb := pricing.Default()
	tb.FX = testFX(t)
	if err := tb.Apply("pricing.yaml", []byte(doc)); err != nil {
		t.Fatal(err)
	}
	return tb
}
