package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/api"
)

// Limits on free-text fields of a key.
const (
	maxLabel     = 512
	maxAgentName = 128
	maxMetadata  = 50
	maxMetaKey   = 40
	maxMetaValue = 500
	minExpiresIn = time.Second
)

func keyJSON(k *keybrake.Key, status keybrake.KeyStatus) api.Key {
	out := api.Key{
		ID: k.ID, Vendor: k.Vendor, Status: status, DailyUSDCap: k.DailyCap,
		AllowedEndpoints: k.Rules.Strings(), AgentRunLabel: k.AgentRunLabel, AgentName: k.AgentName,
		Metadata: k.Metadata, IssuerID: k.IssuerID, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt,
		AlertThresholds: nonNil(k.AlertThresholds), KeyPolicy: policyJSON(k),
	}
	if k.TotalCap > 0 {
		out.TotalUSDCap = &k.TotalCap
	}
	if k.MaxPerCall > 0 {
		out.MaxUSDPerCall = &k.MaxPerCall
	}
	return out
}

func viewJSON(v *keybrake.KeyView) api.Key {
	out := keyJSON(&v.Key, v.Status)
	u := v.Usage
	remaining := v.Key.Remaining(u)
	if v.Status != keybrake.StatusActive {
		remaining = 0
	}
	out.SpentUSD, out.SpentTodayUSD, out.ReservedUSD, out.RemainingUSD = &u.Spent, &u.SpentToday, &u.Reserved, &remaining
	total := u.Calls + u.DeniedCalls
	out.Calls, out.AllowedCalls, out.DeniedCalls = &total, &u.Calls, &u.DeniedCalls
	return out
}

// decodeJSON reads a strict JSON body: unknown fields, trailing data and
// oversized bodies are refused, naming what was wrong.
func decodeJSON(r *http.Request, w http.ResponseWriter, v any) *keybrake.Error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return &keybrake.Error{Code: keybrake.CodeInvalidRequest, Message: "Content-Type must be application/json"}
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return &keybrake.Error{Code: keybrake.CodeInvalidRequest, Message: "request body is unreadable or larger than 64 KiB"}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr):
			return keybrake.FieldError(typeErr.Field, "%s has the wrong type (got JSON %s)", typeErr.Field, typeErr.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return keybrake.FieldError(field, "unknown field %q", field)
		default:
			return &keybrake.Error{Code: keybrake.CodeInvalidRequest, Message: "body is not valid JSON: " + err.Error()}
		}
	}
	if dec.More() {
		return &keybrake.Error{Code: keybrake.CodeInvalidRequest, Message: "body has data after the JSON object"}
	}
	return nil
}

