package keybrake

import (
	"context"
	"sort"
	"strings"
	"testing"
)

type zeroPricer struct{}

func (zeroPricer) Price(context.Context, *PriceCall) (*Quote, error) { return &Quote{}, nil }
func (zeroPricer) Describe() string                                  { return "0" }

func testCatalog(t testing.TB) *Catalog {
	t.Helper()
	mk := func(name, route string, model PriceModel) *Operation {
		method, path, _ := strings.Cut(route, " ")
		o := &Operation{Name: name, Method: method, Pattern: MustParsePattern(path), Model: model, Note: name}
		if model == ModelBody || model == ModelLookup {
			o.Pricer = zeroPricer{}
		}
		return o
	}
	ext := func(p string) string { return strings.TrimSuffix(p, ".json") }
	return MustCatalog("v", ext, []*Operation{
		mk("pi.create", "POST /v1/pi", ModelBody),
		mk("pi.search", "GET /v1/pi/search", ModelFree),
		mk("pi.retrieve", "GET /v1/pi/*", ModelFree),
		mk("pi.update", "POST /v1/pi/*", ModelBody),
		mk("pi.confirm", "POST /v1/pi/*/confirm", ModelLookup),
		mk("pi.special", "POST /v1/pi/special/*", ModelFree),
		mk("x.any_confirm", "POST /v1/*/*/confirm", ModelFree),
		mk("keys.create", "POST /v1/keys", ModelForbidden),
		mk("acct.fetch", "GET /v1/accounts/*", ModelForbidden),
		mk("acct.msgs", "GET /v1/accounts/*/msgs", ModelFree),
	})
}

