// Package admin is the /vault/ REST API: issue, inspect, list and revoke
// vault keys, read the audit log, the reports and the webhooks. Every route
// requires the admin token or, for issuing and managing its own keys, an
// issuer token; there is no unauthenticated admin endpoint.
//
// The API's contract is docs/openapi.yaml, served at GET /vault/openapi.json;
// its wire types are package api. Tests hold the two together: every admin
// call made through internal/kbtest is validated against the spec, and
// every route registered here (Routes) must be an operation of it.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/api"
	"github.com/keybrake/keybrake/webhooks"
)

// Store is what the admin API needs from the ledger.
type Store interface {
	CreateKey(ctx context.Context, k *keybrake.Key, secretHash string, ttl time.Duration) (*keybrake.Key, error)
	GetKey(ctx context.Context, id string) (*keybrake.KeyView, error)
	ListKeys(ctx context.Context, f keybrake.KeyFilter) ([]*keybrake.KeyView, string, error)
	RevokeKey(ctx context.Context, id string) (*keybrake.Key, error)
	ListCalls(ctx context.Context, f keybrake.CallFilter) ([]*keybrake.Call, string, error)
	RunSummary(ctx context.Context, label string) (*keybrake.RunSummary, error)

	CreateToken(ctx context.Context, t *keybrake.IssuerToken, secretHash string) (*keybrake.IssuerToken, error)
	GetToken(ctx context.Context, id string) (*keybrake.IssuerToken, error)

	issueStore
	TokenByHash(ctx context.Context, secretHash string) (*keybrake.IssuerToken, error)
	ListTokens(ctx context.Context) ([]*keybrake.IssuerToken, error)
	RevokeToken(ctx context.Context, id string) (*keybrake.IssuerToken, error)

	reportStore
	webhookStore
}

// VendorInfo is what key issuance checks against: a vendor's name, whether
// its credential is configured, which root paths it owns, and its
// operation catalogue.
type VendorInfo interface {
	Name() string
	Owns(path string) bool
	Configured() bool
	Catalog() *keybrake.Catalog
}

// Config configures the admin API.
type Config struct {
	Store   Store
	Vendors []VendorInfo
	// Token is the admin bearer token; required.
	Token string
	// MaxExpiresIn caps expires_in (default 24h).
	MaxExpiresIn time.Duration
	// IdempotencyTTL is how long a retried issuance replays (default 24h).
	IdempotencyTTL time.Duration
	Logger         *slog.Logger

	// Sealer keeps webhook secrets (sealed at rest when it has a key); nil
	// stores them plain.
	Sealer *webhooks.Sealer
	// WebhookDenyPrivate refuses webhook URLs on private or local addresses.
	WebhookDenyPrivate bool
}

// API is the admin HTTP handler.
type API struct {
	cfg     Config
	vendors map[string]VendorInfo
	mux     *http.ServeMux
	log     *slog.Logger
	routes  []string
}

// maxBody bounds an admin request body.
const maxBody = 64 << 10

// New builds the admin API.
func New(cfg Config) (*API, error) {
	if cfg.Token == "" {
		return nil, errors.New("admin: an admin token is required")
	}
	if cfg.MaxExpiresIn <= 0 {
		cfg.MaxExpiresIn = 24 * time.Hour
	}
	if cfg.IdempotencyTTL <= 0 {
		cfg.IdempotencyTTL = 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Sealer == nil {
		cfg.Sealer, _ = webhooks.NewSealer(nil)
	}
	if _, err := openAPIJSON(); err != nil {
		return nil, err
	}
	a := &API{cfg: cfg, vendors: map[string]VendorInfo{}, mux: http.NewServeMux(), log: cfg.Logger}
	for _, v := range cfg.Vendors {
		a.vendors[v.Name()] = v
	}
	// Issuer tokens may issue keys, and read and revoke their own.
	a.handle("POST /vault/keys", a.issueKey)
	a.handle("GET /vault/keys", a.listKeys)
	a.handle("GET /vault/keys/{key_id}", a.getKey)
	a.handle("DELETE /vault/keys/{key_id}", a.revokeKey)
	// Everything else is for the admin token only.
	a.handle("GET /vault/calls", adminOnly(a.listCalls))
	a.handle("GET /vault/runs/{label...}", adminOnly(a.runSummary))
	a.handle("POST /vault/tokens", adminOnly(a.createToken))
	a.handle("GET /vault/tokens", adminOnly(a.listTokens))
	a.handle("DELETE /vault/tokens/{token_id}", adminOnly(a.revokeToken))
	a.handle("GET /vault/openapi.json", a.serveOpenAPI)
	a.routeReports()
	a.routeWebhooks()
	// The catch-all answers unknown routes in the API's error shape; it is
	// not a route of the API, so Routes leaves it out.
	a.mux.HandleFunc("/vault/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, keybrake.Errorf(keybrake.CodeNotFound, "no admin route %s %s", r.Method, r.URL.Path))
	})
	return a, nil
}

