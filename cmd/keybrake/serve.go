package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/keybrake/keybrake/server"
)

// serveFlags are `keybrake serve`'s settings; each has an environment
// variable so containers and Lambdas can configure it without flags.
type serveFlags struct {
	addr, adminAddr, db string
	instance            string
	maxExpiresIn        time.Duration
	upstreamTimeout     time.Duration
	decisionTimeout     time.Duration
	idempotencyTTL      time.Duration
	shutdownTimeout     time.Duration
	reconcileInterval   time.Duration
	auditRetention      time.Duration
	vendors             vendorFlags
	logLevel            string
	sandbox             bool
	envErrs             []error // malformed environment values
	observe             observeFlags
	ui                  server.UIConfig
}

func serveCmd(g *globals) *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the proxy and the admin API",
		Long: `Run the proxy and the admin API.

Secrets come from the environment only, never from flags (flags show up in ps):
  KEYBRAKE_ADMIN_TOKEN        admin API bearer token (required)
  KEYBRAKE_STRIPE_SECRET_KEY  the real Stripe secret key
  KEYBRAKE_STRIPE_BASE_URL    Stripe's API base URL (default https://api.stripe.com)
  KEYBRAKE_TWILIO_ACCOUNT_SID Twilio account SID (AC…)
  KEYBRAKE_TWILIO_AUTH_TOKEN  Twilio auth token
  KEYBRAKE_TWILIO_BASE_URL    Twilio's API base URL (default https://api.twilio.com)
  KEYBRAKE_RESEND_API_KEY     the real Resend API key
  KEYBRAKE_RESEND_BASE_URL    Resend's API base URL (default https://api.resend.com)
  KEYBRAKE_SECRETS_KEY        32 bytes (openssl rand -hex 32) sealing webhook secrets and replayable vault keys at rest

Prices: --pricing FILE (env KEYBRAKE_PRICING_FILE); see keybrake pricing.

The web dashboard is at /ui/ on the admin listener: sign in with the admin
token. --no-ui turns it off.

--sandbox is the quick start without a vendor account: every vendor with no
credential in the environment is answered by a built-in local sandbox, with
credentials Keybrake makes up; /healthz says "sandbox": true and every answer
of a sandboxed vendor carries Keybrake-Sandbox: true.

The proxy serves /{vendor}/<vendor path> and each vendor's own paths at the
root (for SDKs such as stripe-go that refuse a base URL with a path).
SIGTERM or SIGINT stops accepting, lets in-flight calls finish and settle,
and exits 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd.Context(), g, &f)
		},
	}
	d := server.DefaultConfig()
	fl := cmd.Flags()
	fl.StringVar(&f.addr, "addr", envOr("KEYBRAKE_ADDR", d.Addr), "proxy listen address, `HOST:PORT` (env KEYBRAKE_ADDR)")
	fl.StringVar(&f.adminAddr, "admin-addr", os.Getenv("KEYBRAKE_ADMIN_ADDR"), "separate listen address for the admin API, `HOST:PORT` (env KEYBRAKE_ADMIN_ADDR)")
	fl.StringVar(&f.instance, "instance-id", os.Getenv("KEYBRAKE_INSTANCE_ID"), "stable name of this replica on PostgreSQL (a pod or host name): a restart recovers its in-flight calls (env KEYBRAKE_INSTANCE_ID)")
	fl.StringVar(&f.db, "db", envOr("KEYBRAKE_DB", d.DB), "SQLite file `PATH`, or a postgres:// URL (env KEYBRAKE_DB)")
	f.durationFlag(fl, &f.maxExpiresIn, "max-expires-in", "KEYBRAKE_MAX_EXPIRES_IN", d.MaxExpiresIn, "longest expires_in a key may ask for")
	f.durationFlag(fl, &f.upstreamTimeout, "upstream-timeout", "KEYBRAKE_UPSTREAM_TIMEOUT", d.UpstreamTimeout, "time limit of one vendor call; past it the outcome is unknown")
	f.durationFlag(fl, &f.decisionTimeout, "decision-timeout", "KEYBRAKE_DECISION_TIMEOUT", d.DecisionTimeout, "time limit of the store's decision on one call; past it 503 store_unavailable, nothing forwarded")
	f.durationFlag(fl, &f.idempotencyTTL, "idempotency-ttl", "KEYBRAKE_IDEMPOTENCY_TTL", d.IdempotencyTTL, "how long answers are kept for Idempotency-Key replays")
	f.durationFlag(fl, &f.reconcileInterval, "reconcile-interval", "KEYBRAKE_RECONCILE_INTERVAL", d.ReconcileInterval, "if set, reprice Twilio messages from their final price this often (off by default)")
	f.durationFlag(fl, &f.shutdownTimeout, "shutdown-timeout", "KEYBRAKE_SHUTDOWN_TIMEOUT", d.ShutdownTimeout, "how long SIGTERM waits for in-flight calls")
	f.durationFlag(fl, &f.auditRetention, "audit-retention", "KEYBRAKE_AUDIT_RETENTION", d.AuditRetention, "if set, delete audit rows older than this that the ledger no longer needs: settled rows of revoked or expired keys (off by default)")
	addVendorFlags(fl, &f.vendors)
	addObserveFlags(fl, &f)
	addUIFlags(fl, &f)
	fl.StringVar(&f.logLevel, "log-level", envOr("KEYBRAKE_LOG_LEVEL", "info"), "debug, info, warn or error (env KEYBRAKE_LOG_LEVEL)")
	fl.BoolVar(&f.sandbox, "sandbox", false, "answer every vendor without a credential from a built-in local sandbox (nothing real is sent or charged; never the default)")
	return cmd
}

func runServe(ctx context.Context, g *globals, f *serveFlags) error {
	if err := errors.Join(f.envErrs...); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	logger := slog.New(slog.NewJSONHandler(g.stderr, &slog.HandlerOptions{Level: level}))
	gcPercent, memLimit := tuneGC(os.Getenv)
	vendors, err := f.vendors.config()
	if err != nil {
		return err
	}
	observe, err := f.observe.config()
	if err != nil {
		return err
	}
	cfg := server.Config{
		Addr:              f.addr,
		AdminAddr:         f.adminAddr,
		DB:                f.db,
		Instance:          f.instance,
		AdminToken:        os.Getenv("KEYBRAKE_ADMIN_TOKEN"),
		Vendors:           vendors,
		MaxExpiresIn:      f.maxExpiresIn,
		UpstreamTimeout:   f.upstreamTimeout,
		DecisionTimeout:   f.decisionTimeout,
		IdempotencyTTL:    f.idempotencyTTL,
		ReconcileInterval: f.reconcileInterval,
		ShutdownTimeout:   f.shutdownTimeout,
		Sandbox:           f.sandbox,
		AuditRetention:    f.auditRetention,
		Logger:            logger,
		Observe:           observe,
		UI:                f.ui,
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	logger.Info("keybrake listening", "addr", srv.Addr(), "admin_addr", srv.AdminAddr(), "metrics_addr", srv.MetricsAddr(),
		"db", redactDSN(f.db), "vendors", describeVendors(vendors, srv.SandboxVendors()), "sandbox", f.sandbox,
		"gogc", gcPercent, "gomemlimit_mib", memLimit>>20)
	<-ctx.Done()
	logger.Info("shutting down: no new connections; waiting for in-flight calls to settle", "timeout", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// redactDSN hides a password in a database URL before it is logged.
func redactDSN(dsn string) string {
	scheme, rest, ok := strings.Cut(dsn, "://")
	if !ok {
		return dsn
	}
	creds, host, ok := strings.Cut(rest, "@")
	if !ok {
		return dsn
	}
	user, _, hasPass := strings.Cut(creds, ":")
	if hasPass {
		return scheme + "://" + user + ":REDACTED@" + host
	}
	return dsn
}

// durationFlag defines a duration flag whose default is the environment
// variable env when set, else def. Flag and variable follow one rule
// (parseDuration: "90s", "5m", or whole seconds); a malformed variable is
// remembered and stops serve with an error naming it, rather than being
// silently replaced by the default.
func (f *serveFlags) durationFlag(fl *pflag.FlagSet, p *time.Duration, name, env string, def time.Duration, usage string) {
	durationVar(fl, p, name, f.envDuration(env, def), usage+" (env "+env+")")
}

// envDuration reads a duration default from the environment.
func (f *serveFlags) envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := parseDuration(v)
		if err == nil {
			return d
		}
		f.envErrs = append(f.envErrs, fmt.Errorf("%s=%q: want a duration such as 30s, 5m or 24h, or whole seconds", name, v))
	}
	return def
}
