package keybrake

import (
	"net/url"
	"path"
	"strings"
	"testing"
)

func TestCanonicalTarget(t *testing.T) {
	ok := []struct{ target, path, query string }{
		{"/v1/payment_intents", "/v1/payment_intents", ""},
		{"/stripe/v1/payment_intents/pi_123/capture", "/stripe/v1/payment_intents/pi_123/capture", ""},
		{"/v1/customers?limit=3&email=a%40b.com", "/v1/customers", "limit=3&email=a%40b.com"},
		{"/2010-04-01/Accounts/AC123/Messages.json", "/2010-04-01/Accounts/AC123/Messages.json", ""},
		{"/v1/x~y_z-1.2", "/v1/x~y_z-1.2", ""},
		{"/v1/charges?expand[]=customer", "/v1/charges", "expand[]=customer"},
	}
	for _, c := range ok {
		p, q, err := CanonicalTarget(c.target)
		if err != nil || p != c.path || q != c.query {
			t.Errorf("CanonicalTarget(%q) = %q, %q, %v; want %q, %q", c.target, p, q, err, c.path, c.query)
		}
	}
	bad := []string{
		"",
		"v1/payment_intents", // no leading slash
		"http://api.stripe.com/v1/payment_intents", // absolute-form
		"*",                                        // asterisk-form
		"//v1/payment_intents",                     // empty segment
		"/v1//payment_intents",                     // empty segment
		"/v1/payment_intents/",                     // trailing slash
		"/v1/./payment_intents",                    // dot segment
		"/v1/../v1/payment_intents",                // dot-dot segment
		"/v1/payment_intents/..",                   // trailing dot-dot
		"/v1/...",                                  // dots only
		"/v1/%2e%2e/refunds",                       // encoded dots
		"/v1/%2E%2E/refunds",                       // encoded dots, upper case
		"/v1/payment_intents%2fpi_1",               // encoded slash
		"/v1/payment_intents%2Fpi_1",               // encoded slash
		"/v1/payment_intents%5cpi_1",               // encoded backslash
		"/v1/payment_intents\\pi_1",                // backslash
		"/v1/payment_%69ntents",                    // any percent-encoding in the path
		"/v1/payment_intents;jsessionid=1",         // path parameter
		"/v1/payment_intents\x00",                  // NUL
		"/v1/payment_intents\t",                    // control
		"/v1/payment intents",                      // space
		"/v1/payment_intents#frag",                 // fragment
		"/v1/paymént",                              // non-ASCII
		"/v1/payment_intents?",                     // bare ?
		"/v1/payment_intents?a=%zz",                // malformed escape in query
		"/v1/payment_intents?a=b;c=d",              // semicolon in query
		"/v1/payment_intents?a=b c",                // space in query
		"/" + strings.Repeat("a", MaxTargetLength), // too long
		"/", // root
	}
	for _, target := range bad {
		if p, q, err := CanonicalTarget(target); err == nil {
			t.Errorf("CanonicalTarget(%q) = %q, %q, nil; want non_canonical_path", target, p, q)
		} else if ErrorCode(err) != CodeNonCanonicalPath {
			t.Errorf("CanonicalTarget(%q): code %s, want non_canonical_path", target, ErrorCode(err))
		}
	}
}

func TestRules(t *testing.T) {
	rules, err := ParseRules([]string{"POST /v1/payment_intents", "POST /v1/payment_intents/*/capture", "GET /v1/customers/*"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		method, path string
		want         string
	}{
		{"POST", "/v1/payment_intents", "POST /v1/payment_intents"},
		{"POST", "/v1/payment_intents/pi_1/capture", "POST /v1/payment_intents/*/capture"},
		{"GET", "/v1/customers/cus_1", "GET /v1/customers/*"},
		{"GET", "/v1/payment_intents", ""},                 // wrong method
		{"post", "/v1/payment_intents", ""},                // methods are case-sensitive
		{"POST", "/v1/payment_intents/pi_1", ""},           // longer path
		{"POST", "/v1/payment_intents/pi_1/cancel", ""},    // other action
		{"GET", "/v1/customers", ""},                       // * needs a segment
		{"GET", "/v1/customers/cus_1/sources", ""},         // * is exactly one segment
		{"POST", "/v1/payment_intents/pi_1/x/capture", ""}, // * is exactly one segment
		{"POST", "/v1/payment_intentsX", ""},               // no prefix matching
	}
	for _, c := range cases {
		r, ok := rules.Match(c.method, c.path)
		got := ""
		if ok {
			got = r.String()
		}
		if got != c.want {
			t.Errorf("Match(%s %s) = %q, want %q", c.method, c.path, got, c.want)
		}
	}
	for _, bad := range []string{
		"", "POST", "POST v1/x", "post /v1/x", "POST  /v1/x", "POST /v1/x/", "POST /v1/../x",
		"POST /v1/x*", "POST /v1/%2e", "POST /v1/x?y=1", "TRACE /v1/x", "POST /v1//x", "POST /",
	} {
		if _, err := ParseRule(bad); err == nil {
			t.Errorf("ParseRule(%q) succeeded; want an error", bad)
		}
	}
	if _, err := ParseRules(nil); err == nil {
		t.Error("ParseRules(nil) succeeded; an allow-list must not be empty")
	}
}

// FuzzAllowedIsCanonical checks the proxy's matching invariant: whatever the
// canonical check and the rule matcher let through is a target no normaliser
// would rewrite, and it matches the rule literally, segment by segment.
func FuzzAllowedIsCanonical(f *testing.F) {
	for _, s := range []string{
		"/v1/payment_intents", "/v1/payment_intents/pi_1/capture", "/v1/payment_intents/../refunds",
		"/v1/payment_intents/%2e%2e/capture", "/v1/payment_intents/pi_1/capture?x=1", "/v1//payment_intents",
		"/v1/payment_intents/./capture", "/v1/payment_intents/pi_1%2fcapture", "/v1/payment_intents/pi_1;/capture",
		"http://x/v1/payment_intents", "/v1/payment_intents/\x00/capture", "/v1/payment_intents/pi_1/capture/",
	} {
		f.Add("POST", s)
	}
	rules, err := ParseRules([]string{"POST /v1/payment_intents", "POST /v1/payment_intents/*/capture", "GET /v1/customers/*"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, target string) {
		p, q, err := CanonicalTarget(target)
		if err != nil {
			return
		}
		rule, ok := rules.Match(method, p)
		if !ok {
			return
		}
		// Canonical: the target is exactly path[?query], and both a URL
		// parser and path cleaning leave the path unchanged.
		if q == "" && target != p || q != "" && target != p+"?"+q {
			t.Fatalf("target %q split into %q + %q", target, p, q)
		}
		if path.Clean(p) != p {
			t.Fatalf("allowed path %q is changed by path.Clean to %q", p, path.Clean(p))
		}
		u, err := url.ParseRequestURI(target)
		if err != nil || u.Path != p || u.EscapedPath() != p {
			t.Fatalf("allowed target %q parses to path %q (escaped %q), err %v", target, u.Path, u.EscapedPath(), err)
		}
		// Literal match: same number of segments; each equals the rule's or
		// is a non-empty segment under a "*".
		segs := strings.Split(p[1:], "/")
		if len(segs) != len(rule.Segments) || method != rule.Method {
			t.Fatalf("%s %q matched %q with a different shape", method, p, rule)
		}
		for i, s := range segs {
			if rule.Segments[i] != "*" && rule.Segments[i] != s || s == "" || s == "." || s == ".." {
				t.Fatalf("segment %d %q of %q does not match %q literally", i, s, p, rule)
			}
		}
	})
}
