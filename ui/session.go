package ui

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/keybrake/keybrake"
)

// A session is what signing in with the admin token buys: the token is
// checked once, then forgotten; the browser holds only a random session id
// in an HttpOnly, SameSite=Strict cookie. Sessions live in this process's
// memory: a restart signs everyone out, and with several replicas the
// dashboard is used on the one signed in to.
type session struct {
	csrf    string // the token every state-changing form and request carries
	created time.Time
	seen    time.Time // last use by the operator (polling does not count)
	flash   string    // a message for the next page, shown once
}

// sessions are keyed by the SHA-256 of their id, so the map holds nothing
// a stolen heap dump could replay as a cookie.
type sessions struct {
	mu     sync.Mutex
	m      map[string]*session
	idle   time.Duration
	maxAge time.Duration
	now    func() time.Time
}

// maxSessions bounds memory; past it the least recently used is dropped.
const maxSessions = 1000

const cookieName = "keybrake_session"

func newSessions(idle, maxAge time.Duration, now func() time.Time) *sessions {
	return &sessions{m: map[string]*session{}, idle: idle, maxAge: maxAge, now: now}
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) //nolint:errcheck // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session and returns its id (the cookie value).
func (ss *sessions) create() (string, *session) {
	id := randomToken()
	now := ss.now()
	s := &session{csrf: randomToken(), created: now, seen: now}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.expireLocked(now)
	if len(ss.m) >= maxSessions {
		var oldest string
		for k, v := range ss.m {
			if oldest == "" || v.seen.Before(ss.m[oldest].seen) {
				oldest = k
			}
		}
		delete(ss.m, oldest)
	}
	ss.m[keybrake.HashSecret(id)] = s
	return id, s
}

func (ss *sessions) expireLocked(now time.Time) {
	for k, s := range ss.m {
		if ss.expired(s, now) {
			delete(ss.m, k)
		}
	}
}

func (ss *sessions) expired(s *session, now time.Time) bool {
	return now.Sub(s.seen) >= ss.idle || now.Sub(s.created) >= ss.maxAge
}

// get finds a live session; touch counts the request as the operator's use
// and so extends the idle timeout.
func (ss *sessions) get(id string, touch bool) *session {
	if id == "" {
		return nil
	}
	h := keybrake.HashSecret(id)
	now := ss.now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[h]
	if !ok {
		return nil
	}
	if ss.expired(s, now) {
		delete(ss.m, h)
		return nil
	}
	if touch {
		s.seen = now
	}
	return s
}

func (ss *sessions) delete(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.m, keybrake.HashSecret(id))
}

// takeFlash returns the session's pending message and clears it.
func (ss *sessions) takeFlash(s *session) string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	f := s.flash
	s.flash = ""
	return f
}

func (ss *sessions) setFlash(s *session, msg string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s.flash = msg
}

func (u *UI) secure(r *http.Request) bool {
	return u.cfg.SecureCookies || r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func (u *UI) setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: value, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: u.secure(r),
	})
}

func sessionID(r *http.Request) string {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return ""
	}
	return c.Value
}

// isFragment reports whether the request is for a page fragment (fetched
// by script), which answers 401 rather than redirecting to sign-in.
func isFragment(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, Prefix+"fragments/") }

// authed requires a live session. Without one, a page redirects to sign-in
// (remembering where the operator was going) and a fragment answers 401;
// neither shows any data. A state-changing request must also carry the
// session's CSRF token (a form field, or the X-CSRF-Token header).
func (u *UI) authed(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		s := u.sessions.get(sessionID(r), !isFragment(r))
		if s == nil {
			if isFragment(r) {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.WriteHeader(http.StatusUnauthorized)
				w.Write([]byte("Your dashboard session has ended. Sign in again.\n")) //nolint:errcheck
				return
			}
			target := Prefix + "signin"
			if r.Method == http.MethodGet && r.URL.Path != Prefix {
				target += "?next=" + url.QueryEscape(r.URL.RequestURI())
			}
			// No body: not even the address asked for is echoed.
			w.Header().Set("Location", target)
			w.WriteHeader(http.StatusSeeOther)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			token := r.Header.Get("X-CSRF-Token")
			if token == "" {
				token = r.PostFormValue("csrf")
			}
			if !keybrake.SecretsEqual(token, s.csrf) {
				u.forbidden(w, r, "This form is out of date or was not sent by this dashboard (CSRF token missing or wrong). Reload the page and try again.")
				return
			}
		}
		h(w, r, s)
	}
}

// localPath accepts a redirect target only if it is a path of this
// dashboard: never another host, never a scheme-relative //host.
func localPath(p string) string {
	if !strings.HasPrefix(p, Prefix) || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\\r\n") {
		return ""
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return ""
	}
	return p
}

type signInData struct {
	Error string
	Info  string
	Next  string
}

func (u *UI) signInPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if u.sessions.get(sessionID(r), false) != nil {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return
	}
	d := signInData{Next: localPath(r.URL.Query().Get("next"))}
	if r.URL.Query().Get("signed_out") == "1" {
		d.Info = "You are signed out."
	}
	u.renderSignIn(w, r, http.StatusOK, d)
}

// signIn exchanges the admin token for a session. The token is compared in
// constant time and never logged, echoed or put in a URL; a wrong one
// leaves the operator on the sign-in page with nothing else shown.
func (u *UI) signIn(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	token := strings.TrimSpace(r.PostFormValue("token"))
	next := localPath(r.PostFormValue("next"))
	if !keybrake.SecretsEqual(token, u.cfg.Token) {
		msg := "That is not this Keybrake's admin token. Check KEYBRAKE_ADMIN_TOKEN and try again."
		switch {
		case token == "":
			msg = "Enter the admin token (KEYBRAKE_ADMIN_TOKEN) to sign in."
		case keybrake.WellFormedIssuerToken(token):
			msg = "Issuer tokens cannot sign in to the dashboard: they may only issue and revoke their own keys. Use the admin token."
		}
		u.log.Warn("dashboard sign-in refused", "remote", r.RemoteAddr)
		u.renderSignIn(w, r, http.StatusUnauthorized, signInData{Error: msg, Next: next})
		return
	}
	if old := sessionID(r); old != "" {
		u.sessions.delete(old) // never reuse an id the browser held before
	}
	id, _ := u.sessions.create()
	u.setCookie(w, r, id, 0)
	u.log.Info("dashboard sign-in", "remote", r.RemoteAddr)
	if next == "" {
		next = Prefix
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (u *UI) signOut(w http.ResponseWriter, r *http.Request, _ *session) {
	u.sessions.delete(sessionID(r))
	u.setCookie(w, r, "", -1)
	http.Redirect(w, r, Prefix+"signin?signed_out=1", http.StatusSeeOther)
}
