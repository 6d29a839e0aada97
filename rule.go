package keybrake

import (
	"errors"
	"fmt"
	"strings"
)

// Rule is one entry of a key's allow-list, in one of two forms:
//
//   - a path rule, "POST /v1/payment_intents/*/capture": a "*" segment
//     matches exactly one non-empty path segment; every other segment matches
//     itself literally. There is no prefix or multi-segment wildcard: a rule
//     names whole endpoints.
//   - an operation rule, "payment_intents.capture": the name of an operation
//     of the key's vendor catalogue (see Catalog), as Stripe's restricted keys
//     grant named resources rather than paths.
//
// Either way a call is allowed only if the catalogue resolves it to an
// operation that is not forbidden (Rules.Allow).
type Rule struct {
	Method   string
	Segments []string // path segments without the leading "/"; "*" is a wildcard
	Op       string   // an operation rule's name; Method and Segments are then empty
}

// MaxRules bounds the allow-list of one key.
const MaxRules = 100

var ruleMethods = map[string]bool{"GET": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true}

// ParseRule reads "METHOD /path" or an operation name ("charges.create").
// The path must itself be canonical (see CheckCanonicalPath), with "*"
// allowed as a whole segment.
func ParseRule(s string) (Rule, error) {
	if ValidOperationName(s) {
		return Rule{Op: s}, nil
	}
	method, path, ok := strings.Cut(s, " ")
	if !ok || strings.ContainsAny(path, " \t") {
		return Rule{}, fmt.Errorf("rule %q: want \"METHOD /path\" (one space between) or an operation name such as \"payment_intents.create\"", s)
	}
	if !ruleMethods[method] {
		return Rule{}, fmt.Errorf("rule %q: method must be one of GET, POST, PUT, PATCH, DELETE (upper case)", s)
	}
	if strings.Contains(path, "?") {
		return Rule{}, fmt.Errorf("rule %q: a rule names a path, not a query", s)
	}
	segs, err := parsePattern(path)
	if err != nil {
		return Rule{}, fmt.Errorf("rule %q: %v", s, err)
	}
	return Rule{Method: method, Segments: segs}, nil
}

// parsePattern reads a canonical path in which "*" may stand for one whole
// segment, and returns its segments.
func parsePattern(path string) ([]string, error) {
	// A "*" segment is checked as if it were an ordinary segment.
	if err := CheckCanonicalPath(strings.ReplaceAll(path, "*", "x")); err != nil {
		return nil, errors.New(err.(*Error).Message)
	}
	segs := strings.Split(path[1:], "/")
	for _, seg := range segs {
		if strings.Contains(seg, "*") && seg != "*" {
			return nil, errors.New(`"*" must be a whole path segment`)
		}
	}
	return segs, nil
}

// ValidOperationName reports whether s is shaped like an operation name:
// two or more dot-separated parts of lower-case letters, digits and
// underscores, each starting with a letter ("payment_intents.create").
func ValidOperationName(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return false
	}
	for _, p := range parts {
		if p == "" || p[0] < 'a' || p[0] > 'z' {
			return false
		}
		for i := 0; i < len(p); i++ {
			c := p[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
				return false
			}
		}
	}
	return true
}

// IsOperation reports whether the rule names an operation rather than a path.
func (r Rule) IsOperation() bool { return r.Op != "" }

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
	if r.Op != "" {
		return r.Op
	}
	return r.Method + " /" + strings.Join(r.Segments, "/")
}

// Path is a path rule's path pattern ("/v1/payment_intents/*"); "" for an
// operation rule.
func (r Rule) Path() string {
	if r.Op != "" {
		return ""
	}
	return "/" + strings.Join(r.Segments, "/")
}

// Match reports whether method and a canonical path match a path rule
// literally. An operation rule matches no path: see Rules.Allow.
func (r Rule) Match(method, path string) bool {
	if r.Op != "" || method != r.Method || len(path) < 2 || path[0] != '/' {
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

// Match returns the first path rule matching method and path literally.
func (rs Rules) Match(method, path string) (Rule, bool) {
	for _, r := range rs {
		if r.Match(method, path) {
			return r, true
		}
	}
	return Rule{}, false
}

// Allow decides the allow-list for a call the catalogue resolved to op: it
// is allowed iff op is not forbidden and a path rule matches method and path
// literally, or an operation rule names op. It returns the rule that
// allowed it.
func (rs Rules) Allow(op *Operation, method, path string) (Rule, bool) {
	if op == nil || op.Model == ModelForbidden {
		return Rule{}, false
	}
	if r, ok := rs.Match(method, path); ok {
		return r, true
	}
	for _, r := range rs {
		if r.Op != "" && op.Is(r.Op) {
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
