// Package ui is the operator's dashboard, served by `keybrake serve` at
// /ui/ on the admin listener: what is spending now, against which cap, and a
// Revoke button. Pages are html/template, rendered on the server; charts are
// SVG drawn on the server; the one script is a small plain-JS file; every
// asset is embedded, so the binary needs no Node, no CDN and no network.
//
// It reads through the same store methods as the admin API and changes
// state only through the admin API's own operations (admin.API.Revoke), so
// no rule lives here twice. Every string an agent or orchestrator supplied
// (labels, agent names, metadata, paths, object ids) is hostile input:
// html/template escapes it in its context, and the Content-Security-Policy
// forbids inline script and remote origins, so a label that slips through
// still runs nothing.
package ui

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/admin"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Store is what the dashboard reads: the admin API's own store methods.
type Store interface {
	Now(ctx context.Context) (time.Time, error)
	GetKey(ctx context.Context, id string) (*keybrake.KeyView, error)
	ListKeys(ctx context.Context, f keybrake.KeyFilter) ([]*keybrake.KeyView, string, error)
	ListCalls(ctx context.Context, f keybrake.CallFilter) ([]*keybrake.Call, string, error)
	RunSummary(ctx context.Context, label string) (*keybrake.RunSummary, error)
	ReportRuns(ctx context.Context, f keybrake.RunsFilter) ([]keybrake.RunRow, string, error)
	ReportAgents(ctx context.Context, f keybrake.AgentsFilter) ([]keybrake.AgentRow, error)
	ReportDaily(ctx context.Context, f keybrake.DailyFilter) (*keybrake.DailyReport, error)
	Gauges(ctx context.Context) (*keybrake.Gauges, error)
	ListWebhooks(ctx context.Context) ([]*keybrake.Webhook, error)
	ListDeliveries(ctx context.Context, webhookID string, limit int, cursor string) ([]*keybrake.Delivery, string, error)
}

// Admin is the admin API's in-process operations the dashboard acts
// through (*admin.API).
type Admin interface {
	Revoke(ctx context.Context, id string) (admin.RevokeResponse, error)
	View(v *keybrake.KeyView) admin.KeyJSON
}

// Config configures the dashboard.
type Config struct {
	Store Store
	Admin Admin
	// Token is the admin token, the only credential that signs in. Issuer
	// tokens never do: they may only issue and revoke their own keys.
	Token string
	// SecureCookies marks the session cookie Secure on every answer, for a
	// dashboard behind a TLS-terminating proxy that does not say so. Without
	// it the cookie is Secure when the request came over TLS (or a proxy
	// said X-Forwarded-Proto: https).
	SecureCookies bool
	// IdleTimeout ends a session nobody used for this long (default 30m).
	// The audit log's polling does not count as use.
	IdleTimeout time.Duration
	// MaxAge ends a session this long after sign-in whatever (default 12h).
	MaxAge time.Duration
	Logger *slog.Logger
	// Clock is the sessions' clock (tests); default time.Now.
	Clock func() time.Time
}

// UI is the dashboard's HTTP handler, mounted at /ui/.
type UI struct {
	cfg      Config
	log      *slog.Logger
	pages    map[string]*template.Template
	mux      *http.ServeMux
	sessions *sessions
	origin   *http.CrossOriginProtection
	static   map[string]staticFile
}

type staticFile struct {
	body        []byte
	etag        string
	contentType string
}

// Prefix is where the dashboard is mounted.
const Prefix = "/ui/"

// New parses the templates and builds the routes.
func New(cfg Config) (*UI, error) {
	if cfg.Store == nil || cfg.Admin == nil {
		return nil, errors.New("ui: a store and the admin API are required")
	}
	if cfg.Token == "" {
		return nil, errors.New("ui: the admin token is required")
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Minute
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 12 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	u := &UI{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), origin: http.NewCrossOriginProtection(),
		sessions: newSessions(cfg.IdleTimeout, cfg.MaxAge, cfg.Clock)}
	if err := u.loadStatic(); err != nil {
		return nil, err
	}
	if err := u.parseTemplates(); err != nil {
		return nil, err
	}
	u.routes()
	return u, nil
}

