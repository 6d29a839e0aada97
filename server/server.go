// Package server assembles a running Keybrake: the store, the vendors, the
// proxy and the admin API on one or two listeners, the background sweeps,
// and a graceful shutdown. `keybrake serve`, `keybrake demo` and the
// end-to-end tests all run this same assembly.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/admin"
	"github.com/keybrake/keybrake/metrics"
	"github.com/keybrake/keybrake/proxy"
	"github.com/keybrake/keybrake/store"
	"github.com/keybrake/keybrake/ui"
	"github.com/keybrake/keybrake/webhooks"
)

// Config is everything `keybrake serve` reads from flags and environment.
type Config struct {
	// Addr serves the proxy (and the admin API unless AdminAddr is set).
	Addr string
	// AdminAddr, when set, moves the admin API to its own listener so the
	// agents' network never reaches it.
	AdminAddr string
	// DB is a SQLite file path, or a postgres:// URL.
	DB string
	// AdminToken authenticates the admin API; required.
	AdminToken string
	// Instance names this replica in the audit rows of its calls. On
	// PostgreSQL a stable name (a StatefulSet pod name, a host name) lets a
	// restarted replica recover the calls it had in flight when it died
	// (store/postgres/instance.go: once it has seen the dead holder's
	// heartbeat stop); two live replicas cannot hold the same name, and one
	// that loses its hold decides nothing until it has it back. Empty: a random
	// name, and such calls are recovered by the periodic sweep instead.
	Instance string

	// Vendors holds the vendors' credentials, base URLs and prices.
	Vendors VendorConfig

	MaxExpiresIn    time.Duration
	UpstreamTimeout time.Duration
	IdempotencyTTL  time.Duration
	// DecisionTimeout bounds each store step of a call before it is
	// forwarded (default proxy.DefaultDecisionTimeout).
	DecisionTimeout time.Duration
	// ReconcileInterval, when set, runs the reconciler: calls settled at
	// their estimate because the vendor states the cost only later (Twilio
	// messages) are repriced from the vendor's final figure. Off by default.
	ReconcileInterval time.Duration
	// AuditRetention, when set, prunes audit rows older than it that the
	// ledger no longer needs (store.Store.PruneCalls). Off by default.
	AuditRetention time.Duration

	Logger *slog.Logger
	// Transport overrides the connection pool to the vendors (tests).
	Transport http.RoundTripper
	// Clock overrides the SQLite store's clock (tests).
	Clock func() time.Time
	// WrapAdmin, when set, wraps the admin API's handler on whichever
	// listener serves it (tests: internal/kbtest checks every admin call
	// against docs/openapi.yaml there).
	WrapAdmin func(http.Handler) http.Handler

	// Observe configures metrics, webhooks and anomaly detection.
	Observe ObserveConfig
	// UI configures the dashboard at /ui/.
	UI UIConfig

	// ShutdownTimeout is how long `keybrake serve` waits on SIGTERM for
	// in-flight calls to settle (the caller passes it to Shutdown).
	ShutdownTimeout time.Duration

	// Sandbox answers every vendor without a credential from a built-in
	// local sandbox (sandbox.go): the quick start with no vendor account.
	// Never the default.
	Sandbox bool
}

// Server is a running Keybrake.
type Server struct {
	cfg      Config
	store    store.Store
	proxy    *proxy.Proxy
	admin    *admin.API
	adminH   http.Handler // admin, wrapped by Config.WrapAdmin
	ui       *ui.UI
	log      *slog.Logger
	instance string

	vendors []keybrake.Vendor
	metrics *metrics.Metrics
	sealer  *webhooks.Sealer

	releaseInstance func() error
	sandboxes       *sandboxes

	listeners []net.Listener // bound by New, served by Start
	servers   []*http.Server
	addrs     []string
	stopBG    context.CancelFunc
	bg        sync.WaitGroup
}

