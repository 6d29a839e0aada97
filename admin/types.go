package admin

import "github.com/keybrake/keybrake/api"

// The wire types live in package api, shared with the client and the
// spec. These names stay for the code in this module that reads admin's
// answers in process (the dashboard, the CLI's flag helpers).
type (
	// KeyJSON is a key as the API shows it.
	KeyJSON = api.Key
	// RevokeResponse is the answer to DELETE /vault/keys/{key_id}.
	RevokeResponse = api.RevokeResponse
	// ScopeFields are a key's scope fields (an issuer token's ceilings).
	ScopeFields = api.ScopeFields
	// KeyPolicy is a key's scope, rate limit and idempotency scope.
	KeyPolicy = api.KeyPolicy
	// IssueRequest is the body of POST /vault/keys.
	IssueRequest = api.IssueRequest
)
