package keybrake

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// EventType names a webhook event. Receivers branch on it, so a type never
// changes meaning once shipped.
type EventType string

// The events Keybrake emits. Each is written to the outbox in the same
// store transaction as the decision that caused it.
const (
	// EventSpendThreshold: a key's settled plus reserved spend for the UTC
	// day first reached one of its alert_thresholds (percent of the daily
	// cap). Once per key, threshold and day.
	EventSpendThreshold EventType = "key.spend_threshold"
	// EventCapExhausted: the first cap_exhausted denial of a key in a UTC
	// day.
	EventCapExhausted EventType = "key.cap_exhausted"
	// EventKeyRevoked: a key was revoked (once, at its first revocation).
	EventKeyRevoked EventType = "key.revoked"
	// EventRunSpendAnomaly: a run that can still spend crossed into the
	// anomalies report (its spend is over factor × the median of its
	// agent's other runs, or over the minimum). Once per run.
	EventRunSpendAnomaly EventType = "run.spend_anomaly"
)

// EventTypes lists every event type, for validation and documentation.
var EventTypes = []EventType{EventSpendThreshold, EventCapExhausted, EventKeyRevoked, EventRunSpendAnomaly}

// AllEvents subscribes a webhook to every event type, present and future.
const AllEvents = "*"

// Event is one webhook payload. Body is the exact JSON delivered, byte for
// byte on every attempt: the signature covers it, and ID lets a receiver
// deduplicate at-least-once deliveries.
type Event struct {
	ID        string    `json:"id"`
	Type      EventType `json:"type"`
	CreatedAt time.Time `json:"created_at"`
	Data      any       `json:"data"`
}

// SpendThresholdData is the data of key.spend_threshold.
type SpendThresholdData struct {
	KeyID            string `json:"key_id"`
	AgentRunLabel    string `json:"agent_run_label"`
	AgentName        string `json:"agent_name"`
	ThresholdPercent int    `json:"threshold_percent"`
	CapUSD           Micros `json:"cap_usd"`
	SpentUSD         Micros `json:"spent_usd"` // settled plus reserved, that day
	Day              string `json:"day"`
}

// CapExhaustedData is the data of key.cap_exhausted.
type CapExhaustedData struct {
	KeyID         string `json:"key_id"`
	AgentRunLabel string `json:"agent_run_label"`
	AgentName     string `json:"agent_name"`
	Cap           string `json:"cap"` // "daily", "total" or "per_call"
	CapUSD        Micros `json:"cap_usd"`
	SpentUSD      Micros `json:"spent_usd"` // spent plus reserved against that cap
	RequestedUSD  Micros `json:"requested_usd"`
	Day           string `json:"day"`
}

// KeyRevokedData is the data of key.revoked.
type KeyRevokedData struct {
	KeyID         string    `json:"key_id"`
	AgentRunLabel string    `json:"agent_run_label"`
	AgentName     string    `json:"agent_name"`
	RevokedAt     time.Time `json:"revoked_at"`
}

// DefaultAlertThresholds are a key's alert_thresholds when issue does not
// name any: half, most, and all of the daily cap.
var DefaultAlertThresholds = []int{50, 80, 100}

// MaxAlertThresholds bounds how many thresholds one key may carry.
const MaxAlertThresholds = 10

