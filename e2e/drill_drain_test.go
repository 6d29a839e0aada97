package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
)

// TestDrillDrainPastShutdownTimeout: SIGTERM with three calls held at a
// vendor that does not answer, and --shutdown-timeout 1s. The drain gives
// up: the process exits 1 and the clients see their connection close. Each
// abandoned call is logged (call id, key id; no secret), stays reserved,
// and the next start counts it as spend with outcome unknown.
func TestDrillDrainPastShutdownTimeout(t *testing.T) {
	row := &drillRow{}
	reportDrill(t, row)
	stripe := sandbox.NewStripe(kbtest.StripeSecret)
	hold := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(hold) }) }
	var arrived atomic.Int64
	upstream := startUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
		stripe.ServeHTTP(w, r)
	}))
	t.Cleanup(release) // before the upstream's Close, which waits for its handlers
	db := filepath.Join(t.TempDir(), "keybrake.db")
	env := serveEnv(db, upstream)
	p := kbtest.Serve(t, env, "--shutdown-timeout", "1s")
	k := issueCharges(t, p, "1000")

	var tl tally
	var wg sync.WaitGroup
	const inFlight = 3
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, _ := drillCharge(context.Background(), p.URL(), k.VaultKey)
			tl.add(out)
		}()
	}
	waitFor(t, 30*time.Second, "the calls to reach the vendor", func() bool { return arrived.Load() == inFlight })
	err := p.Stop(time.Minute)
	wg.Wait()
	if err == nil {
		t.Errorf("the drain was cut short, yet the process exited 0")
	}
	if n := tl.get("error"); n != inFlight {
		t.Errorf("%d of the %d abandoned clients saw their connection end (%s)", n, inFlight, &tl)
	}
	release()

	// The next start recovers them as unknown: each was logged as abandoned.
	p2 := kbtest.Serve(t, env)
	admin := client.New(p2.AdminURL(), kbtest.AdminToken)
	unknown := allCalls(t, admin, client.ListCallsParams{KeyID: k.ID, Outcome: "unknown"})
	if len(unknown) != inFlight {
		t.Errorf("%d calls recovered as unknown, want %d", len(unknown), inFlight)
	}
	logs := p.Logs()
	t.Logf("the drained process logged:\n%s", logLines(logs, "shutdown"))
	for _, c := range unknown {
		if !logLine(logs, "abandoned", fmt.Sprintf(`"call_id":%d`, c.ID), `"key_id":"`+k.ID+`"`) {
			t.Errorf("call %d was abandoned by the drain without a log line naming it and its key\n%s", c.ID, logs)
		}
	}
	for _, secret := range []string{k.VaultKey, kbtest.StripeSecret, kbtest.AdminToken} {
		if strings.Contains(logs, secret) {
			t.Errorf("a secret is in the logs")
		}
	}
	spent, _ := spentOf(t, admin, k.ID)
	row.calls, row.outcomes, row.charged, row.recorded = tl.total(), tl.String(), stripeCharged(stripe), spent
	if spent < row.charged || spent != inFlight*1_000_000 {
		t.Errorf("recorded $%s for %d abandoned $1 calls (vendor charged $%s)", spent, inFlight, row.charged)
	}
}

// logLine reports whether one line of logs contains every part.
func logLine(logs string, parts ...string) bool {
	for _, line := range strings.Split(logs, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return true
		}
	}
	return false
}