// New checks the configuration, binds the listeners, opens the store
// (creating and migrating it), recovers calls a crash left pending, and
// builds the handlers; it does not serve yet. Everything that can be
// checked is checked before the store is opened, and the listeners are
// bound before it too, so a start that fails (a port in use, a bad base
// URL) leaves no database file behind.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	var sb *sandboxes
	built := false
	defer func() {
		if !built {
			sb.close(context.Background()) //nolint:errcheck // already failing
		}
	}()
	if cfg.Sandbox {
		var err error
		if sb, err = startSandboxes(&cfg.Vendors, cfg.Logger); err != nil {
			return nil, fmt.Errorf("--sandbox: %w", err)
		}
	}
	vendors, err := buildVendors(cfg.Vendors)
	if err != nil {
		return nil, err
	}
	listeners, err := listen(cfg)
	if err != nil {
		return nil, err
	}

	st, err := openStore(ctx, cfg)
	if err != nil {
		closeListeners(listeners)
		return nil, err
	}
	s := &Server{cfg: cfg, store: st, log: cfg.Logger, instance: cfg.Instance, listeners: listeners, sandboxes: sb}
	fail := func(err error) (*Server, error) {
		if s.releaseInstance != nil {
			s.releaseInstance() //nolint:errcheck // already failing
		}
		closeListeners(listeners)
		st.Close()
		return nil, err
	}

	// Recover the calls a previous incarnation left pending: they were in
	// flight when it died, and no live process can settle them. On SQLite
	// one process owns the file (a lock enforces it), so that is every
	// pending call; on PostgreSQL only this replica's own, under a name it
	// now holds exclusively.
	recoverAtStart, owner := true, "" // owner "": every pending call
	switch {
	case !isPostgres(cfg.DB):
		if s.instance == "" {
			s.instance = keybrake.NewID("inst_")
		}
	case s.instance != "":
		if s.releaseInstance, err = st.ClaimInstance(ctx, s.instance); err != nil {
			return fail(fmt.Errorf("claim instance id: %w", err))
		}
		owner = s.instance
	default:
		s.instance = keybrake.NewID("inst_")
		recoverAtStart = false // the periodic sweep recovers them
	}
	if recoverAtStart {
		n, err := st.RecoverPending(ctx, owner, 0)
		if err != nil {
			return fail(fmt.Errorf("recover pending calls: %w", err))
		}
		if n > 0 {
			s.log.Warn("calls in flight at the last shutdown are now counted as spend with outcome unknown", "calls", n, "instance", s.instance)
		}
	}

	s.vendors = vendors
	if err := s.setupObserve(); err != nil {
		return fail(err)
	}

	s.proxy, err = proxy.New(proxy.Config{
		Ledger: s.store, Vendors: vendors, Logger: cfg.Logger, Transport: cfg.Transport,
		UpstreamTimeout: cfg.UpstreamTimeout, IdempotencyTTL: cfg.IdempotencyTTL, Instance: s.instance,
		Observer:        s.metrics,
		DecisionTimeout: cfg.DecisionTimeout,
		Sandboxed:       s.SandboxVendors(),
	})
	if err != nil {
		return fail(err)
	}
	infos := make([]admin.VendorInfo, len(vendors))
	for i, v := range vendors {
		infos[i] = v
	}
	s.admin, err = admin.New(admin.Config{Store: s.store, Vendors: infos, Token: cfg.AdminToken, MaxExpiresIn: cfg.MaxExpiresIn, Logger: cfg.Logger,
		IdempotencyTTL: cfg.IdempotencyTTL,
		Sealer:         s.sealer, WebhookDenyPrivate: cfg.Observe.WebhookDenyPrivate})
	if err != nil {
		return fail(err)
	}
	s.adminH = s.admin
	if cfg.WrapAdmin != nil {
		s.adminH = cfg.WrapAdmin(s.admin)
	}
	if err := s.setupUI(); err != nil {
		return fail(err)
	}
	if sb != nil {
		s.log.Warn("SANDBOX MODE: these vendors are answered by Keybrake's built-in local sandboxes, not the real APIs; nothing real is sent or charged",
			"sandbox_vendors", strings.Join(sb.vendors, ","))
	}
	built = true
	return s, nil
}

// Store is the server's store (tests and the demo read it).
func (s *Server) Store() store.Store { return s.store }

// Handler serves the main listener: /healthz, the admin API under /vault/
// (unless it has its own listener) and the proxy for everything else. It
// dispatches on the raw request target and never through ServeMux's path
// cleaning, which would redirect /v1/x/../y before the proxy could refuse it.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uri := r.RequestURI
		switch {
		case uri == "/healthz":
			s.health(w, r)
		case isMetrics(uri) && s.cfg.AdminAddr != "":
			notHere(w, "metrics are served on the admin listener")
		case isMetrics(uri):
			s.metricsEndpoint(w, r)
		case isUI(uri):
			s.serveUI(w, r, s.cfg.AdminAddr == "")
		case uri == "/vault" || strings.HasPrefix(uri, "/vault/") || strings.HasPrefix(uri, "/vault?"):
			if s.cfg.AdminAddr != "" {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				io.WriteString(w, `{"code":"not_found","message":"the admin API is on its own listener"}`+"\n") //nolint:errcheck
				return
			}
			s.adminH.ServeHTTP(w, r)
		default:
			s.proxy.ServeHTTP(w, r)
		}
	})
}

