package demo

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keybrake/keybrake/client"
)

// The demo data set: a month of agent runs across the three vendors, for
// the dashboard's demo (`keybrake demo --ui`) and its screenshots. Every
// row in it is a real proxied call through Keybrake to a local sandbox; the
// history is made by moving the store's clock back a day at a time. The
// amounts come from a seeded generator, so two seedings look alike.

// Target is the Keybrake the data set is played against.
type Target struct {
	// URL is the proxy's base URL; Admin the admin API's client.
	URL   string
	Admin *client.Client
	// SetClock moves the store's clock: a negative offset is the past,
	// zero is now.
	SetClock func(offset time.Duration)
	// WebhookURL, when set, receives every event; DownWebhookURL, when
	// set, is a receiver that is down, subscribed to cap events (its
	// deliveries show the retries).
	WebhookURL, DownWebhookURL string
	HTTP                       *http.Client
}

// Seeded is what Seed made, for a caller that wants to point at it.
type Seeded struct {
	Calls   int
	Keys    int
	Revoked string // a key revoked today
	Active  string // a key still spending today
	Runaway string // the label of the run that hit its cap mid-month
}

// HistoryDays is how many days before today the data set covers.
const HistoryDays = 29

// Seed plays the data set: HistoryDays days of runs, then today's, with a
// webhook subscribed to every event when Target.WebhookURL is set.
func Seed(ctx context.Context, t Target) (*Seeded, error) {
	if t.HTTP == nil {
		t.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	s := &seeder{Target: t, rnd: rand.New(rand.NewPCG(2024, 6)), out: &Seeded{}}
	if t.WebhookURL != "" {
		if _, err := t.Admin.CreateWebhook(ctx, client.WebhookParams{URL: t.WebhookURL, Events: []string{"*"},
			Description: "on-call pager bridge (demo receiver)"}); err != nil {
			return nil, fmt.Errorf("create the demo webhook: %w", err)
		}
	}
	if t.DownWebhookURL != "" {
		if _, err := t.Admin.CreateWebhook(ctx, client.WebhookParams{URL: t.DownWebhookURL,
			Events: []string{"key.cap_exhausted", "run.spend_anomaly"}, Description: "finance alerts (down)"}); err != nil {
			return nil, fmt.Errorf("create the demo webhook: %w", err)
		}
	}
	defer t.SetClock(0)
	for d := HistoryDays; d >= 1; d-- {
		// Runs start in the morning UTC of that day, whatever the hour now.
		now := time.Now().UTC()
		morning := now.Truncate(24*time.Hour).AddDate(0, 0, -d).Add(9 * time.Hour)
		t.SetClock(morning.Sub(now))
		if err := s.day(ctx, d, false); err != nil {
			return nil, err
		}
	}
	t.SetClock(0)
	if err := s.day(ctx, 0, true); err != nil {
		return nil, err
	}
	s.out.Calls = int(s.calls.Load())
	return s.out, nil
}

type seeder struct {
	Target
	rnd   *rand.Rand
	out   *Seeded
	calls atomic.Int64
}

// day plays one day's runs: the billing fan-outs (Stripe), the order
// notifications (Twilio) and the newsletter (Resend). Weekdays are busier.
func (s *seeder) day(ctx context.Context, daysAgo int, today bool) error {
	when := time.Now().UTC().AddDate(0, 0, -daysAgo)
	busy := when.Weekday() != time.Saturday && when.Weekday() != time.Sunday
	runs := 1
	if busy {
		runs = 2
	}
	for r := 0; r < runs; r++ {
		// Mid-month one run goes wrong: a fan-out far past its cap.
		runaway := daysAgo == 11 && r == 0
		charges, cap := 6+s.rnd.IntN(10), "250"
		if runaway {
			charges = 60
		}
		run := fmt.Sprintf("%s-%d", when.Format("20060102"), r)
		if runaway {
			run += "-runaway"
			s.out.Runaway = billingARN + run
		}
		if err := s.billing(ctx, run, cap, charges, false); err != nil {
			return err
		}
	}
	if err := s.notify(ctx, when, 8+s.rnd.IntN(20)); err != nil {
		return err
	}
	if daysAgo%7 == 3 || today {
		if err := s.newsletter(ctx, when); err != nil {
			return err
		}
	}
	if !today {
		return nil
	}
	// Today also has two runs still going: one well inside its cap, one
	// close to it.
	if err := s.billing(ctx, when.Format("20060102")+"-live", "500", 14, true); err != nil {
		return err
	}
	return s.billing(ctx, when.Format("20060102")+"-tight", "250", 9, true)
}

func (s *seeder) issue(ctx context.Context, p client.IssueParams) (*client.Key, error) {
	k, err := s.Admin.IssueKey(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("issue a %s key: %w", p.Vendor, err)
	}
	s.out.Keys++
	return k, nil
}

const billingARN = "arn:aws:states:us-east-1:123456789012:execution:agent-billing:"

// billing is the seed's Step Functions run: a key per execution, a fan-out
// of payment intents of $8 to $42 sharing its cap, revoked at the end
// unless keep.
func (s *seeder) billing(ctx context.Context, run, cap string, charges int, keep bool) error {
	arn := billingARN + run
	k, err := s.issue(ctx, client.IssueParams{Vendor: "stripe", DailyUSDCap: cap, ExpiresIn: "2h",
		AllowedEndpoints: []string{"POST /v1/payment_intents", "GET /v1/customers/*"},
		AgentRunLabel:    arn, AgentName: "billing-agent", Metadata: map[string]string{"team": "revenue", "workflow": "agent-billing"}})
	if err != nil {
		return err
	}
	amounts := make([]int, charges)
	for i := range amounts {
		amounts[i] = 800 + 100*s.rnd.IntN(35)
	}
	var wg sync.WaitGroup
	errs := make(chan error, charges)
	for i, cents := range amounts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"amount":%d,"currency":"usd","customer":"cus_%s_%03d"}`, cents, run, i)
			if _, err := s.call(ctx, k.VaultKey, "/stripe/v1/payment_intents", "application/json", body, fmt.Sprintf("%s-%d", arn, i), i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	// An agent that strays off its allow-list is refused, and audited.
	if s.rnd.IntN(4) == 0 {
		if _, err := s.call(ctx, k.VaultKey, "/stripe/v1/refunds", "application/json", `{"charge":"ch_1","amount":500}`, "", -1); err != nil {
			return err
		}
	}
	if keep {
		s.out.Active = k.ID
		return nil
	}
	if _, err := s.Admin.RevokeKey(ctx, k.ID); err != nil {
		return fmt.Errorf("revoke %s: %w", k.ID, err)
	}
	s.out.Revoked = k.ID
	return nil
}

// notify sends order-shipped SMS through a Twilio key.
func (s *seeder) notify(ctx context.Context, when time.Time, n int) error {
	k, err := s.issue(ctx, client.IssueParams{Vendor: "twilio", DailyUSDCap: "5", ExpiresIn: "1h",
		AllowedEndpoints: []string{"POST /2010-04-01/Accounts/*/Messages.json"},
		AgentRunLabel:    "temporal:order-notify:" + when.Format("2006-01-02"), AgentName: "notify-agent"})
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		form := url.Values{"To": {fmt.Sprintf("+1415555%04d", s.rnd.IntN(10000))}, "From": {"+14155550199"},
			"Body": {"Your order has shipped. Track it at https://shop.example/t/" + fmt.Sprint(1000+i)}}
		if _, err := s.call(ctx, k.VaultKey, "/twilio/2010-04-01/Accounts/ACdemo/Messages.json", "application/x-www-form-urlencoded", form.Encode(), "", i); err != nil {
			return err
		}
	}
	_, err = s.Admin.RevokeKey(ctx, k.ID)
	return err
}

// newsletter sends a weekly batch through a Resend key.
func (s *seeder) newsletter(ctx context.Context, when time.Time) error {
	year, week := when.ISOWeek()
	k, err := s.issue(ctx, client.IssueParams{Vendor: "resend", DailyUSDCap: "2", ExpiresIn: "1h",
		AllowedEndpoints: []string{"POST /emails/batch", "POST /emails"},
		AgentRunLabel:    fmt.Sprintf("lambda:newsletter:%d-W%02d", year, week), AgentName: "newsletter-agent"})
	if err != nil {
		return err
	}
	var mails []string
	for i := 0; i < 40; i++ {
		mails = append(mails, fmt.Sprintf(`{"from":"news@shop.example","to":["reader%03d@example.com"],"subject":"This week","text":"Hello"}`, i))
	}
	if _, err := s.call(ctx, k.VaultKey, "/resend/emails/batch", "application/json", "["+strings.Join(mails, ",")+"]", "", 0); err != nil {
		return err
	}
	_, err = s.Admin.RevokeKey(ctx, k.ID)
	return err
}

// call sends one proxied request and returns its status. Refusals are part
// of the data set; only a transport error is an error.
func (s *seeder) call(ctx context.Context, vaultKey, path, contentType, body, idem string, item int) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+path, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+vaultKey)
	req.Header.Set("Content-Type", contentType)
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	if item >= 0 {
		req.Header.Set("Keybrake-Item", fmt.Sprint(item))
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return 0, fmt.Errorf("POST %s: %w", path, err)
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck
	resp.Body.Close()
	s.calls.Add(1)
	return resp.StatusCode, nil
}
