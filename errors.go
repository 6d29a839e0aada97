package keybrake

import (
	"errors"
	"fmt"
	"net/http"
)

// Code is a stable, machine-readable error code. Clients branch on it (the
// seed's Lambda checks body.code === 'cap_exhausted'), so codes never change
// meaning once shipped.
type Code string

// Error codes of the proxy and the admin API. The README's error table lists
// each with its HTTP status.
const (
	CodeInvalidRequest         Code = "invalid_request"
	CodeUnauthorized           Code = "unauthorized"
	CodeNotFound               Code = "not_found"
	CodeMethodNotAllowed       Code = "method_not_allowed"
	CodeInvalidVaultKey        Code = "invalid_vault_key"
	CodeKeyRevoked             Code = "key_revoked"
	CodeKeyExpired             Code = "key_expired"
	CodeVendorMismatch         Code = "vendor_mismatch"
	CodeUnknownVendor          Code = "unknown_vendor"
	CodeNonCanonicalPath       Code = "non_canonical_path"
	CodeEndpointNotAllowed     Code = "endpoint_not_allowed"
	CodeUnpriceableRequest     Code = "unpriceable_request"
	CodeCurrencyNotPriced      Code = "currency_not_priced"
	CodeRequestTooLarge        Code = "request_too_large"
	CodeCapExhausted           Code = "cap_exhausted"
	CodeInvalidIdempotencyKey  Code = "invalid_idempotency_key"
	CodeIdempotencyInProgress  Code = "idempotency_in_progress"
	CodeIdempotencyKeyReused   Code = "idempotency_key_reused"
	CodeOutcomeUnknown         Code = "outcome_unknown"
	CodeReplayUnavailable      Code = "idempotency_replay_unavailable"
	CodeStoreUnavailable       Code = "store_unavailable"
	CodeUpstreamUnreachable    Code = "upstream_unreachable"
	CodeVendorNotConfigured    Code = "vendor_not_configured"
	CodeInternal               Code = "internal_error"
	CodeIssuerLimitExceeded    Code = "issuer_limit_exceeded"
	CodeForbidden              Code = "forbidden"
	CodeUnsupportedContentType Code = "unsupported_content_type"
	CodeUnknownOperation       Code = "unknown_operation"
	CodeOperationForbidden     Code = "operation_forbidden"
	CodeLookupFailed           Code = "lookup_failed"
	CodeScopeViolation         Code = "scope_violation"
	CodeRateLimited            Code = "rate_limited"
	CodeAmbiguousHeader        Code = "ambiguous_header"
)

// HTTPStatus is the status a code is answered with.
func (c Code) HTTPStatus() int {
	switch c {
	case CodeInvalidRequest, CodeNonCanonicalPath, CodeUnpriceableRequest,
		CodeCurrencyNotPriced, CodeInvalidIdempotencyKey, CodeAmbiguousHeader:
		return http.StatusBadRequest
	case CodeUnauthorized, CodeInvalidVaultKey, CodeKeyRevoked, CodeKeyExpired:
		return http.StatusUnauthorized
	case CodeVendorMismatch, CodeEndpointNotAllowed, CodeIssuerLimitExceeded, CodeForbidden,
		CodeUnknownOperation, CodeOperationForbidden, CodeScopeViolation:
		return http.StatusForbidden
	case CodeNotFound, CodeUnknownVendor:
		return http.StatusNotFound
	case CodeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case CodeIdempotencyInProgress, CodeIdempotencyKeyReused, CodeOutcomeUnknown, CodeReplayUnavailable:
		return http.StatusConflict
	case CodeRequestTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeUnsupportedContentType:
		return http.StatusUnsupportedMediaType
	case CodeCapExhausted, CodeRateLimited:
		return http.StatusTooManyRequests
	case CodeUpstreamUnreachable:
		return http.StatusBadGateway
	case CodeStoreUnavailable, CodeVendorNotConfigured, CodeLookupFailed:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// Error is a classified failure with a code a client can act on. Field names
// the request field at fault, when there is one.
type Error struct {
	Code    Code
	Message string
	Field   string
	Err     error // cause, for logs and errors.Is; never shown to clients
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldError builds an invalid_request *Error naming the field at fault.
func FieldError(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalidRequest, Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the Code carried by err, or CodeInternal.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// Sentinel errors of the store, matched with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	// ErrStoreUnavailable wraps any failure to reach or write the store: the
	// proxy answers 503 store_unavailable and forwards nothing.
	ErrStoreUnavailable = errors.New("store unavailable")
)

// ErrorMessage is the client-facing message of err: an *Error's Message,
// else the error's text.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}