func (u *UI) routes() {
	m := u.mux
	m.HandleFunc("GET /ui/static/{file}", u.serveStatic)
	m.HandleFunc("GET /ui/signin", u.signInPage)
	m.HandleFunc("POST /ui/signin", u.unsafe(u.signIn))
	m.HandleFunc("POST /ui/signout", u.unsafe(u.authed(u.signOut)))

	m.HandleFunc("GET /ui/{$}", u.authed(u.overview))
	m.HandleFunc("GET /ui/keys", u.authed(u.keys))
	m.HandleFunc("GET /ui/keys/{key_id}", u.authed(u.keyDetail))
	m.HandleFunc("POST /ui/keys/{key_id}/revoke", u.unsafe(u.authed(u.revoke)))
	m.HandleFunc("GET /ui/runs", u.authed(u.runs))
	m.HandleFunc("GET /ui/run", u.authed(u.runDetail))
	m.HandleFunc("GET /ui/audit", u.authed(u.audit))
	m.HandleFunc("GET /ui/fragments/audit", u.authed(u.auditFragment))
	m.HandleFunc("GET /ui/reports", u.authed(u.reports))
	m.HandleFunc("GET /ui/webhooks", u.authed(u.webhooks))
	m.HandleFunc("/ui/", u.authed(func(w http.ResponseWriter, r *http.Request, s *session) {
		u.fail(w, r, s, http.StatusNotFound, "There is no dashboard page at this address.")
	}))
}

// Content-Security-Policy: only this origin's script and styles, no
// inline script or style, no plugins, never framed, forms post only here.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// ServeHTTP answers every /ui/ request with the security headers, then
// routes it. A request for /ui (no slash) is sent to /ui/.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
	if r.URL.Path == "/ui" {
		http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
		return
	}
	u.mux.ServeHTTP(w, r)
}

// unsafe guards a state-changing request against cross-site forgery, before
// anything else reads it: the browser must say where the request came from
// (an Origin header, which every current browser sends on a POST) and it
// must be this origin (net/http's CrossOriginProtection, which also reads
// Sec-Fetch-Site). The session's CSRF token is checked by authed.
func (u *UI) unsafe(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Origin") == "" && r.Header.Get("Sec-Fetch-Site") != "same-origin" {
			u.forbidden(w, r, "This request did not say which page sent it (no Origin header), so it was refused.")
			return
		}
		if err := u.origin.Check(r); err != nil {
			u.forbidden(w, r, "This request came from another site, so it was refused.")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
		h(w, r)
	}
}

func (u *UI) forbidden(w http.ResponseWriter, r *http.Request, msg string) {
	u.log.Warn("dashboard request refused", "method", r.Method, "path", r.URL.Path, "reason", msg)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusForbidden)
	w.Write([]byte(msg + "\n")) //nolint:errcheck // the client may have gone
}

func (u *UI) loadStatic() error {
	u.static = map[string]staticFile{}
	return fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ct := "application/octet-stream"
		switch path.Ext(p) {
		case ".css":
			ct = "text/css; charset=utf-8"
		case ".js":
			ct = "text/javascript; charset=utf-8"
		case ".svg":
			ct = "image/svg+xml"
		}
		u.static[path.Base(p)] = staticFile{body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, contentType: ct}
		return nil
	})
}

// serveStatic serves an embedded asset. Assets hold no data, so they need
// no session (the sign-in page uses them). URLs carry the content hash, so
// they may be cached for good.
func (u *UI) serveStatic(w http.ResponseWriter, r *http.Request) {
	f, ok := u.static[r.PathValue("file")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	h.Set("ETag", f.etag)
	if r.URL.Query().Get("v") == strings.Trim(f.etag, `"`) {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}

// asset is a static file's URL with its content hash.
func (u *UI) asset(name string) string {
	f, ok := u.static[name]
	if !ok {
		return Prefix + "static/" + name
	}
	return Prefix + "static/" + name + "?v=" + strings.Trim(f.etag, `"`)
}