// NormalizeThresholds validates alert thresholds (whole percents of the
// daily cap, 1 to 100) and returns them sorted without duplicates. An empty
// list is valid and turns the alerts off.
func NormalizeThresholds(in []int) ([]int, error) {
	if len(in) > MaxAlertThresholds {
		return nil, fmt.Errorf("at most %d thresholds", MaxAlertThresholds)
	}
	out := make([]int, 0, len(in))
	for _, p := range in {
		if p < 1 || p > 100 {
			return nil, fmt.Errorf("threshold %d is not a percent of the daily cap from 1 to 100", p)
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// ThresholdAmount is the spend at which percent of cap is reached, rounded
// up to the micro-dollar: reaching it means spending at least that much.
// Exact for every cap (no overflow: percent is at most 100).
func ThresholdAmount(cap Micros, percent int) Micros {
	p := Micros(percent)
	return cap/100*p + (cap%100*p+99)/100
}

// ThresholdsCrossed returns the thresholds a move of the day's spend from
// before to after reaches for the first time: those whose amount is above
// before and at most after. A drop (a released reservation) crosses none.
func ThresholdsCrossed(cap, before, after Micros, thresholds []int) []int {
	var out []int
	for _, p := range thresholds {
		if a := ThresholdAmount(cap, p); a > before && a <= after {
			out = append(out, p)
		}
	}
	return out
}

// Webhook is a receiver of events. Its signing secret is kept by the store
// (sealed at rest when a key is configured) and shown once, at creation.
type Webhook struct {
	ID          string    `json:"webhook_id"`
	URL         string    `json:"url"`
	Events      []string  `json:"events"`
	Description string    `json:"description"`
	CreatedAt   time.Time `json:"created_at"`
}

// Subscribes reports whether the webhook wants events of type t.
func (w *Webhook) Subscribes(t EventType) bool {
	return slices.Contains(w.Events, AllEvents) || slices.Contains(w.Events, string(t))
}

// ValidateWebhook checks a webhook's URL and event list and returns the
// events normalised (sorted, without duplicates). Any http or https URL is
// accepted, loopback included: only admins create webhooks, and local
// receivers must work (an optional guard refuses private addresses at
// delivery).
func ValidateWebhook(rawURL string, events []string) ([]string, *Error) {
	if len(rawURL) > 2048 {
		return nil, FieldError("url", "url is longer than 2048 characters")
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return nil, FieldError("url", "url must be an absolute http:// or https:// URL, e.g. https://hooks.example.com/keybrake")
	}
	if u.User != nil {
		return nil, FieldError("url", "url must not carry credentials; authenticate deliveries with the Keybrake-Signature header")
	}
	if u.Fragment != "" {
		return nil, FieldError("url", "url must not have a #fragment")
	}
	if len(events) == 0 {
		return nil, FieldError("events", "events is required: a list such as [\"key.spend_threshold\", \"key.cap_exhausted\"], or [\"*\"] for all")
	}
	out := make([]string, 0, len(events))
	for _, e := range events {
		if e != AllEvents && !slices.Contains(EventTypes, EventType(e)) {
			names := make([]string, len(EventTypes))
			for i, t := range EventTypes {
				names[i] = string(t)
			}
			return nil, FieldError("events", "unknown event type %q; known: %s, or * for all", e, strings.Join(names, ", "))
		}
		out = append(out, e)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Delivery states.
const (
	DeliveryPending   = "pending"   // waiting for its next attempt
	DeliveryDelivered = "delivered" // a 2xx answer was received
	DeliveryFailed    = "failed"    // retries ran out; the event was not delivered
	DeliveryCanceled  = "canceled"  // the webhook was deleted first
)

// Delivery is one event on its way to one webhook: the outbox row.
type Delivery struct {
	ID            int64             `json:"delivery_id"`
	EventID       string            `json:"event_id"`
	EventType     EventType         `json:"event_type"`
	WebhookID     string            `json:"webhook_id"`
	State         string            `json:"state"`
	Attempts      int               `json:"attempts"`
	CreatedAt     time.Time         `json:"created_at"`
	NextAttemptAt *time.Time        `json:"next_attempt_at,omitempty"`
	DeliveredAt   *time.Time        `json:"delivered_at,omitempty"`
	LastStatus    int               `json:"last_status,omitempty"`
	LastError     string            `json:"last_error,omitempty"`
	Log           []DeliveryAttempt `json:"attempt_log"`
}

// DeliveryAttempt is one recorded attempt to deliver an event.
type DeliveryAttempt struct {
	N          int       `json:"attempt"`
	At         time.Time `json:"at"`
	Status     int       `json:"status,omitempty"`
	Error      string    `json:"error,omitempty"`
	DurationMS int64     `json:"duration_ms"`
}

// Outgoing is a claimed delivery: what the worker needs to send it.
type Outgoing struct {
	DeliveryID int64
	EventID    string
	WebhookID  string
	URL        string
	Secret     string // sealed as stored; the worker unseals it
	Body       []byte
	Attempts   int // before this one
	CreatedAt  time.Time
}

// AttemptResult is the outcome of sending an Outgoing once.
type AttemptResult struct {
	Status    int // HTTP status, 0 when no answer
	Error     string
	Duration  time.Duration
	Delivered bool
	// RetryIn schedules the next attempt; GiveUp ends the delivery as failed.
	RetryIn time.Duration
	GiveUp  bool
}

// RunSpendAnomalyData is the data of run.spend_anomaly: the run's row of the
// anomalies report, and the rule it broke.
type RunSpendAnomalyData struct {
	AnomalyRow
	ThresholdFactor Factor  `json:"threshold_factor"`
	MinUSD          *Micros `json:"min_usd,omitempty"`
}
