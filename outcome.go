package keybrake

import (
	"sort"
	"strings"
)

// codes are every Code, for ParseOutcome. A code added to errors.go
// belongs here too (TestEveryCodeIsKnown checks the list against the
// HTTP status table).
var codes = []Code{
	CodeInvalidRequest, CodeUnauthorized, CodeNotFound, CodeMethodNotAllowed,
	CodeInvalidVaultKey, CodeKeyRevoked, CodeKeyExpired, CodeVendorMismatch,
	CodeUnknownVendor, CodeNonCanonicalPath, CodeEndpointNotAllowed,
	CodeUnpriceableRequest, CodeCurrencyNotPriced, CodeRequestTooLarge,
	CodeCapExhausted, CodeInvalidIdempotencyKey, CodeIdempotencyInProgress,
	CodeIdempotencyKeyReused, CodeOutcomeUnknown, CodeReplayUnavailable,
	CodeStoreUnavailable, CodeUpstreamUnreachable, CodeVendorNotConfigured,
	CodeInternal, CodeIssuerLimitExceeded, CodeForbidden,
	CodeUnsupportedContentType, CodeUnknownOperation, CodeOperationForbidden,
	CodeLookupFailed, CodeScopeViolation, CodeRateLimited, CodeAmbiguousHeader,
}

// outcomes are the outcomes that are not denials.
var outcomes = []Outcome{OutcomePending, OutcomeForwarded, OutcomeUnknown, OutcomeUnknownRetried, OutcomeReplayed}

// ParseOutcome reads an outcome filter (`keybrake calls --outcome`,
// GET /vault/calls?outcome=): one of the outcomes, or denied_ followed by
// an error code. Anything else is refused rather than matching nothing, so
// a typo is not read as "no such calls".
func ParseOutcome(s string) (Outcome, *Error) {
	o := Outcome(s)
	for _, known := range outcomes {
		if o == known {
			return o, nil
		}
	}
	if code, ok := strings.CutPrefix(s, "denied_"); ok {
		for _, c := range codes {
			if Code(code) == c {
				return o, nil
			}
		}
	}
	names := make([]string, 0, len(outcomes))
	for _, known := range outcomes {
		names = append(names, string(known))
	}
	sort.Strings(names)
	return "", FieldError("outcome", "unknown outcome %q: want %s, or denied_ followed by an error code (denied_cap_exhausted, denied_key_revoked, …)",
		s, strings.Join(names, ", "))
}
