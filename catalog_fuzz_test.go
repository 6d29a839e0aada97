package keybrake_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/vendors/resend"
	"github.com/keybrake/keybrake/vendors/stripe"
	"github.com/keybrake/keybrake/vendors/twilio"
)

func catalogs(t testing.TB) []*keybrake.Catalog {
	t.Helper()
	sv, err := stripe.New("", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	tv, err := twilio.New(twilio.Config{})
	if err != nil {
		t.Fatal(err)
	}
	rv, err := resend.New(resend.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return []*keybrake.Catalog{sv.Catalog(), tv.Catalog(), rv.Catalog()}
}

var methods = []string{"GET", "POST", "PUT", "PATCH", "DELETE"}

func matches(p keybrake.Pattern, path string) bool {
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(segs) != len(p) {
		return false
	}
	for i, s := range p {
		if s != "*" && s != segs[i] {
			return false
		}
	}
	return true
}

// beats reports whether a is more specific than b at their first
// difference (a literal beats "*").
func beats(a, b keybrake.Pattern) bool {
	for i := range a {
		if a[i] != b[i] {
			return b[i] == "*"
		}
	}
	return false
}

func seedPaths(f *testing.F) {
	for _, c := range catalogs(f) {
		for _, op := range c.Operations() {
			f.Add(uint8(slices.Index(methods, op.Method)), op.Path(), "pi_1/search/AC1/Messages.json/Keys/x.xml")
		}
	}
	f.Add(uint8(1), "/2010-04-01/Accounts/*/Messages.json", "ACx")
	f.Add(uint8(0), "/2010-04-01/Accounts/*", "ACx.json")
	f.Add(uint8(1), "/v1/*", "subscriptions")
	f.Add(uint8(1), "/v1/*/*", "payment_intents/pi_1")
}

// FuzzResolve: any request the catalogue accepts resolves to exactly one
// operation, whose pattern matches the normalised path and beats every
// other entry that matches it; and the operation a rule's path reaches is
// one the rule is shown (and checked at issuance) to cover. So a rule
// cannot reach a forbidden operation that issuance did not see.
func FuzzResolve(f *testing.F) {
	seedPaths(f)
	cats := catalogs(f)
	f.Fuzz(func(t *testing.T, m uint8, rulePath, fill string) {
		method := methods[int(m)%len(methods)]
		rule, err := keybrake.ParseRule(method + " " + rulePath)
		if err != nil || rule.IsOperation() {
			return
		}
		// A concrete path the rule matches: each "*" filled with a segment.
		fills := strings.Split(fill, "/")
		segs := append([]string(nil), rule.Segments...)
		j := 0
		for i, s := range segs {
			if s == "*" {
				segs[i] = fills[j%len(fills)]
				j++
			}
		}
		path := "/" + strings.Join(segs, "/")
		if keybrake.CheckCanonicalPath(path) != nil || !rule.Match(method, path) {
			return
		}
		for _, c := range cats {
			op, params := c.Resolve(method, path)
			norm := c.Normalize(path)
			var all []*keybrake.Operation
			for _, o := range c.Operations() {
				if o.Method == method && matches(o.Pattern, norm) {
					all = append(all, o)
				}
			}
			if op == nil {
				if len(all) > 0 {
					t.Fatalf("%s %s: %d entries match but nothing resolved", method, path, len(all))
				}
				continue
			}
			if !matches(op.Pattern, norm) || op.Method != method {
				t.Fatalf("%s %s resolved to %s (%s %s), which does not match %s", method, path, op.Name, op.Method, op.Path(), norm)
			}
			for _, o := range all {
				if o != op && !beats(op.Pattern, o.Pattern) {
					t.Fatalf("%s %s: %s and %s both match and neither is more specific", method, path, op.Name, o.Name)
				}
			}
			if n := strings.Count(op.Path(), "*"); len(params) != n {
				t.Fatalf("%s: %d params for %d wildcards", op.Name, len(params), n)
			}
			if !slices.Contains(c.Covers(rule), op) {
				t.Fatalf("rule %s reaches %s via %s but Covers says %v", rule, op.Name, path, c.Covers(rule))
			}
			literal := keybrake.MustParseRule(method + " " + path)
			if got := c.Covers(literal); len(got) != 1 || got[0] != op {
				t.Fatalf("the literal rule %s covers %v, want only %s", literal, got, op.Name)
			}
		}
	})
}

// BenchmarkResolve: resolving a call and checking a key's rules against it,
// on the Stripe catalogue.
func BenchmarkResolve(b *testing.B) {
	c := catalogs(b)[0]
	rules, _ := keybrake.ParseRules([]string{"POST /v1/payment_intents", "payment_intents.confirm"})
	for b.Loop() {
		op, _ := c.Resolve("POST", "/v1/payment_intents/pi_3Q0abc/confirm")
		if _, ok := rules.Allow(op, "POST", "/v1/payment_intents/pi_3Q0abc/confirm"); !ok {
			b.Fatal("not allowed")
		}
	}
}
