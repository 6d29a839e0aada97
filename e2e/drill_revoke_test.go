package e2e

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
)

// TestDrillRevokeUnderLoad: 200 clients charge one key through three
// replicas on PostgreSQL while it is revoked. Read by time, the audit must
// agree with the order of events: no forwarded call is stamped later than
// revoked_at, no key_revoked refusal earlier. And no request sent after the
// DELETE returned reached the vendor.
func TestDrillRevokeUnderLoad(t *testing.T) {
	row := &drillRow{}
	reportDrill(t, row)
	// The drill is about the audit's timestamps, not latency: 200 clients
	// at once on three -race replicas would otherwise queue past the 5s
	// decision deadline and be shed as 503s.
	rs := startReplicas(t, 3, "KEYBRAKE_DECISION_TIMEOUT", "1m")
	k := rs.issue(t, client.IssueParams{DailyUSDCap: "1000000"})

	const clients = 200
	var (
		revoked    atomic.Bool
		all        tally
		afterBad   atomic.Int64 // sent after the DELETE returned, and neither refused nor shed
		afterSent  atomic.Int64
		stop       = make(chan struct{})
		wg         sync.WaitGroup
		firstAfter sync.Once
		firstBad   string
	)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				after := revoked.Load()
				out, _ := drillCharge(context.Background(), rs.procs[c%3].URL(), k.VaultKey)
				all.add(out)
				if after {
					afterSent.Add(1)
					if out != "401 key_revoked" && out != "503 store_unavailable" { // 503: shed, nothing forwarded
						afterBad.Add(1)
						firstAfter.Do(func() { firstBad = out })
					}
				}
			}
		}()
	}
	waitFor(t, 2*time.Minute, "charges before the revoke", func() bool { return all.get("200") >= 300 })
	rev, err := rs.admins[0].RevokeKey(context.Background(), k.ID)
	if err != nil {
		t.Fatalf("revoke: %v", err)
	}
	revoked.Store(true)
	waitFor(t, 2*time.Minute, "charges after the revoke", func() bool { return afterSent.Load() >= 400 })
	close(stop)
	wg.Wait()

	if n := all.get("503 store_unavailable"); n > 0 { // shed past the decision deadline, or worse: say which
		for i, p := range rs.procs {
			if lines := logLines(p.Logs(), "ledger unavailable"); lines != "" {
				t.Logf("replica %d refused %d call(s) in all as store_unavailable; first: %s", i+1, n, firstLine(lines))
			}
		}
	}
	if afterBad.Load() > 0 {
		t.Errorf("%d requests sent after the DELETE returned were not refused; first: %s", afterBad.Load(), firstBad)
	}
	revokedAt := rev.RevokedAt
	if v := rs.key(t, 1, k.ID); v.RevokedAt == nil || !v.RevokedAt.Equal(revokedAt) {
		t.Fatalf("replica 2 shows revoked_at %v, the DELETE answered %v", v.RevokedAt, revokedAt)
	}
	calls := allCalls(t, rs.admins[2], client.ListCallsParams{KeyID: k.ID})
	var lateAllowed, earlyRevoked, allowed, refused int
	var worstLate, worstEarly time.Duration
	for _, c := range calls {
		switch {
		case !strings.HasPrefix(string(c.Outcome), "denied"):
			allowed++
			if c.Time.After(revokedAt) {
				lateAllowed++
				worstLate = max(worstLate, c.Time.Sub(revokedAt))
			}
		case c.Code == "key_revoked":
			refused++
			if c.Time.Before(revokedAt) {
				earlyRevoked++
				worstEarly = max(worstEarly, revokedAt.Sub(c.Time))
			}
		}
	}
	t.Logf("audit: %d allowed, %d key_revoked; revoked_at %s", allowed, refused, revokedAt.Format(time.RFC3339Nano))
	if lateAllowed > 0 {
		t.Errorf("%d allowed calls are stamped after revoked_at (up to %s later)", lateAllowed, worstLate)
	}
	if earlyRevoked > 0 {
		t.Errorf("%d key_revoked refusals are stamped before revoked_at (up to %s earlier)", earlyRevoked, worstEarly)
	}
	if int64(allowed) != all.get("200") || int64(refused) != all.get("401 key_revoked") {
		t.Errorf("audit has %d allowed and %d key_revoked rows; clients saw %s", allowed, refused, &all)
	}
	spent, reserved := spentOf(t, rs.admins[0], k.ID)
	row.calls, row.outcomes, row.charged, row.recorded = all.total(), all.String(), stripeCharged(rs.stripe), spent
	if spent != row.charged || reserved != 0 {
		t.Errorf("recorded $%s (reserved $%s), vendor charged $%s", spent, reserved, row.charged)
	}
}
