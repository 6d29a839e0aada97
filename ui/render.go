package ui

import (
	"bytes"
	"errors"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/keybrake/keybrake"
)

// page is what every dashboard page's template receives.
type page struct {
	Title string
	Nav   string // the navigation entry to mark current
	CSRF  string
	Flash string
	Now   time.Time
	// Here is this page's own address, for forms that come back to it.
	Here string
	Data any
}

func (u *UI) parseTemplates() error {
	u.pages = map[string]*template.Template{}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" || base == "partials.html" {
			continue
		}
		files := []string{"templates/partials.html", n}
		if base != "signin.html" {
			files = append([]string{"templates/layout.html"}, files...)
		}
		t, err := template.New(base).Funcs(u.funcs()).ParseFS(templateFS, files...)
		if err != nil {
			return err
		}
		u.pages[strings.TrimSuffix(base, ".html")] = t
	}
	return nil
}

// render writes a whole page, or nothing: the template runs into a buffer
// first, so a failure half-way never sends half a page.
func (u *UI) render(w http.ResponseWriter, r *http.Request, s *session, status int, name string, p page) {
	if p.Now.IsZero() {
		p.Now = time.Now().UTC()
	}
	p.Here = r.URL.RequestURI()
	if s != nil {
		p.CSRF = s.csrf
		if p.Flash == "" {
			p.Flash = u.sessions.takeFlash(s)
		}
	}
	entry := "layout"
	if name == "signin" {
		entry = "signin"
	}
	u.write(w, status, name, entry, p)
}

func (u *UI) write(w http.ResponseWriter, status int, name, entry string, data any) {
	t, ok := u.pages[name]
	if !ok {
		http.Error(w, "no such page", http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, entry, data); err != nil {
		u.log.Error("dashboard page failed to render", "page", name, "err", err.Error())
		http.Error(w, "This page could not be shown (see the server log).", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes()) //nolint:errcheck // the client may have gone
}

func (u *UI) renderSignIn(w http.ResponseWriter, r *http.Request, status int, d signInData) {
	u.render(w, r, nil, status, "signin", page{Title: "Sign in", Data: d})
}

// fail shows an error page inside the dashboard's frame.
func (u *UI) fail(w http.ResponseWriter, r *http.Request, s *session, status int, msg string) {
	u.render(w, r, s, status, "error", page{Title: http.StatusText(status), Data: msg})
}

// storeFailed answers a store error: not found is the operator's typo,
// anything else is logged and shown without internals.
func (u *UI) storeFailed(w http.ResponseWriter, r *http.Request, s *session, what string, err error) {
	var ke *keybrake.Error
	switch {
	case errors.Is(err, keybrake.ErrNotFound):
		u.fail(w, r, s, http.StatusNotFound, "No "+what+" by that name.")
	case errors.As(err, &ke) && ke.Code == keybrake.CodeInvalidRequest:
		u.fail(w, r, s, http.StatusBadRequest, ke.Message)
	case errors.Is(err, keybrake.ErrStoreUnavailable):
		u.log.Error("dashboard: store unavailable", "what", what, "err", err.Error())
		u.fail(w, r, s, http.StatusServiceUnavailable, "The store is unavailable right now; try again in a moment.")
	default:
		u.log.Error("dashboard: store read failed", "what", what, "err", err.Error())
		u.fail(w, r, s, http.StatusInternalServerError, "Reading the "+what+" failed (see the server log).")
	}
}
