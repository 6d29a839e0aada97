package keybrake

import (
	"fmt"
	"strings"
)

// Rule is one entry of a key's allow-list: "POST /v1/payment_intents/*/capture".
// A "*" segment matches exactly one non-empty path segment; every other
// segment matches itself literally. There is no prefix or multi-segment
// wildcard: a rule names whole endpoints.
type Rule struct {
	Method   string
	Segments []string // path segments without the leading "/"; "*" is a wildcard
}

// MaxRules bounds the allow-list of one key.
const MaxRules = 100

var ruleMethods = map[string]bool{"GET": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true}

// ParseRule reads "METHOD /path". The path must itself be canonical (see
// CheckCanonicalPath), with "*" allowed as a whole segment.
func ParseRule(s string) (Rule, error) {
	method, path, ok := strings.Cut(s, " ")
	if !ok || strings.ContainsAny(path, " \t") {
		return Rule{}, fmt.Errorf("rule %q: want \"METHOD /path\", one space between", s)
	}
	if !ruleMethods[method] {
		return Rule{}, fmt.Errorf("rule %q: method must be one of GET, POST, PUT, PATCH, DELETE (upper case)", s)
	}
	if strings.Contains(path, "?") {
		return Rule{}, fmt.Errorf("rule %q: a rule names a path, not a query", s)
	}
	// A "*" segment is checked as if it were an ordinary segment.
	if err := CheckCanonicalPath(strings.ReplaceAll(path, "*", "x")); err != nil {
		return Rule{}, fmt.Errorf("rule %q: %s", s, err.(*Error).Message)
	}
	segs := strings.Split(path[1:], "/")
	for _, seg := range segs {
		if strings.Contains(seg, "*") && seg != "*" {
			return Rule{}, fmt.Errorf("rule %q: \"*\" must be a whole path segment", s)
		}
	}
	return Rule{Method: method, Segments: segs}, nil
}

// MustParseRule is ParseRule for rules written in code; it panics on a typo.
func MustParseRule(s string) Rule {
	r, err := ParseRule(s)
	if err != nil {
		panic(err)
	}
	return r
}

// String is the rule's canonical text, as stored and shown.
func (r Rule) String() string {
	return r.Method + " /" + strings.Join(r.Segments, "/")
}

// Match reports whether method and a canonical path match the rule.
func (r Rule) Match(method, path string) bool {
	if method != r.Method || len(path) < 2 || path[0] != '/' {
		return false
	}
	rest := path[1:]
	for i, want := range r.Segments {
		seg, tail, more := strings.Cut(rest, "/")
		if seg == "" || (want != "*" && seg != want) {
			return false
		}
		last := i == len(r.Segments)-1
		if last {
			return !more
		}
		if !more {
			return false
		}
		rest = tail
	}
	return false
}

// Rules is an allow-list.
type Rules []Rule

// ParseRules parses and de-duplicates an allow-list.
func ParseRules(list []string) (Rules, error) {
	if len(list) == 0 {
		return nil, fmt.Errorf("at least one endpoint is required")
	}
	if len(list) > MaxRules {
		return nil, fmt.Errorf("at most %d endpoints per key", MaxRules)
	}
	seen := map[string]bool{}
	var rules Rules
	for _, s := range list {
		r, err := ParseRule(s)
		if err != nil {
			return nil, err
		}
		if seen[r.String()] {
			continue
		}
		seen[r.String()] = true
		rules = append(rules, r)
	}
	return rules, nil
}

// Match returns the first rule matching method and path.
func (rs Rules) Match(method, path string) (Rule, bool) {
	for _, r := range rs {
		if r.Match(method, path) {
			return r, true
		}
	}
	return Rule{}, false
}

// Strings returns the rules' canonical texts.
func (rs Rules) Strings() []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}
