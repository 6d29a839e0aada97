package main

import (
	"os"

	"github.com/spf13/pflag"

	"github.com/keybrake/keybrake/server"
)

// addUIFlags adds the dashboard's flags to serve.
func addUIFlags(fl *pflag.FlagSet, f *serveFlags) {
	u := &f.ui
	fl.BoolVar(&u.Disabled, "no-ui", os.Getenv("KEYBRAKE_NO_UI") == "true", "turn off the web dashboard at /ui/ on the admin listener (env KEYBRAKE_NO_UI=true)")
	fl.BoolVar(&u.SecureCookies, "ui-secure-cookies", os.Getenv("KEYBRAKE_UI_SECURE_COOKIES") == "true", "mark the dashboard's session cookie Secure even on plain HTTP, for a TLS-terminating proxy in front (env KEYBRAKE_UI_SECURE_COOKIES=true)")
	f.durationFlag(fl, &u.IdleTimeout, "ui-idle-timeout", "KEYBRAKE_UI_IDLE_TIMEOUT", server.DefaultConfig().UI.IdleTimeout, "sign a dashboard session out after this long unused")
}