// ValidateIssue turns an IssueRequest into a key policy and a lifetime,
// or an error naming the field at fault.
func (a *API) ValidateIssue(req *IssueRequest) (*keybrake.Key, time.Duration, *keybrake.Error) {
	k := &keybrake.Key{}
	if req.Vendor == "" {
		return nil, 0, keybrake.FieldError("vendor", "vendor is required (%s)", a.vendorList())
	}
	v, ok := a.vendors[req.Vendor]
	if !ok {
		return nil, 0, keybrake.FieldError("vendor", "unknown vendor %q; this Keybrake serves %s", req.Vendor, a.vendorList())
	}
	if !v.Configured() {
		return nil, 0, keybrake.FieldError("vendor", "%s has no credential configured on this Keybrake (set KEYBRAKE_%s_* in its environment)", req.Vendor, strings.ToUpper(req.Vendor))
	}
	k.Vendor = req.Vendor

	var err *keybrake.Error
	if k.DailyCap, err = money("daily_usd_cap", req.DailyUSDCap, true); err != nil {
		return nil, 0, err
	}
	if k.TotalCap, err = money("total_usd_cap", req.TotalUSDCap, false); err != nil {
		return nil, 0, err
	}
	if k.MaxPerCall, err = money("max_usd_per_call", req.MaxUSDPerCall, false); err != nil {
		return nil, 0, err
	}

	if len(req.AllowedEndpoints) == 0 {
		return nil, 0, keybrake.FieldError("allowed_endpoints", "allowed_endpoints is required: a non-empty list such as [\"POST /v1/payment_intents\"] or [\"payment_intents.create\"]")
	}
	rules, perr := keybrake.ParseRules(req.AllowedEndpoints)
	if perr != nil {
		return nil, 0, keybrake.FieldError("allowed_endpoints", "%v", perr)
	}
	if k.Rules, err = checkRules(v, rules); err != nil {
		return nil, 0, err
	}

	ttl, err := a.expiresIn(req.ExpiresIn)
	if err != nil {
		return nil, 0, err
	}

	if len(req.AgentRunLabel) > maxLabel || !printable(req.AgentRunLabel) {
		return nil, 0, keybrake.FieldError("agent_run_label", "agent_run_label must be at most %d printable characters", maxLabel)
	}
	if len(req.AgentName) > maxAgentName || !printable(req.AgentName) {
		return nil, 0, keybrake.FieldError("agent_name", "agent_name must be at most %d printable characters", maxAgentName)
	}
	k.AgentRunLabel, k.AgentName = req.AgentRunLabel, req.AgentName
	if len(req.Metadata) > maxMetadata {
		return nil, 0, keybrake.FieldError("metadata", "metadata has at most %d entries", maxMetadata)
	}
	for mk, mv := range req.Metadata {
		if mk == "" || len(mk) > maxMetaKey || len(mv) > maxMetaValue || !printable(mk) || !printable(mv) {
			return nil, 0, keybrake.FieldError("metadata", "metadata keys are 1-%d and values at most %d printable characters", maxMetaKey, maxMetaValue)
		}
	}
	if len(req.Metadata) > 0 {
		k.Metadata = req.Metadata
	}
	if k.AlertThresholds, err = alertThresholds(req.AlertThresholds); err != nil {
		return nil, 0, err
	}
	if err = a.validatePolicy(&req.KeyPolicy, req.Vendor, k); err != nil {
		return nil, 0, err
	}
	return k, ttl, nil
}

func (a *API) vendorList() string {
	names := make([]string, 0, len(a.cfg.Vendors))
	for _, v := range a.cfg.Vendors {
		names = append(names, v.Name())
	}
	return strings.Join(names, ", ")
}

func money(field string, raw json.RawMessage, required bool) (keybrake.Micros, *keybrake.Error) {
	if len(raw) == 0 || string(raw) == "null" || string(raw) == `""` {
		if required {
			return 0, keybrake.FieldError(field, "%s is required: dollars as a number or decimal string, e.g. 50 or \"49.99\"", field)
		}
		return 0, nil
	}
	m, err := keybrake.ParseUSDJSON(raw)
	if err != nil {
		return 0, keybrake.FieldError(field, "%s: %v (dollars, at most 6 decimals, e.g. 50 or \"49.99\")", field, err)
	}
	if m <= 0 {
		return 0, keybrake.FieldError(field, "%s must be greater than 0", field)
	}
	return m, nil
}

// expiresIn reads "30m", "2h", "1h30m", "90s", a number of seconds, or a
// string of digits (seconds).
func (a *API) expiresIn(raw json.RawMessage) (time.Duration, *keybrake.Error) {
	return a.duration("expires_in", raw)
}

// duration reads a required lifetime field, bounded by the server maximum.
func (a *API) duration(field string, raw json.RawMessage) (time.Duration, *keybrake.Error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, keybrake.FieldError(field, "%s is required, e.g. \"30m\", \"2h\" or 3600 (seconds)", field)
	}
	var d time.Duration
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		s = string(raw) // a JSON number: seconds
	}
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n <= 0 || n > int64(a.cfg.MaxExpiresIn/time.Second) {
			return 0, keybrake.FieldError(field, "%s must be between 1 second and %s", field, a.cfg.MaxExpiresIn)
		}
		d = time.Duration(n) * time.Second
	} else {
		var perr error
		d, perr = time.ParseDuration(s)
		if perr != nil {
			return 0, keybrake.FieldError(field, "%s %q: want a duration such as \"30m\" or \"2h\", or whole seconds", field, s)
		}
	}
	if d < minExpiresIn {
		return 0, keybrake.FieldError(field, "%s must be at least 1s", field)
	}
	if d > a.cfg.MaxExpiresIn {
		return 0, keybrake.FieldError(field, "%s %s is longer than this server's maximum of %s", field, d, a.cfg.MaxExpiresIn)
	}
	return d, nil
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

