package e2e

// Replicas that route each key's ledger ops to one replica, the key's
// owner (--peer-addr, package peer): the cap stays exact, every op reaches
// the owner once, the owner's death or shutdown costs its keys nothing,
// and the peer listener answers only a replica with the peer token.
// Run with KEYBRAKE_TEST_POSTGRES_URL set (always set in CI).

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// startRouted starts n replicas with a peer listener each (on a free
// port; the URL the others dial is the bound address) and waits until
// every one routes among all n: each lists the replicas at its beat, once
// a second, so the first to start does not know the others yet.
func startRouted(t *testing.T, n int, extra ...string) *replicaSet {
	t.Helper()
	rs := startReplicas(t, n, append([]string{"KEYBRAKE_PEER_ADDR", "127.0.0.1:0"}, extra...)...)
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		all := true
		for i, p := range rs.procs {
			v, ok := sample(scrape(t, p.URL()+"/metrics", kbtest.AdminToken), "keybrake_peer_replicas", nil)
			if !ok {
				t.Fatalf("replica %d: no keybrake_peer_replicas in /metrics", i+1)
			}
			all = all && v == float64(n)
		}
		if all {
			return rs
		}
		if time.Now().After(end) {
			t.Fatalf("the %d replicas did not all list each other within 10s", n)
		}
	}
}

// peerCounts is one replica's keybrake_peer_ops metrics.
type peerCounts struct{ sent, local, failed, received float64 }

func (rs *replicaSet) peerCounts(t *testing.T) []peerCounts {
	t.Helper()
	out := make([]peerCounts, len(rs.procs))
	for i, p := range rs.procs {
		if p.Exited() {
			continue
		}
		fams := scrape(t, p.URL()+"/metrics", kbtest.AdminToken)
		get := func(name string, labels map[string]string) float64 {
			v, ok := sample(fams, name, labels)
			if !ok {
				t.Fatalf("replica %d: no %s%v in /metrics", i+1, name, labels)
			}
			return v
		}
		out[i] = peerCounts{
			sent:     get("keybrake_peer_ops_total", map[string]string{"result": "sent"}),
			local:    get("keybrake_peer_ops_total", map[string]string{"result": "local"}),
			failed:   get("keybrake_peer_ops_total", map[string]string{"result": "failed"}),
			received: get("keybrake_peer_ops_received_total", nil),
		}
	}
	return out
}

// owner is the one replica that received ops, failing unless there is
// exactly one.
func owner(t *testing.T, pc []peerCounts) int {
	t.Helper()
	o := -1
	for i, c := range pc {
		if c.received > 0 {
			if o >= 0 {
				t.Fatalf("replicas %d and %d both decided for others: %+v", o+1, i+1, pc)
			}
			o = i
		}
	}
	if o < 0 {
		t.Fatalf("no replica decided for another: %+v", pc)
	}
	return o
}

// TestRoutedReplicasShareOneExactCap: the 3,000-call exact cap of
// TestReplicasShareOneExactCap, routed. The key's owner decided and settled
// every op the two others received, each exactly once: the decisions of
// the 2,000 calls sent to them (and of the last check's two), and the
// settlements of the charges they allowed. The audit rows name the replica
// that forwarded each call, not the owner.
func TestRoutedReplicasShareOneExactCap(t *testing.T) {
	rs := startRouted(t, 3, "KEYBRAKE_DECISION_TIMEOUT", "5m")
	k, allowed := rs.shareOneExactCap(t)

	pc := rs.peerCounts(t)
	o := owner(t, pc)
	var want float64
	for i, c := range pc {
		if c.local != 0 || c.failed != 0 {
			t.Errorf("replica %d: %v ops decided locally and %v lost; want none with every replica up", i+1, c.local, c.failed)
		}
		if i == o {
			if c.sent != 0 {
				t.Errorf("the owner, replica %d, sent %v ops away", i+1, c.sent)
			}
			continue
		}
		// 1,000 decisions + 1 for the final refused charge, and one
		// settlement per allowed charge.
		if w := float64(1000 + 1 + allowed[i]); c.sent != w {
			t.Errorf("replica %d sent %v ops to the owner; want %v (1,001 decisions and %d settlements)", i+1, c.sent, w, allowed[i])
		}
		want += c.sent
	}
	if pc[o].received != want {
		t.Errorf("the owner received %v ops; the others sent %v", pc[o].received, want)
	}

	var instances int
	if err := rs.db.QueryRow(fmt.Sprintf(`SELECT count(DISTINCT instance) FROM %q.calls WHERE key_id = $1 AND outcome = 'forwarded'`, rs.schema), k.ID).Scan(&instances); err != nil {
		t.Fatal(err)
	}
	if instances != 3 {
		t.Errorf("the forwarded calls name %d replicas; want the 3 that forwarded them", instances)
	}
}

