package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/server"
	"github.com/keybrake/keybrake/webhooks"
)

// observeFlags are serve's metrics, webhook and anomaly settings. The key
// that seals webhook secrets comes from the environment only
// (KEYBRAKE_SECRETS_KEY).
type observeFlags struct {
	metricsAddr                          string
	webhookPoll, webhookTimeout          time.Duration
	webhookMinBackoff, webhookMaxBackoff time.Duration
	webhookDenyPrivate                   bool
	anomalyInterval                      time.Duration
	anomalyFactor, anomalyMinUSD         string
}

func addObserveFlags(fl *pflag.FlagSet, f *serveFlags) {
	o := &f.observe
	d := server.DefaultConfig().Observe
	fl.StringVar(&o.metricsAddr, "metrics-addr", os.Getenv("KEYBRAKE_METRICS_ADDR"), "serve /metrics unauthenticated on this `HOST:PORT` instead of behind the admin token (env KEYBRAKE_METRICS_ADDR)")
	f.durationFlag(fl, &o.webhookPoll, "webhook-poll-interval", "KEYBRAKE_WEBHOOK_POLL_INTERVAL", d.WebhookPoll, "how often due webhook deliveries are looked for")
	f.durationFlag(fl, &o.webhookTimeout, "webhook-timeout", "KEYBRAKE_WEBHOOK_TIMEOUT", d.WebhookTimeout, "time limit of one webhook delivery")
	f.durationFlag(fl, &o.webhookMinBackoff, "webhook-min-backoff", "KEYBRAKE_WEBHOOK_MIN_BACKOFF", d.WebhookMinBackoff, "wait before the first retry of a failed delivery; it doubles after each failure")
	f.durationFlag(fl, &o.webhookMaxBackoff, "webhook-max-backoff", "KEYBRAKE_WEBHOOK_MAX_BACKOFF", d.WebhookMaxBackoff, "longest wait between retries; retries go on for 24h")
	fl.BoolVar(&o.webhookDenyPrivate, "webhook-deny-private", os.Getenv("KEYBRAKE_WEBHOOK_DENY_PRIVATE") == "true", "refuse webhook receivers on loopback, private and link-local addresses (env KEYBRAKE_WEBHOOK_DENY_PRIVATE=true)")
	f.durationFlag(fl, &o.anomalyInterval, "anomaly-interval", "KEYBRAKE_ANOMALY_INTERVAL", d.AnomalyInterval, "how often runs are checked for run.spend_anomaly; 0 turns it off")
	fl.StringVar(&o.anomalyFactor, "anomaly-factor", envOr("KEYBRAKE_ANOMALY_FACTOR", d.AnomalyFactor.String()), "a run is anomalous above this many times its agent's median run (env KEYBRAKE_ANOMALY_FACTOR)")
	fl.StringVar(&o.anomalyMinUSD, "anomaly-min-usd", os.Getenv("KEYBRAKE_ANOMALY_MIN_USD"), "a run is also anomalous above this many dollars (env KEYBRAKE_ANOMALY_MIN_USD)")
}

func (o *observeFlags) config() (server.ObserveConfig, error) {
	key, err := webhooks.ParseKey(os.Getenv("KEYBRAKE_SECRETS_KEY"))
	if err != nil {
		return server.ObserveConfig{}, err
	}
	factor, err := keybrake.ParseFactor(o.anomalyFactor)
	if err != nil {
		return server.ObserveConfig{}, fmt.Errorf("--anomaly-factor: %w", err)
	}
	var minUSD keybrake.Micros
	if o.anomalyMinUSD != "" {
		if minUSD, err = keybrake.ParseUSD(o.anomalyMinUSD); err != nil {
			return server.ObserveConfig{}, fmt.Errorf("--anomaly-min-usd: %w", err)
		}
	}
	interval := o.anomalyInterval
	if interval == 0 {
		interval = -1 // off
	}
	return server.ObserveConfig{
		MetricsAddr: o.metricsAddr, SecretsKey: key,
		WebhookPoll: o.webhookPoll, WebhookTimeout: o.webhookTimeout,
		WebhookMinBackoff: o.webhookMinBackoff, WebhookMaxBackoff: o.webhookMaxBackoff, WebhookDenyPrivate: o.webhookDenyPrivate,
		AnomalyInterval: interval, AnomalyFactor: factor, AnomalyMinUSD: minUSD,
	}, nil
}

// thresholdsFlag is --alert-thresholds: "50,80,100", or "none".
func thresholdsFlag(s string) (*[]int, error) {
	if s == "" {
		return nil, nil
	}
	list := []int{}
	if s == "none" {
		return &list, nil
	}
	for _, part := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("--alert-thresholds %q: want percents such as 50,80,100, or none", s)
		}
		list = append(list, n)
	}
	return &list, nil
}
