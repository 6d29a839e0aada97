package admin

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/api"
)

func tokenJSON(t *keybrake.IssuerToken) api.Token {
	out := api.Token{ID: t.ID, Name: t.Name, Status: "active", MaxDailyUSD: t.MaxDailyCap, Vendors: t.Vendors,
		Endpoints: t.Endpoints.Strings(), MaxExpiresIn: t.MaxExpiresIn.String(), CreatedAt: t.CreatedAt, RevokedAt: t.RevokedAt}
	if t.MaxTotalCap > 0 {
		out.MaxTotalUSD = &t.MaxTotalCap
	}
	if t.MaxOutstanding > 0 {
		out.MaxOutstandingUSD = &t.MaxOutstanding
	}
	out.ScopeFields = api.ScopeFieldsOf(t.Scope)
	if t.RevokedAt != nil {
		out.Status = "revoked"
	}
	return out
}

func (a *API) createToken(w http.ResponseWriter, r *http.Request) {
	var req api.TokenRequest
	if e := decodeJSON(r, w, &req); e != nil {
		writeError(w, e)
		return
	}
	t := &keybrake.IssuerToken{Name: strings.TrimSpace(req.Name)}
	if t.Name == "" || len(t.Name) > 100 || !printable(t.Name) {
		writeError(w, keybrake.FieldError("name", "name is required: 1 to 100 printable characters, e.g. \"sfn-billing\""))
		return
	}
	var e *keybrake.Error
	if t.MaxDailyCap, e = money("max_daily_usd_cap", req.MaxDailyUSD, true); e != nil {
		writeError(w, e)
		return
	}
	if t.MaxTotalCap, e = money("max_total_usd_cap", req.MaxTotalUSD, false); e != nil {
		writeError(w, e)
		return
	}
	if len(req.Vendors) == 0 {
		writeError(w, keybrake.FieldError("vendors", "vendors is required, e.g. [\"stripe\"]"))
		return
	}
	var vendors []VendorInfo
	for _, name := range req.Vendors {
		v, ok := a.vendors[name]
		if !ok {
			writeError(w, keybrake.FieldError("vendors", "unknown vendor %q; this Keybrake serves %s", name, a.vendorList()))
			return
		}
		vendors = append(vendors, v)
		t.Vendors = append(t.Vendors, name)
	}
	rules, err := keybrake.ParseRules(req.Endpoints)
	if err != nil {
		writeError(w, keybrake.FieldError("endpoints", "%v", err))
		return
	}
	if e := checkTokenRules(vendors, t.Vendors, rules); e != nil {
		writeError(w, e)
		return
	}
	t.Endpoints = rules
	if t.MaxExpiresIn, e = a.duration("max_expires_in", req.MaxExpiresIn); e != nil {
		writeError(w, e)
		return
	}
	if t.MaxOutstanding, t.Scope, e = a.tokenPolicy(&req, t); e != nil {
		writeError(w, e)
		return
	}
	secret := keybrake.NewIssuerToken()
	t.ID = keybrake.NewID("tok_")
	created, ok := a.storeToken(w, r, &req, t, secret)
	if !ok {
		return
	}
	out := tokenJSON(created)
	out.Token = secret
	a.log.Info("issuer token created", "token_id", created.ID, "name", created.Name, "max_daily_usd_cap", created.MaxDailyCap.String())
	writeJSON(w, http.StatusCreated, out)
}

func (a *API) listTokens(w http.ResponseWriter, r *http.Request) {
	tokens, err := a.cfg.Store.ListTokens(r.Context())
	if err != nil {
		a.storeError(w, "tokens", err)
		return
	}
	page := api.Page[api.Token]{Data: make([]api.Token, 0, len(tokens))}
	for _, t := range tokens {
		page.Data = append(page.Data, tokenJSON(t))
	}
	writeJSON(w, http.StatusOK, page)
}

func (a *API) revokeToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("token_id")
	t, err := a.cfg.Store.RevokeToken(r.Context(), id)
	if err != nil {
		a.storeError(w, "token "+strconv.Quote(id), err)
		return
	}
	a.log.Info("issuer token revoked", "token_id", t.ID, "name", t.Name)
	writeJSON(w, http.StatusOK, tokenJSON(t))
}
