package server

import (
	"net/http"
	"strings"
	"time"

	"github.com/keybrake/keybrake/ui"
)

// UIConfig configures the dashboard at /ui/ on the admin listener.
type UIConfig struct {
	// Disabled turns the dashboard off (--no-ui): /ui/ answers 404.
	Disabled bool
	// SecureCookies marks the session cookie Secure even when the request
	// did not arrive over TLS (a TLS-terminating proxy in front).
	SecureCookies bool
	// IdleTimeout ends an unused dashboard session (default 30m).
	IdleTimeout time.Duration
}

// setupUI builds the dashboard on the server's store and admin API.
func (s *Server) setupUI() error {
	if s.cfg.UI.Disabled {
		return nil
	}
	h, err := ui.New(ui.Config{Store: s.store, Admin: s.admin, Token: s.cfg.AdminToken,
		SecureCookies: s.cfg.UI.SecureCookies, IdleTimeout: s.cfg.UI.IdleTimeout, Logger: s.log})
	if err != nil {
		return err
	}
	s.ui = h
	return nil
}

func isUI(uri string) bool {
	return uri == "/ui" || strings.HasPrefix(uri, "/ui/") || strings.HasPrefix(uri, "/ui?")
}

// serveUI answers /ui/ on the admin listener. On the proxy's listener,
// when the admin API has its own, it says where the dashboard is instead
// of letting the proxy treat /ui/ as a vendor path.
func (s *Server) serveUI(w http.ResponseWriter, r *http.Request, adminListener bool) {
	switch {
	case !adminListener:
		notHere(w, "the dashboard is served on the admin listener (--admin-addr)")
	case s.ui == nil:
		notHere(w, "the dashboard is turned off on this server (--no-ui)")
	default:
		s.ui.ServeHTTP(w, r)
	}
}
