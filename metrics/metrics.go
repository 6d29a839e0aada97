// Package metrics is Keybrake's Prometheus registry: the proxy's request,
// spend and latency figures, the store's operation durations, webhook
// deliveries, the Go and process collectors, and two gauges read from the
// shared store at scrape time.
//
// Counters and histograms are per process: on replicas each exports its
// own, and Prometheus sums them (sum by (vendor) (rate(…[5m]))). The gauges
// keybrake_reserved_usd and keybrake_active_keys come from the store every
// replica shares, so each replica reports the same value: aggregate them
// with max, not sum.
//
// No label carries a key id, a run label or a secret: vendor, outcome, code,
// op and result take values from small fixed sets, so cardinality stays
// bounded whatever agents send.
package metrics

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/proxy"
)

// GaugeSource is the store, read at scrape time.
type GaugeSource interface {
	Gauges(ctx context.Context) (*keybrake.Gauges, error)
}

// Metrics is the registry and the collectors the proxy, the store and the
// webhook worker report to.
type Metrics struct {
	reg *prometheus.Registry

	requests  *prometheus.CounterVec
	rejected  *prometheus.CounterVec
	spend     *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	upstream  *prometheus.HistogramVec
	storeOps  *prometheus.HistogramVec
	batchOps  *prometheus.HistogramVec
	batchTime *prometheus.HistogramVec
	webhooks  *prometheus.CounterVec
	vendors   map[string]bool
	vendorSet []string
}

// Options configure the registry.
type Options struct {
	// Vendors are the vendor names served: the only values the vendor
	// label takes (anything else reads "other").
	Vendors []string
	// Gauges, when set, is read at every scrape for the store-wide gauges.
	Gauges GaugeSource
	// GaugeTimeout bounds that read (default 2s): a slow store makes the
	// gauges absent from one scrape, never the scrape hang.
	GaugeTimeout time.Duration
}

// Request and upstream latencies span a local sandbox (milliseconds) to a
// vendor call at its timeout (60s by default).
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// New builds the registry with every collector registered.
func New(opt Options) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), vendors: map[string]bool{}}
	for _, v := range opt.Vendors {
		m.vendors[v] = true
		m.vendorSet = append(m.vendorSet, v)
	}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keybrake_proxy_requests_total",
		Help: "Proxied requests presented with a valid vault key, by vendor, outcome (forwarded, unknown, replayed, denied) and Keybrake error code (empty when none).",
	}, []string{"vendor", "outcome", "code"})
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keybrake_rejected_requests_total",
		Help: "Requests refused before any key was known, by code: no, malformed or unknown vault key (invalid_vault_key), two Authorization headers (ambiguous_header), or the key could not be looked up (store_unavailable). They are not audited one row each; this counter is their record.",
	}, []string{"code"})
	m.spend = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keybrake_spend_usd_total",
		Help: "Settled spend of the calls this process forwarded, in US dollars (unknown outcomes at their estimate). The ledger is exact; this figure is for graphs.",
	}, []string{"vendor"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "keybrake_request_duration_seconds", Help: "Time from a request's arrival to its answer, by vendor.",
		Buckets: latencyBuckets,
	}, []string{"vendor"})
	m.upstream = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "keybrake_upstream_duration_seconds", Help: "Time from forwarding a call to the vendor's answer (or the failure to get one), by vendor.",
		Buckets: latencyBuckets,
	}, []string{"vendor"})
	m.storeOps = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "keybrake_store_duration_seconds", Help: "Duration of store operations, by operation (decide, settle, key_by_hash, …).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"op"})
	m.batchOps = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "keybrake_store_batch_ops",
		Help:    "Decisions and settlements per group-committed store transaction, by result (committed, failed). Its sum over committed batches is every decision and settlement recorded; a hot key at its best fills batches near the batch size (64).",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
	}, []string{"result"})
	m.batchTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "keybrake_store_batch_duration_seconds", Help: "Duration of one group-committed store transaction, commit included, by result (committed, failed).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"result"})
	m.webhooks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keybrake_webhook_deliveries_total",
		Help: "Webhook delivery attempts by result: delivered, retry (failed, will be retried) or failed (retries ran out).",
	}, []string{"result"})
	m.reg.MustRegister(m.requests, m.rejected, m.spend, m.duration, m.upstream, m.storeOps, m.batchOps, m.batchTime, m.webhooks,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, v := range m.vendorSet {
		m.spend.WithLabelValues(v) // a zero series from the start, so rate() works at once
	}
	if opt.Gauges != nil {
		if opt.GaugeTimeout <= 0 {
			opt.GaugeTimeout = 2 * time.Second
		}
		m.reg.MustRegister(&storeCollector{src: opt.Gauges, timeout: opt.GaugeTimeout, vendors: m.vendorSet, known: m.vendors})
	}
	return m
}