// AdminHandler serves the admin listener: /healthz, /vault/, /metrics and
// the dashboard at /ui/.
func (s *Server) AdminHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.RequestURI == "/healthz" {
			s.health(w, r)
			return
		}
		if isMetrics(r.RequestURI) {
			s.metricsEndpoint(w, r)
			return
		}
		if isUI(r.RequestURI) {
			s.serveUI(w, r, true)
			return
		}
		s.adminH.ServeHTTP(w, r)
	})
}

// health answers 200 when the store answers within two seconds, else 503.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	body := map[string]any{"status": "ok"}
	status := http.StatusOK
	if err := s.store.Ping(ctx); err != nil {
		s.log.Error("health check: store unavailable", "err", err.Error())
		body = map[string]any{"status": "unavailable", "code": string(keybrake.CodeStoreUnavailable), "message": "the store does not answer"}
		status = http.StatusServiceUnavailable
	}
	if s.sandboxes != nil {
		body["sandbox"], body["sandbox_vendors"] = true, s.sandboxes.vendors
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body) //nolint:errcheck // the client may have gone
}

// Start serves on the listeners New bound (":0" picked a free port) and
// starts the background sweeps.
func (s *Server) Start() error {
	handlers := []http.Handler{s.Handler()}
	if s.cfg.AdminAddr != "" {
		handlers = append(handlers, s.AdminHandler())
	}
	if s.cfg.Observe.MetricsAddr != "" {
		handlers = append(handlers, s.MetricsHandler())
	}
	for i, ln := range s.listeners {
		srv := &http.Server{
			Handler:           handlers[i],
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       60 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		}
		s.servers = append(s.servers, srv)
		s.addrs = append(s.addrs, ln.Addr().String())
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("listener stopped", "addr", ln.Addr().String(), "err", err.Error())
			}
		}()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopBG = cancel
	s.bg.Add(1)
	go s.sweep(ctx)
	if s.cfg.ReconcileInterval > 0 {
		s.bg.Add(1)
		go s.reconcile(ctx)
	}
	if err := s.startObserve(ctx); err != nil {
		s.Shutdown(context.Background()) //nolint:errcheck // already failing
		return err
	}
	return nil
}

// Addr is the proxy listener's address, once started.
func (s *Server) Addr() string { return s.addrs[0] }

// AdminAddr is the admin API's address (the proxy's when shared).
func (s *Server) AdminAddr() string {
	if s.cfg.AdminAddr != "" {
		return s.addrs[1]
	}
	return s.addrs[0]
}

// sweep periodically counts calls stuck pending past any possible answer
// (a replica that died mid-call) as unknown spend, and drops expired
// idempotency records.
func (s *Server) sweep(ctx context.Context) {
	defer s.bg.Done()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	lastIdem := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// Past UpstreamTimeout + SettleTimeout no live replica can still
		// settle a call: it was in flight on a replica that died.
		if n, err := s.store.RecoverPending(ctx, "", s.cfg.UpstreamTimeout+proxy.SettleTimeout+time.Minute); err != nil {
			s.log.Error("recovery sweep failed", "err", err.Error())
		} else if n > 0 {
			s.log.Warn("calls stuck pending are now counted as spend with outcome unknown", "calls", n)
		}
		if time.Since(lastIdem) > 10*time.Minute {
			lastIdem = time.Now()
			if _, err := s.store.SweepIdempotency(ctx); err != nil {
				s.log.Error("idempotency sweep failed", "err", err.Error())
			}
			if _, err := s.store.SweepIssueClaims(ctx); err != nil {
				s.log.Error("issuance idempotency sweep failed", "err", err.Error())
			}
			s.pruneAudit(ctx)
		}
	}
}

// Shutdown stops accepting, lets in-flight requests finish and settle, stops
// the sweeps and closes the store.
func (s *Server) Shutdown(ctx context.Context) error {
	errs := []error{s.drain(ctx)}
	closeListeners(s.listeners) // those Start never served
	if s.stopBG != nil {
		s.stopBG()
		s.bg.Wait()
	}
	if s.releaseInstance != nil {
		errs = append(errs, s.releaseInstance())
	}
	errs = append(errs, s.sandboxes.close(ctx), s.store.Close())
	return errors.Join(errs...)
}
