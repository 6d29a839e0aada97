package keybrake

import (
	"slices"
	"time"
)

// IssuerToken is a scoped credential for the admin API: it can issue keys
// only within its ceilings, and revoke and read only the keys it issued. It
// is what an IssueVaultKey Lambda or a Temporal worker should hold instead
// of the all-powerful admin token.
type IssuerToken struct {
	ID           string
	Name         string
	MaxDailyCap  Micros        // a key's daily_usd_cap may not exceed it
	MaxTotalCap  Micros        // 0: keys need no lifetime cap; else they must set one ≤ it
	Vendors      []string      // vendors it may issue keys for
	Endpoints    Rules         // every endpoint of a key must be covered by one of these
	MaxExpiresIn time.Duration // a key's expires_in may not exceed it
	// MaxOutstanding, when set, bounds the sum of the daily caps of the
	// token's active keys: what a stolen token can mint in total. The store
	// enforces it in the transaction that inserts a key.
	MaxOutstanding Micros
	// Scope, when set, is a ceiling on the scope of the keys it issues:
	// each field it restricts, a key must restrict to a subset.
	Scope     Scope
	CreatedAt time.Time
	RevokedAt *time.Time
}

// Permits checks a key about to be issued against the token's ceilings and
// names the first ceiling it exceeds (issuer_limit_exceeded, with Field set
// to the ceiling). cat is the key's vendor catalogue, which says what each
// rule grants.
func (t *IssuerToken) Permits(k *Key, ttl time.Duration, cat *Catalog) *Error {
	deny := func(field, format string, args ...any) *Error {
		e := Errorf(CodeIssuerLimitExceeded, format, args...)
		e.Field = field
		return e
	}
	if !slices.Contains(t.Vendors, k.Vendor) {
		return deny("vendors", "issuer token %s may only issue keys for %v, not %s", t.Name, t.Vendors, k.Vendor)
	}
	if k.DailyCap > t.MaxDailyCap {
		return deny("max_daily_usd_cap", "daily_usd_cap $%s is above issuer token %s's ceiling of $%s", k.DailyCap, t.Name, t.MaxDailyCap)
	}
	if t.MaxTotalCap > 0 && (k.TotalCap == 0 || k.TotalCap > t.MaxTotalCap) {
		return deny("max_total_usd_cap", "issuer token %s requires a total_usd_cap of at most $%s", t.Name, t.MaxTotalCap)
	}
	if field, ok := k.Scope.Within(t.Scope); !ok {
		return deny(field, "issuer token %s only issues keys whose %s is a subset of %v", t.Name, field, t.Scope[field])
	}
	if t.MaxOutstanding > 0 && k.DailyCap > t.MaxOutstanding {
		return deny("max_outstanding_usd", "daily_usd_cap $%s is above issuer token %s's max_outstanding_usd of $%s", k.DailyCap, t.Name, t.MaxOutstanding)
	}
	if ttl > t.MaxExpiresIn {
		return deny("max_expires_in", "expires_in %s is longer than issuer token %s's ceiling of %s", ttl, t.Name, t.MaxExpiresIn)
	}
	for _, r := range k.Rules {
		if !t.Endpoints.Grants(r, cat) {
			return deny("endpoints", "endpoint %q is outside issuer token %s's endpoints %v", r.String(), t.Name, t.Endpoints.Strings())
		}
	}
	return nil
}

// Grants reports whether the allow-list grants at least what rule r does:
// literally (Cover), or because every operation r covers in the catalogue is
// covered by one of the list's rules, whichever form each is written in. A
// rule that covers no operation is granted by nothing.
func (rs Rules) Grants(r Rule, cat *Catalog) bool {
	if rs.Cover(r) {
		return true
	}
	if cat == nil {
		return false
	}
	ops := cat.Covers(r)
	if len(ops) == 0 {
		return false
	}
	granted := map[*Operation]bool{}
	for _, c := range rs {
		for _, op := range cat.Covers(c) {
			granted[op] = true
		}
	}
	for _, op := range ops {
		if !granted[op] {
			return false
		}
	}
	return true
}

// Cover reports whether the list contains a path rule at least as broad as
// the path rule r: same method and shape, each segment equal or a "*" (a
// "*" in r is only covered by a "*"), or the same operation rule.
func (rs Rules) Cover(r Rule) bool {
	for _, c := range rs {
		if r.Op != "" || c.Op != "" {
			if r.Op != "" && c.Op == r.Op {
				return true
			}
			continue
		}
		if c.Method != r.Method || len(c.Segments) != len(r.Segments) {
			continue
		}
		ok := true
		for i, seg := range c.Segments {
			if seg != "*" && seg != r.Segments[i] {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
