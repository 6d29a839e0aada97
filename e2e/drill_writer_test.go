package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// TestDrillWriterHeld: another process holds SQLite's write lock (BEGIN
// IMMEDIATE) for 20s while 11 requests arrive. Each request's store
// decision has a deadline (--decision-timeout, 2s here): all 11 are
// refused with 503 store_unavailable while the lock is still held, rather
// than queueing for the single writer one busy timeout after another and
// going through once it is released. Nothing is forwarded.
func TestDrillWriterHeld(t *testing.T) {
	row := &drillRow{}
	reportDrill(t, row)
	stripe, upstream := slowStripe(t, 0)
	db := filepath.Join(t.TempDir(), "keybrake.db")
	p := kbtest.Serve(t, serveEnv(db, upstream, "KEYBRAKE_DECISION_TIMEOUT", "2s"))
	admin := client.New(p.AdminURL(), kbtest.AdminToken)
	k := issueCharges(t, p, "1000")
	var tl tally
	if out, _ := drillCharge(context.Background(), p.URL(), k.VaultKey); out != "200" {
		t.Fatalf("first charge: %s", out)
	}
	tl.add("200")

	locker, err := sql.Open("sqlite", "file:"+db+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close()
	conn, err := locker.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatalf("take the write lock: %v", err)
	}
	held := time.Now()
	before := stripe.Requests()
	const n = 11
	type answer struct {
		outcome     string
		after       time.Duration
		whileLocked bool
	}
	answers := make([]answer, n)
	var mu sync.Mutex
	released := false
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, _ := drillCharge(context.Background(), p.URL(), k.VaultKey)
			mu.Lock()
			answers[i] = answer{out, time.Since(held), !released}
			mu.Unlock()
		}()
	}
	allAnswered := make(chan struct{})
	go func() { wg.Wait(); close(allAnswered) }()
	select {
	case <-allAnswered:
	case <-time.After(20 * time.Second):
	}
	mu.Lock()
	released = true
	mu.Unlock()
	if _, err := conn.ExecContext(context.Background(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	<-allAnswered

	var times []string
	for i, a := range answers {
		tl.add(a.outcome)
		times = append(times, fmt.Sprintf("%s after %s", a.outcome, a.after.Round(100*time.Millisecond)))
		if a.outcome != "503 store_unavailable" || !a.whileLocked {
			t.Errorf("request %d: %s (answered while the writer was held: %v), want 503 store_unavailable while held", i, a.outcome, a.whileLocked)
		}
	}
	t.Logf("answers while the writer was held: %s", strings.Join(times, "; "))
	if got := stripe.Requests(); got != before {
		t.Errorf("the vendor received %d request(s) while the writer was held", got-before)
	}
	if out, _ := drillCharge(context.Background(), p.URL(), k.VaultKey); out != "200" {
		t.Errorf("charge after the writer was released: %s", out)
	} else {
		tl.add(out)
	}
	spent, _ := spentOf(t, admin, k.ID)
	row.calls, row.outcomes, row.charged, row.recorded = tl.total(), tl.String(), stripeCharged(stripe), spent
	if spent != row.charged {
		t.Errorf("recorded $%s, vendor charged $%s", spent, row.charged)
	}
}
