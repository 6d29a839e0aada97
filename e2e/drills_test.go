package e2e

// Fault drills: real keybrake serve processes in front of a counting vendor
// fake, while the database restarts, the disk fills, the writer is held or
// a key is revoked under load. Each drill adds one row to a table, written
// to $KEYBRAKE_DRILLS_TABLE when set (scripts/drills sets it and prints
// the table; CI runs scripts/drills): calls sent, their outcomes, what the
// vendor charged and what the ledger recorded.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if path := os.Getenv("KEYBRAKE_DRILLS_TABLE"); path != "" {
		if err := writeDrillTable(path); err != nil {
			fmt.Fprintln(os.Stderr, "drills table:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// drillRow is one line of the drills table.
type drillRow struct {
	drill    string
	calls    int64
	outcomes string
	charged  keybrake.Micros // what the vendor charged
	recorded keybrake.Micros // what the ledger counts as spent
	result   string
}

var drills struct {
	sync.Mutex
	rows []drillRow
}

// reportDrill adds the drill's row when the test ends, with its result.
// Fill the row as the drill goes (it is read at cleanup).
func reportDrill(t *testing.T, row *drillRow) {
	t.Cleanup(func() {
		row.drill = t.Name()
		row.result = "ok"
		if t.Failed() {
			row.result = "FAILED"
		}
		if t.Skipped() {
			row.result = "skipped"
		}
		t.Logf("drill: %d calls (%s), vendor charged $%s, recorded $%s", row.calls, row.outcomes, row.charged, row.recorded)
		drills.Lock()
		drills.rows = append(drills.rows, *row)
		drills.Unlock()
	})
}

func writeDrillTable(path string) error {
	drills.Lock()
	defer drills.Unlock()
	if len(drills.rows) == 0 {
		return nil
	}
	sort.Slice(drills.rows, func(i, j int) bool { return drills.rows[i].drill < drills.rows[j].drill })
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(f, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "DRILL\tCALLS\tOUTCOMES\tVENDOR CHARGED\tRECORDED\tRESULT")
	for _, r := range drills.rows {
		fmt.Fprintf(w, "%s\t%d\t%s\t$%s\t$%s\t%s\n", strings.TrimPrefix(r.drill, "TestDrill"), r.calls, r.outcomes, r.charged, r.recorded, r.result)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// tally counts answers by "status code" ("200", "503 store_unavailable",
// "error" for a transport failure such as EOF).
type tally struct {
	mu sync.Mutex
	n  map[string]int64
}

func (c *tally) add(outcome string) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int64{}
	}
	c.n[outcome]++
	c.mu.Unlock()
}

// snapshot copies the counts.
func (c *tally) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

func (c *tally) get(outcome string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[outcome]
}

func (c *tally) total() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var t int64
	for _, v := range c.n {
		t += v
	}
	return t
}

// String lists the counts, largest first.
func (c *tally) String() string {
	s := c.snapshot()
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return s[keys[i]] > s[keys[j]] || s[keys[i]] == s[keys[j]] && keys[i] < keys[j] })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", k, s[k])
	}
	return strings.Join(parts, ", ")
}

// drillClient sends the drills' $1 Stripe charges.
var drillClient = &http.Client{Timeout: 3 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxIdleConns: 2048}}

// drillCharge sends one $1 charge and names its answer for a tally.
func drillCharge(ctx context.Context, baseURL, vaultKey string) (outcome string, status int) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/stripe/v1/payment_intents", strings.NewReader(replicaChargeBody))
	if err != nil {
		return "error", 0
	}
	req.Header.Set("Authorization", "Bearer "+vaultKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := drillClient.Do(req)
	if err != nil {
		return "error", 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		return "200", resp.StatusCode
	}
	var e struct {
		Code string `json:"code"`
	}
	if jsonErr := json.Unmarshal(b, &e); jsonErr != nil || e.Code == "" {
		return fmt.Sprint(resp.StatusCode), resp.StatusCode
	}
	return fmt.Sprintf("%d %s", resp.StatusCode, e.Code), resp.StatusCode
}

// load is a set of workers charging in a loop until stopped.
type load struct {
	all  tally
	stop chan struct{}
	wg   sync.WaitGroup
}

// startLoad runs workers that send $1 charges round-robin over urls, each
// pausing pace between calls.
func startLoad(t testing.TB, urls []string, vaultKey string, workers int, pace time.Duration) *load {
	l := &load{stop: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := w; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				out, _ := drillCharge(ctx, urls[i%len(urls)], vaultKey)
				l.all.add(out)
				select {
				case <-l.stop:
					return
				case <-time.After(pace):
				}
			}
		}()
	}
	t.Cleanup(func() { l.halt(); cancel() })
	return l
}

// halt stops the workers and waits for their calls to be answered.
func (l *load) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// waitFor polls cond every 20ms for up to limit, failing the test with what
// if it never holds. It bounds a wait; it asserts no duration.
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// healthz is the status /healthz answers (0 when it does not answer).
func healthz(baseURL string) int {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(baseURL + "/healthz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// stripeCharged sums what the sandbox Stripe charged, in micro-dollars.
func stripeCharged(s *sandbox.Stripe) keybrake.Micros {
	var m keybrake.Micros
	for _, pi := range s.Intents() {
		m += keybrake.Micros(pi.Amount) * 10_000 // cents → micros
	}
	return m
}

// spentOf reads a key's recorded spend and reservation.
func spentOf(t testing.TB, admin *client.Client, keyID string) (spent, reserved keybrake.Micros) {
	t.Helper()
	k, err := admin.GetKey(context.Background(), keyID)
	if err != nil {
		t.Fatalf("get key %s: %v", keyID, err)
	}
	if k.SpentUSD == nil || k.ReservedUSD == nil {
		t.Fatalf("key %s without usage", keyID)
	}
	return *k.SpentUSD, *k.ReservedUSD
}

// allCalls pages through a key's audit rows.
func allCalls(t testing.TB, admin *client.Client, p client.ListCallsParams) []client.Call {
	t.Helper()
	p.Limit = 500
	var out []client.Call
	for {
		page, err := admin.ListCalls(context.Background(), p)
		if err != nil {
			t.Fatalf("list calls: %v", err)
		}
		out = append(out, page.Data...)
		if !page.HasMore {
			return out
		}
		p.Cursor = page.NextCursor
	}
}

// slowStripe is the sandbox Stripe answering after delay, so calls are at
// the vendor when the drill strikes.
func slowStripe(t testing.TB, delay time.Duration) (*sandbox.Stripe, string) {
	s := sandbox.NewStripe(kbtest.StripeSecret)
	return s, startUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		s.ServeHTTP(w, r)
	}))
}

func serveEnv(db, upstream string, kv ...string) []string {
	return kbtest.EnvVars(append([]string{"KEYBRAKE_DB", db, "KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken,
		"KEYBRAKE_STRIPE_SECRET_KEY", kbtest.StripeSecret, "KEYBRAKE_STRIPE_BASE_URL", upstream}, kv...)...)
}

func issueCharges(t testing.TB, p *kbtest.Proc, capUSD string) *client.Key {
	t.Helper()
	k, err := client.New(p.AdminURL(), kbtest.AdminToken).IssueKey(context.Background(), client.IssueParams{
		Vendor: "stripe", DailyUSDCap: capUSD, ExpiresIn: "1h", AllowedEndpoints: []string{"POST /v1/payment_intents"}})
	if err != nil {
		t.Fatalf("issue key: %v", err)
	}
	return k
}

// logLines keeps the lines of logs that contain part.
func logLines(logs, part string) string {
	var out []string
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, part) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