func (a *API) issueKey(w http.ResponseWriter, r *http.Request) {
	var req IssueRequest
	if e := decodeJSON(r, w, &req); e != nil {
		writeError(w, e)
		return
	}
	k, ttl, e := a.ValidateIssue(&req)
	if e != nil {
		writeError(w, e)
		return
	}
	if issuer := who(r).issuer; issuer != nil {
		if e := issuer.Permits(k, ttl, a.vendors[k.Vendor].Catalog()); e != nil {
			writeError(w, e)
			return
		}
		k.IssuerID = issuer.ID
	}
	secret := keybrake.NewVaultKey()
	k.ID = keybrake.NewID("vk_")
	created, ok := a.storeKey(w, r, &req, k, secret, ttl)
	if !ok {
		return
	}
	out := keyJSON(created, keybrake.StatusActive)
	out.AllowedOperations = a.grants(created.Vendor, created.Rules)
	out.VaultKey = secret
	a.log.Info("vault key issued", "key_id", created.ID, "vendor", created.Vendor,
		"daily_usd_cap", created.DailyCap.String(), "expires_at", created.ExpiresAt, "agent_run_label", created.AgentRunLabel)
	writeJSON(w, http.StatusCreated, out)
}

func (a *API) getKey(w http.ResponseWriter, r *http.Request) {
	v, ok := a.ownKey(w, r)
	if ok {
		out := a.View(v)
		writeJSON(w, http.StatusOK, out)
	}
}

// ownKey loads the key named in the path. An issuer token sees only keys it
// issued: any other key reads as not found, so it cannot probe key ids.
func (a *API) ownKey(w http.ResponseWriter, r *http.Request) (*keybrake.KeyView, bool) {
	id := r.PathValue("key_id")
	v, err := a.cfg.Store.GetKey(r.Context(), id)
	if err == nil {
		if issuer := who(r).issuer; issuer != nil && v.IssuerID != issuer.ID {
			err = keybrake.ErrNotFound
		}
	}
	if err != nil {
		a.storeError(w, "key "+strconv.Quote(id), err)
		return nil, false
	}
	return v, true
}

func limitParam(r *http.Request) (int, *keybrake.Error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > keybrake.MaxPageSize {
		return 0, keybrake.FieldError("limit", "limit must be an integer from 1 to %d", keybrake.MaxPageSize)
	}
	return n, nil
}

func (a *API) listKeys(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, e := limitParam(r)
	if e != nil {
		writeError(w, e)
		return
	}
	f := keybrake.KeyFilter{AgentRunLabel: q.Get("agent_run_label"), Status: keybrake.KeyStatus(q.Get("status")), Limit: limit, Cursor: q.Get("cursor")}
	if issuer := who(r).issuer; issuer != nil {
		f.IssuerID = issuer.ID
	}
	views, next, err := a.cfg.Store.ListKeys(r.Context(), f)
	if err != nil {
		a.storeError(w, "keys", err)
		return
	}
	page := api.Page[api.Key]{Data: make([]KeyJSON, 0, len(views)), NextCursor: next, HasMore: next != ""}
	for _, v := range views {
		out := a.View(v)
		page.Data = append(page.Data, out)
	}
	writeJSON(w, http.StatusOK, page)
}

func (a *API) revokeKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("key_id")
	if who(r).issuer != nil {
		if _, ok := a.ownKey(w, r); !ok { // an issuer revokes only its own keys
			return
		}
	}
	out, err := a.Revoke(r.Context(), id)
	if err != nil {
		a.storeError(w, "key "+strconv.Quote(id), err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