// TestRoutedOwnerKilled: kill -9 the key's owner while it is idle. The two
// others go on deciding the key at once (the owner's connection is gone,
// so they decide locally, nothing lost and nothing doubled), and once the
// owner's row is older than the freshness window one of them owns the key.
func TestRoutedOwnerKilled(t *testing.T) {
	rs := startRouted(t, 3)
	k := rs.issue(t, client.IssueParams{DailyUSDCap: "100"})
	for i := range rs.procs {
		rs.mustCharge(t, i, k.VaultKey, http.StatusOK, "")
	}
	o := owner(t, rs.peerCounts(t))
	rs.procs[o].Kill()
	// The kernel closed its sockets at exit; give the survivors' peer
	// connections a moment to read that.
	time.Sleep(200 * time.Millisecond)

	var survivors []int
	for i := range rs.procs {
		if i != o {
			survivors = append(survivors, i)
		}
	}
	charged := 3
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		rs.mustCharge(t, survivors[charged%2], k.VaultKey, http.StatusOK, "")
		charged++
	}
	pc := rs.peerCounts(t)
	if pc[survivors[0]].local+pc[survivors[1]].local == 0 {
		t.Errorf("no op was decided locally while the owner was dead: %+v", pc)
	}
	if pc[survivors[0]].received+pc[survivors[1]].received == 0 {
		t.Errorf("no survivor took the key over after the dead owner aged out: %+v", pc)
	}
	if pc[survivors[0]].failed+pc[survivors[1]].failed != 0 {
		t.Errorf("ops were lost although the owner died idle: %+v", pc)
	}
	v := rs.key(t, survivors[0], k.ID)
	if want := fmt.Sprintf("%d.00", charged); v.SpentUSD == nil || v.SpentUSD.String() != want || *v.ReservedUSD != 0 || rs.stripe.Requests() != charged {
		t.Fatalf("spent %v reserved %v, vendor received %d; want %s, 0, %d", v.SpentUSD, v.ReservedUSD, rs.stripe.Requests(), want, charged)
	}
}

// TestRoutedOwnerStopsCleanly: SIGTERM the key's owner while the two others
// are charging the key. It leaves the peers list first and answers the ops
// still routed to it until the others have seen it go, so no call fails.
func TestRoutedOwnerStopsCleanly(t *testing.T) {
	rs := startRouted(t, 3)
	k := rs.issue(t, client.IssueParams{DailyUSDCap: "10000"})
	for i := range rs.procs {
		rs.mustCharge(t, i, k.VaultKey, http.StatusOK, "")
	}
	o := owner(t, rs.peerCounts(t))

	var ok atomic.Int64
	var bad []string
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 16 {
		i := (o + 1 + w%2) % 3
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := rs.charge(i, k.VaultKey)
				if err != nil || r.status != http.StatusOK {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("replica %d: %d %s %v", i+1, r.status, r.body, err))
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}
	time.Sleep(time.Second)
	if err := rs.procs[o].Stop(30 * time.Second); err != nil {
		t.Errorf("the owner's shutdown: %v", err)
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d calls failed while the owner stopped, first: %s", len(bad), bad[0])
	}
	s := (o + 1) % 3
	v := rs.key(t, s, k.ID)
	charged := int(ok.Load()) + 3
	if want := fmt.Sprintf("%d.00", charged); v.SpentUSD == nil || v.SpentUSD.String() != want || *v.ReservedUSD != 0 || rs.stripe.Requests() != charged {
		t.Fatalf("spent %v reserved %v, vendor received %d; want %s, 0, %d", v.SpentUSD, v.ReservedUSD, rs.stripe.Requests(), want, charged)
	}
	t.Logf("%d charges while the owner stopped", ok.Load())
}

// TestPeerListenerRefusesStrangers: the peer listener speaks only to a
// replica: another path, another method or a wrong token is refused with
// a JSON error, and nothing reaches the ledger or the vendor.
func TestPeerListenerRefusesStrangers(t *testing.T) {
	rs := startRouted(t, 1, "KEYBRAKE_PEER_TOKEN", "the-right-peer-token-0123456789")
	var peerURL string
	if err := rs.db.QueryRow(fmt.Sprintf(`SELECT url FROM %q.peers`, rs.schema)).Scan(&peerURL); err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(peerURL, "http://")
	connect := func(path, header string) string {
		t.Helper()
		c, err := net.DialTimeout("tcp", host, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", path, host, header)
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatalf("CONNECT %s: %v", path, err)
		}
		return strings.TrimSpace(line)
	}
	for _, tc := range []struct{ path, header, want string }{
		{"/_keybrake/peer/v1", "", "HTTP/1.1 401 Unauthorized"},
		{"/_keybrake/peer/v1", "Authorization: Bearer the-wrong-peer-token-012345678\r\n", "HTTP/1.1 401 Unauthorized"},
		{"/_keybrake/peer/v1", "Authorization: Bearer " + kbtest.AdminToken + "\r\n", "HTTP/1.1 401 Unauthorized"},
		{"/elsewhere", "Authorization: Bearer the-right-peer-token-0123456789\r\n", "HTTP/1.1 404 Not Found"},
		{"/_keybrake/peer/v1", "Authorization: Bearer the-right-peer-token-0123456789\r\n", "HTTP/1.0 200 Connected to Keybrake peer"},
	} {
		if got := connect(tc.path, tc.header); got != tc.want {
			t.Errorf("CONNECT %s with %q: %q, want %q", tc.path, tc.header, got, tc.want)
		}
	}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, peerURL+"/_keybrake/peer/v1", strings.NewReader("{}"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != http.MethodConnect {
		t.Errorf("POST to the peer listener: %d Allow %q, want 405 Allow CONNECT", resp.StatusCode, resp.Header.Get("Allow"))
	}
	var calls int
	if err := rs.db.QueryRow(fmt.Sprintf(`SELECT count(*) FROM %q.calls`, rs.schema)).Scan(&calls); err != nil {
		t.Fatal(err)
	}
	if calls != 0 || rs.stripe.Requests() != 0 {
		t.Errorf("%d audit rows and %d vendor requests after strangers knocked; want none", calls, rs.stripe.Requests())
	}
	if logs := rs.procs[0].Logs(); strings.Contains(logs, "the-wrong-peer-token") || strings.Contains(logs, "the-right-peer-token") {
		t.Errorf("a peer token reached the log")
	}
}