// Registry is the registry, for tests and for registering more collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format. A collector
// that fails leaves its figures out and the rest are still served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, Registry: m.reg})
}

func (m *Metrics) vendor(v string) string {
	switch {
	case m.vendors[v]:
		return v
	case v == "":
		return "none"
	default:
		return "other"
	}
}

// outcome folds the audit outcomes into the four a dashboard shows: the
// denial's reason is in the code label.
func outcome(o keybrake.Outcome) string {
	switch {
	case o.IsDenied():
		return "denied"
	case o == keybrake.OutcomeForwarded, o == keybrake.OutcomeUnknown, o == keybrake.OutcomeReplayed:
		return string(o)
	default:
		return "other"
	}
}

// code keeps a label value to the error-code alphabet.
func code(c keybrake.Code) string {
	s := string(c)
	if len(s) > 40 || strings.Trim(s, "abcdefghijklmnopqrstuvwxyz_") != "" {
		return "other"
	}
	return s
}

// Request implements proxy.Observer.
func (m *Metrics) Request(r proxy.RequestStats) {
	if !r.KeyKnown {
		m.rejected.WithLabelValues(code(r.Code)).Inc()
		return
	}
	v := m.vendor(r.Vendor)
	m.requests.WithLabelValues(v, outcome(r.Outcome), code(r.Code)).Inc()
	m.duration.WithLabelValues(v).Observe(r.Duration.Seconds())
	if r.Spent > 0 {
		m.spend.WithLabelValues(v).Add(float64(r.Spent) / float64(keybrake.MicrosPerUSD))
	}
}

// Upstream implements proxy.Observer.
func (m *Metrics) Upstream(vendor string, d time.Duration) {
	m.upstream.WithLabelValues(m.vendor(vendor)).Observe(d.Seconds())
}

// Batch records one group-committed store transaction (see
// sqlstore.BatchObserver).
func (m *Metrics) Batch(ops int, took time.Duration, err error) {
	result := "committed"
	if err != nil {
		result = "failed"
	}
	m.batchOps.WithLabelValues(result).Observe(float64(ops))
	m.batchTime.WithLabelValues(result).Observe(took.Seconds())
}

// Delivery counts one webhook delivery attempt by result.
func (m *Metrics) Delivery(result string) {
	switch result {
	case "delivered", "retry", "failed":
	default:
		result = "other"
	}
	m.webhooks.WithLabelValues(result).Inc()
}

// storeCollector reads the shared store's gauges at scrape time.
type storeCollector struct {
	src     GaugeSource
	timeout time.Duration
	vendors []string
	known   map[string]bool
}

var (
	reservedDesc = prometheus.NewDesc("keybrake_reserved_usd",
		"Dollars reserved by calls in flight (pending), by vendor; read from the shared store at scrape time.", []string{"vendor"}, nil)
	activeDesc = prometheus.NewDesc("keybrake_active_keys",
		"Vault keys neither revoked nor expired; read from the shared store at scrape time.", nil, nil)
	gaugesUpDesc = prometheus.NewDesc("keybrake_store_gauges_up",
		"1 if this scrape read the store-wide gauges, 0 if the store did not answer in time.", nil, nil)
)

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- reservedDesc
	ch <- activeDesc
	ch <- gaugesUpDesc
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	g, err := c.src.Gauges(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(gaugesUpDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(gaugesUpDesc, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(activeDesc, prometheus.GaugeValue, float64(g.ActiveKeys))
	reserved := map[string]float64{}
	for _, v := range c.vendors {
		reserved[v] = 0
	}
	for v, amount := range g.Reserved {
		if !c.known[v] {
			v = "other"
		}
		reserved[v] += float64(amount) / float64(keybrake.MicrosPerUSD)
	}
	for v, amount := range reserved {
		ch <- prometheus.MustNewConstMetric(reservedDesc, prometheus.GaugeValue, amount, v)
	}
}