func TestCatalogValidation(t *testing.T) {
	base := func() *Operation {
		return &Operation{Name: "a.b", Method: "POST", Pattern: MustParsePattern("/v1/a"), Model: ModelFree}
	}
	cases := map[string]func(*Operation){
		"bad name":            func(o *Operation) { o.Name = "Ab" },
		"bad method":          func(o *Operation) { o.Method = "HEAD" },
		"bad model":           func(o *Operation) { o.Model = "cheap" },
		"forbidden priced":    func(o *Operation) { o.Model, o.HasFixed = ModelForbidden, true },
		"body without pricer": func(o *Operation) { o.Model = ModelBody },
		"fixed with pricer":   func(o *Operation) { o.Model, o.Pricer = ModelFixed, zeroPricer{} },
		"not normal form":     func(o *Operation) { o.Pattern = MustParsePattern("/v1/a.json") },
	}
	for name, mod := range cases {
		o := base()
		mod(o)
		if _, err := NewCatalog("v", func(p string) string { return strings.TrimSuffix(p, ".json") }, []*Operation{o}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewCatalog("v", nil, []*Operation{base(), base()}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate name: %v", err)
	}
	other := base()
	other.Name = "a.c"
	if _, err := NewCatalog("v", nil, []*Operation{base(), other}); err == nil || !strings.Contains(err.Error(), "already a.b") {
		t.Errorf("duplicate pattern: %v", err)
	}
}

func TestResolveMostSpecificWins(t *testing.T) {
	c := testCatalog(t)
	cases := []struct {
		method, path, want string
		params             []string
	}{
		{"POST", "/v1/pi", "pi.create", nil},
		{"POST", "/v1/pi.json", "pi.create", nil}, // normalised
		{"GET", "/v1/pi/search", "pi.search", nil},
		{"GET", "/v1/pi/pi_1", "pi.retrieve", []string{"pi_1"}},
		{"POST", "/v1/pi/pi_1", "pi.update", []string{"pi_1"}},
		{"POST", "/v1/pi/pi_1/confirm", "pi.confirm", []string{"pi_1"}},
		{"POST", "/v1/pi/pi_1/confirm.json", "pi.confirm", []string{"pi_1"}},
		{"POST", "/v1/pi/special/confirm", "pi.special", []string{"confirm"}}, // literal "special" beats "*" first
		{"POST", "/v1/charges/ch_1/confirm", "x.any_confirm", []string{"charges", "ch_1"}},
		{"GET", "/v1/accounts/a1", "acct.fetch", []string{"a1"}},
		{"GET", "/v1/accounts/a1.json", "acct.fetch", []string{"a1"}},
		{"GET", "/v1/accounts/a1/msgs", "acct.msgs", []string{"a1"}},
		{"PUT", "/v1/pi", "", nil},
		{"POST", "/v1/pi/pi_1/capture", "", nil},
		{"POST", "/v1", "", nil},
		{"POST", "/v1/pi/a/b/c", "", nil},
	}
	for _, tc := range cases {
		op, params := c.Resolve(tc.method, tc.path)
		got := ""
		if op != nil {
			got = op.Name
		}
		if got != tc.want || strings.Join(params, ",") != strings.Join(tc.params, ",") {
			t.Errorf("%s %s → %q %v, want %q %v", tc.method, tc.path, got, params, tc.want, tc.params)
		}
	}
}

func names(ops []*Operation) string {
	var n []string
	for _, o := range ops {
		n = append(n, o.Name)
	}
	sort.Strings(n)
	return strings.Join(n, ",")
}

func TestCovers(t *testing.T) {
	c := testCatalog(t)
	cases := map[string]string{
		"POST /v1/pi":             "pi.create",
		"POST /v1/pi.json":        "pi.create",
		"POST /v1/*":              "keys.create,pi.create",
		"POST /v1/pi/*":           "pi.update",
		"POST /v1/pi/pi_1":        "pi.update",
		"GET /v1/pi/*":            "pi.retrieve,pi.search",
		"GET /v1/pi/search":       "pi.search",
		"POST /v1/pi/*/confirm":   "pi.confirm,pi.special",
		"POST /v1/pi/pi_1/*":      "pi.confirm",
		"POST /v1/*/*/confirm":    "pi.confirm,pi.special,x.any_confirm",
		"POST /v1/pi/special/*":   "pi.special",
		"POST /v1/cus/*/confirm":  "x.any_confirm",
		"GET /v1/accounts/*":      "acct.fetch",
		"GET /v1/*/*":             "acct.fetch,pi.retrieve,pi.search",
		"POST /v1/pi/*/capture":   "pi.special", // /v1/pi/special/capture is pi.special
		"DELETE /v1/pi/*":         "",
		"pi.confirm":              "pi.confirm",
		"v.pi.confirm":            "pi.confirm",
		"pi.nothing":              "",
		"GET /v1/accounts/*/msgs": "acct.msgs",
	}
	for rule, want := range cases {
		r, err := ParseRule(rule)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(c.Covers(r)); got != want {
			t.Errorf("Covers(%s) = %s, want %s", rule, got, want)
		}
	}
}

func TestAllow(t *testing.T) {
	c := testCatalog(t)
	rules, err := ParseRules([]string{"POST /v1/pi", "pi.confirm", "POST /v1/*", "GET /v1/accounts/*"})
	if err != nil {
		t.Fatal(err)
	}
	check := func(method, path string, want bool) {
		t.Helper()
		op, _ := c.Resolve(method, path)
		if _, ok := rules.Allow(op, method, path); ok != want {
			t.Errorf("%s %s allowed=%v, want %v", method, path, ok, want)
		}
	}
	check("POST", "/v1/pi", true)
	check("POST", "/v1/pi.json", true) // by "POST /v1/*", which matches literally
	check("POST", "/v1/pi/pi_1/confirm", true)
	check("POST", "/v1/pi/pi_1", false)
	check("POST", "/v1/keys", false)       // the wildcard admits it, but it is forbidden
	check("GET", "/v1/accounts/a1", false) // forbidden
	check("POST", "/v1/unknown", false)    // no operation
	check("GET", "/v1/accounts/a1/msgs", false)
}

func TestOperationRules(t *testing.T) {
	for _, s := range []string{"payment_intents.create", "stripe.charges.create", "a.b2_c"} {
		r, err := ParseRule(s)
		if err != nil || !r.IsOperation() || r.String() != s || r.Match("POST", "/a/b") {
			t.Errorf("%s: %+v %v", s, r, err)
		}
	}
	for _, s := range []string{"charges", "Charges.create", "charges..create", "charges.create.", "1a.b", "charges create"} {
		if _, err := ParseRule(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestGrants(t *testing.T) {
	c := testCatalog(t)
	tok, _ := ParseRules([]string{"POST /v1/pi/*/confirm", "pi.update", "GET /v1/pi/*"})
	for rule, want := range map[string]bool{
		"POST /v1/pi/pi_1/confirm": true,  // literal cover
		"pi.confirm":               true,  // the token's path rule covers the operation
		"POST /v1/pi/*":            true,  // covers only pi.update, granted by name
		"POST /v1/pi/pi_9":         true,  // idem
		"GET /v1/pi/search":        true,  // covered by GET /v1/pi/*
		"POST /v1/pi":              false, // pi.create not granted
		"POST /v1/*":               false, // covers pi.create and keys.create
		"POST /v1/nothing":         false, // covers nothing
		"POST /v1/*/*/confirm":     false, // covers x.any_confirm too
	} {
		r, _ := ParseRule(rule)
		if got := tok.Grants(r, c); got != want {
			t.Errorf("Grants(%s) = %v, want %v", rule, got, want)
		}
	}
}