// handle registers one route of the API ("METHOD /vault/path").
func (a *API) handle(pattern string, h http.HandlerFunc) {
	a.routes = append(a.routes, pattern)
	a.mux.HandleFunc(pattern, h)
}

// Routes lists every route the API serves, as registered with its mux
// ("GET /vault/keys/{key_id}", "GET /vault/runs/{label...}"): the
// route-coverage test checks each against docs/openapi.yaml, and each of
// the spec's operations against it.
func (a *API) Routes() []string { return append([]string(nil), a.routes...) }

// principal is who is calling: the admin (issuer nil) or an issuer token.
type principal struct {
	issuer *keybrake.IssuerToken
}

type principalKey struct{}

func who(r *http.Request) principal {
	p, _ := r.Context().Value(principalKey{}).(principal)
	return p
}

// adminOnly refuses issuer tokens.
func adminOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if p := who(r); p.issuer != nil {
			writeError(w, keybrake.Errorf(keybrake.CodeForbidden, "issuer token %s may only issue, read and revoke its own keys", p.issuer.Name))
			return
		}
		h(w, r)
	}
}

// ServeHTTP authenticates before routing: an unauthenticated request learns
// nothing, not even which routes exist. The admin token is compared in
// constant time; an issuer token is looked up by hash on every request, so
// revoking one takes effect at once.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token, ok := bearer(r)
	var p principal
	switch {
	case ok && keybrake.SecretsEqual(token, a.cfg.Token):
	case ok && keybrake.WellFormedIssuerToken(token):
		t, err := a.cfg.Store.TokenByHash(r.Context(), keybrake.HashSecret(token))
		if err != nil && !errors.Is(err, keybrake.ErrNotFound) {
			a.storeError(w, "token", err)
			return
		}
		if t == nil || t.RevokedAt != nil {
			ok = false
			break
		}
		p.issuer = t
	default:
		ok = false
	}
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="keybrake-admin"`)
		writeError(w, keybrake.Errorf(keybrake.CodeUnauthorized, "admin API requires Authorization: Bearer $KEYBRAKE_ADMIN_TOKEN (or a valid issuer token)"))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	a.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
}

func bearer(r *http.Request) (string, bool) {
	const prefix = "Bearer "
	h := r.Header.Get("Authorization")
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	return h[len(prefix):], true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, keybrake.Errorf(keybrake.CodeInternal, "response could not be encoded"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n')) //nolint:errcheck // the client may have gone
}

func writeError(w http.ResponseWriter, e *keybrake.Error) {
	writeJSON(w, e.Code.HTTPStatus(), api.Error{Code: e.Code, Message: e.Message, Field: e.Field})
}

// storeError maps a store failure to an answer.
func (a *API) storeError(w http.ResponseWriter, what string, err error) {
	var ke *keybrake.Error
	switch {
	case errors.As(err, &ke):
		writeError(w, ke)
	case errors.Is(err, keybrake.ErrNotFound):
		writeError(w, keybrake.Errorf(keybrake.CodeNotFound, "%s not found", what))
	case errors.Is(err, keybrake.ErrStoreUnavailable):
		a.log.Error("store unavailable", "err", err.Error())
		writeError(w, keybrake.Errorf(keybrake.CodeStoreUnavailable, "the store is unavailable; try again"))
	default:
		a.log.Error("admin request failed", "err", err.Error())
		writeError(w, keybrake.Errorf(keybrake.CodeInternal, "internal error"))
	}
}
