package server

import (
	"context"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/metrics"
	"github.com/keybrake/keybrake/webhooks"
)

// ObserveConfig is metrics, webhooks and anomaly detection.
type ObserveConfig struct {
	// MetricsAddr, when set, serves /metrics on its own listener without
	// authentication, as exporters usually are; otherwise /metrics is on
	// the admin listener and needs the admin token.
	MetricsAddr string

	// SecretsKey, 32 bytes, seals webhook signing secrets at rest
	// (KEYBRAKE_SECRETS_KEY); nil stores them plain.
	SecretsKey []byte
	// WebhookPoll, WebhookTimeout, WebhookMinBackoff, WebhookMaxBackoff and
	// WebhookRetryFor tune delivery (see webhooks.Config; zero: defaults).
	WebhookPoll, WebhookTimeout          time.Duration
	WebhookMinBackoff, WebhookMaxBackoff time.Duration
	WebhookRetryFor                      time.Duration
	WebhookDenyPrivate                   bool
	WebhookTransport                     http.RoundTripper // tests

	// AnomalyInterval is how often runs are checked for run.spend_anomaly
	// (default 1m; negative: never). AnomalyFactor (default 3×) and
	// AnomalyMinUSD (0: no minimum rule) are the anomalies report's rule.
	AnomalyInterval time.Duration
	AnomalyFactor   keybrake.Factor
	AnomalyMinUSD   keybrake.Micros
}

// setupObserve builds the metrics registry and the webhook sealer, and
// wraps the store so its operations are timed.
func (s *Server) setupObserve() error {
	sealer, err := webhooks.NewSealer(s.cfg.Observe.SecretsKey)
	if err != nil {
		return err
	}
	s.sealer = sealer
	names := make([]string, len(s.vendors))
	for i, v := range s.vendors {
		names[i] = v.Name()
	}
	s.metrics = metrics.New(metrics.Options{Vendors: names, Gauges: s.store})
	if b, ok := s.store.(interface {
		SetBatchObserver(func(ops int, took time.Duration, err error))
	}); ok {
		b.SetBatchObserver(s.metrics.Batch)
	}
	s.store = metrics.InstrumentStore(s.store, s.metrics)
	if !sealer.Sealed() {
		s.log.Warn("no KEYBRAKE_SECRETS_KEY: webhook signing secrets are stored unencrypted, and a retried key issuance (same Idempotency-Key) is refused as idempotency_replay_unavailable instead of replayed; set it (openssl rand -hex 32) to seal both")
	}
	return nil
}

// Metrics is the server's registry (tests read it).
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// metricsEndpoint answers /metrics on the admin listener: the admin token
// is required, as for /vault/ (issuer tokens are refused).
func (s *Server) metricsEndpoint(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Observe.MetricsAddr != "" {
		notHere(w, "metrics are served on --metrics-addr")
		return
	}
	const prefix = "Bearer "
	h := r.Header.Get("Authorization")
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) || !keybrake.SecretsEqual(h[len(prefix):], s.cfg.AdminToken) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="keybrake-admin"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"code":"unauthorized","message":"/metrics requires Authorization: Bearer $KEYBRAKE_ADMIN_TOKEN (or serve it unauthenticated on --metrics-addr)"}`+"\n") //nolint:errcheck
		return
	}
	s.metrics.Handler().ServeHTTP(w, r)
}

// isMetrics matches the raw target /metrics (with or without a query).
func isMetrics(uri string) bool { return uri == "/metrics" || strings.HasPrefix(uri, "/metrics?") }

// MetricsHandler serves the --metrics-addr listener: /metrics, unauthenticated.
func (s *Server) MetricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case isMetrics(r.RequestURI):
			s.metrics.Handler().ServeHTTP(w, r)
		case r.RequestURI == "/healthz":
			s.health(w, r)
		default:
			notHere(w, "this listener serves only /metrics and /healthz")
		}
	})
}

func notHere(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	io.WriteString(w, `{"code":"not_found","message":"`+msg+`"}`+"\n") //nolint:errcheck
}

// startObserve runs the webhook worker and the anomaly detector with the
// other background loops.
func (s *Server) startObserve(ctx context.Context) error {
	o := s.cfg.Observe
	w, err := webhooks.New(webhooks.Config{
		Outbox: s.store, Sealer: s.sealer, Logger: s.log, Observer: s.metrics, Owner: s.instance,
		Poll: o.WebhookPoll, Timeout: o.WebhookTimeout, MinBackoff: o.WebhookMinBackoff, MaxBackoff: o.WebhookMaxBackoff,
		RetryFor: o.WebhookRetryFor, DenyPrivate: o.WebhookDenyPrivate, Transport: o.WebhookTransport,
	})
	if err != nil {
		return err
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		w.Run(ctx)
	}()
	if o.AnomalyInterval >= 0 {
		s.bg.Add(1)
		go s.detectAnomalies(ctx)
	}
	return nil
}

// detectAnomalies fires run.spend_anomaly for runs that cross into the
// anomalies report (over the last 30 days) while they can still spend.
// Every replica may run it: the store fires each run once.
func (s *Server) detectAnomalies(ctx context.Context) {
	defer s.bg.Done()
	every := s.cfg.Observe.AnomalyInterval
	if every == 0 {
		every = time.Minute
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now, err := s.store.Now(ctx)
		if err != nil {
			continue
		}
		f := keybrake.AnomalyFilter{
			Window: keybrake.Window{Since: now.AddDate(0, 0, -keybrake.DefaultReportDays), Until: now.Add(time.Minute)},
			Factor: s.cfg.Observe.AnomalyFactor, MinUSD: s.cfg.Observe.AnomalyMinUSD,
		}
		if n, err := s.store.DetectAnomalies(ctx, f); err != nil {
			if ctx.Err() == nil {
				s.log.Error("anomaly detection failed", "err", err.Error())
			}
		} else if n > 0 {
			s.log.Info("runs crossed into spend anomaly", "runs", n)
		}
	}
}

// MetricsAddr is the --metrics-addr listener's address, once started ("" if none).
func (s *Server) MetricsAddr() string {
	if s.cfg.Observe.MetricsAddr == "" || len(s.addrs) == 0 {
		return ""
	}
	return s.addrs[len(s.addrs)-1]
}
