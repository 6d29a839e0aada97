package server

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/proxy"
)

// DefaultConfig is the configuration Keybrake runs with before flags and
// environment say otherwise: the one place its defaults are written. The
// flags of `keybrake serve` take their defaults from it, and New fills every
// zero field of a Config from it, so a test that sets only what it needs
// runs with the defaults production has.
func DefaultConfig() Config {
	return Config{
		Addr:            "127.0.0.1:8080",
		DB:              "keybrake.db",
		MaxExpiresIn:    24 * time.Hour,
		UpstreamTimeout: 60 * time.Second,
		IdempotencyTTL:  24 * time.Hour,
		DecisionTimeout: proxy.DefaultDecisionTimeout,
		ShutdownTimeout: 90 * time.Second,
		UI:              UIConfig{IdleTimeout: 30 * time.Minute},
		Observe: ObserveConfig{
			WebhookPoll:       time.Second,
			WebhookTimeout:    10 * time.Second,
			WebhookMinBackoff: 10 * time.Second,
			WebhookMaxBackoff: time.Hour,
			AnomalyInterval:   time.Minute,
			AnomalyFactor:     keybrake.DefaultAnomalyFactor,
		},
	}
}

// withDefaults fills the zero fields of c from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	str := func(v *string, def string) {
		if *v == "" {
			*v = def
		}
	}
	dur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	str(&c.Addr, d.Addr)
	str(&c.DB, d.DB)
	dur(&c.MaxExpiresIn, d.MaxExpiresIn)
	dur(&c.UpstreamTimeout, d.UpstreamTimeout)
	dur(&c.IdempotencyTTL, d.IdempotencyTTL)
	dur(&c.DecisionTimeout, d.DecisionTimeout)
	dur(&c.ShutdownTimeout, d.ShutdownTimeout)
	dur(&c.UI.IdleTimeout, d.UI.IdleTimeout)
	o := &c.Observe
	dur(&o.WebhookPoll, d.Observe.WebhookPoll)
	dur(&o.WebhookTimeout, d.Observe.WebhookTimeout)
	dur(&o.WebhookMinBackoff, d.Observe.WebhookMinBackoff)
	dur(&o.WebhookMaxBackoff, d.Observe.WebhookMaxBackoff)
	if o.AnomalyInterval == 0 { // negative: off
		o.AnomalyInterval = d.Observe.AnomalyInterval
	}
	if o.AnomalyFactor <= 0 {
		o.AnomalyFactor = d.Observe.AnomalyFactor
	}
	return c
}

// validate checks what can be checked before anything is created: New
// runs it before it listens or opens the store, so a configuration that
// cannot work leaves no database file behind.
func (c Config) validate() error {
	if c.AdminToken == "" {
		return errors.New("no admin token: set KEYBRAKE_ADMIN_TOKEN (for example: export KEYBRAKE_ADMIN_TOKEN=$(openssl rand -hex 32))")
	}
	if len(c.AdminToken) < 16 {
		return errors.New("KEYBRAKE_ADMIN_TOKEN is shorter than 16 characters; use a long random value such as $(openssl rand -hex 32)")
	}
	ls := c.listenAddrs()
	for i, l := range ls {
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			return fmt.Errorf("%s %q: want host:port, such as 127.0.0.1:8080 or :8080", l.flag, l.addr)
		}
		for _, m := range ls[:i] {
			if sameListener(l.addr, m.addr) {
				return fmt.Errorf("%s %s and %s %s are the same address: give %s its own port, or leave it unset to serve it on %s",
					m.flag, m.addr, l.flag, l.addr, l.flag, m.flag)
			}
		}
	}
	return nil
}

// sameListener reports whether two listen addresses would collide: the
// same port on the same host, or on a host that means every interface.
// Port 0 (any free port) never collides.
func sameListener(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || pa != pb || pa == "0" {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wild(ha) || wild(hb)
}

// listenAddr is one listener's address and the flag that sets it.
type listenAddr struct{ flag, addr string }

// listenAddrs are the proxy's address, then the admin API's and the
// metrics' when they have their own, in the order Start serves them.
func (c Config) listenAddrs() []listenAddr {
	as := []listenAddr{{"--addr", c.Addr}}
	if c.AdminAddr != "" {
		as = append(as, listenAddr{"--admin-addr", c.AdminAddr})
	}
	if c.Observe.MetricsAddr != "" {
		as = append(as, listenAddr{"--metrics-addr", c.Observe.MetricsAddr})
	}
	return as
}

// listen binds every listener.
func listen(c Config) ([]net.Listener, error) {
	var ls []net.Listener
	for _, a := range c.listenAddrs() {
		ln, err := net.Listen("tcp", a.addr)
		if err != nil {
			closeListeners(ls)
			return nil, fmt.Errorf("listen on %s (%s): %w", a.addr, a.flag, err)
		}
		ls = append(ls, ln)
	}
	return ls, nil
}

// closeListeners closes listeners that may never have been served.
func closeListeners(ls []net.Listener) {
	for _, ln := range ls {
		ln.Close() //nolint:errcheck // closed by its server already, or never served
	}
}
