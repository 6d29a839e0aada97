package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// hostileWorkers is the issue's load: 64 clients at once, each sending 1 MiB
// hostile bodies. Its target was peak RSS under 300 MB (before: 16 such
// bodies at once reached 3.6 GB).
const hostileWorkers = 64

// TestDrillHostileBodies: a real keybrake serve (built without -race, so
// its memory is its own) takes 64 concurrent clients sending 1 MiB bodies
// built to blow up on conversion: a JSON array of zeros, deep nesting, a
// form of 200,000 parameters, a Resend body with a 500,000-item array, and
// the same bodies with a revoked key (refused before they are read). Every
// answer is a 400, 401 or 413; the vendor receives nothing; nothing is
// spent. Peak RSS (VmHWM) is reported, and asserted under a generous bound
// (the measured figure is in the report, not the assertion).
func TestDrillHostileBodies(t *testing.T) {
	row := &drillRow{}
	reportDrill(t, row)
	stripe, upstream := slowStripe(t, 0)
	resend := startUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("Resend received %s %s", r.Method, r.URL.Path)
		w.WriteHeader(500)
	}))
	db := filepath.Join(t.TempDir(), "keybrake.db")
	p, err := kbtest.TryServeBinary(t, kbtest.PlainBinary(t), serveEnv(db, upstream,
		"KEYBRAKE_RESEND_API_KEY", kbtest.ResendAPIKey, "KEYBRAKE_RESEND_BASE_URL", resend))
	if err != nil {
		t.Fatal(err)
	}
	admin := client.New(p.AdminURL(), kbtest.AdminToken)
	ctx := context.Background()
	sk := issueCharges(t, p, "1000")
	rk, err := admin.IssueKey(ctx, client.IssueParams{Vendor: "resend", DailyUSDCap: "10", ExpiresIn: "1h", AllowedEndpoints: []string{"emails.send"}})
	if err != nil {
		t.Fatal(err)
	}
	revoked := issueCharges(t, p, "1000")
	if out, _ := drillCharge(ctx, p.URL(), revoked.VaultKey); out != "200" {
		t.Fatalf("warm-up charge: %s", out)
	}
	if _, err := admin.RevokeKey(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	if out, _ := drillCharge(ctx, p.URL(), revoked.VaultKey); out != "401 key_revoked" { // now this replica knows
		t.Fatalf("after the revoke: %s", out)
	}
	baseline := vmHWM(t, p.Cmd.Process.Pid)

	const mib = 1 << 20
	fill := func(prefix, item, suffix string) []byte {
		n := (mib - 64 - len(prefix) - len(suffix)) / len(item)
		return []byte(prefix + strings.TrimSuffix(strings.Repeat(item, n), ",") + suffix)
	}
	type hostile struct {
		name, vaultKey, path, ct string
		body                     []byte
	}
	bodies := []hostile{
		{"zeros", sk.VaultKey, "/v1/payment_intents", "application/json", fill(`{"amount":100,"currency":"usd","metadata":[`, "0,", "]}")},
		{"deep", sk.VaultKey, "/v1/payment_intents", "application/json", fill(`{"amount":100,"currency":"usd","metadata":`, `[`, "")},
		{"params", sk.VaultKey, "/v1/payment_intents", formCT, fill("amount=100&currency=usd", "&a[]=0", "")},
		{"keys", sk.VaultKey, "/v1/payment_intents", "application/json", fill(`{"amount":100,"currency":"usd","metadata":{`, `"k":0,`, "}")},
		{"resend", rk.VaultKey, "/emails", "application/json", fill(`{"from":"a@x.com","to":"b@x.com","subject":"s","tags":[`, "0,", "]}")},
		{"revoked", revoked.VaultKey, "/v1/payment_intents", "application/json", fill(`{"amount":100,"currency":"usd","metadata":[`, "0,", "]}")},
	}
	for _, b := range bodies {
		if len(b.body) > mib {
			t.Fatalf("%s body is %d bytes, over the 1 MiB limit", b.name, len(b.body))
		}
	}
	hc := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: hostileWorkers}}
	var tl tally
	var wg sync.WaitGroup
	start := time.Now()
	const rounds = 3
	for w := 0; w < hostileWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds*len(bodies); i++ {
				b := bodies[(w+i)%len(bodies)]
				// A refusal answered before the body was read may reach the
				// client as a reset while it is still writing; a client sends
				// such a body once more before counting it as an error.
				var resp *http.Response
				var err error
				for try := 0; try < 2; try++ {
					req, _ := http.NewRequest("POST", p.URL()+b.path, bytes.NewReader(b.body))
					req.Header.Set("Authorization", "Bearer "+b.vaultKey)
					req.Header.Set("Content-Type", b.ct)
					if resp, err = hc.Do(req); err == nil {
						break
					}
				}
				if err != nil {
					tl.add("error")
					continue
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var e struct {
					Code string `json:"code"`
				}
				json.Unmarshal(raw, &e) //nolint:errcheck
				tl.add(fmt.Sprintf("%d %s", resp.StatusCode, e.Code))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	peak := vmHWM(t, p.Cmd.Process.Pid)
	row.calls = tl.total()
	row.outcomes = fmt.Sprintf("%s; peak RSS %d MB (idle %d MB), %s", &tl, peak>>20, baseline>>20, elapsed.Round(time.Second))
	t.Logf("%d hostile 1 MiB bodies from %d clients in %s: peak RSS (VmHWM) %d MB, %d MB before", tl.total(), hostileWorkers, elapsed, peak>>20, baseline>>20)

	for outcome, n := range tl.snapshot() {
		switch outcome {
		case "413 request_too_large", "400 unpriceable_request", "401 key_revoked":
		default:
			t.Errorf("%d answers %q", n, outcome)
		}
	}
	if stripe.Requests() != 1 { // the warm-up charge
		t.Errorf("Stripe received %d requests, want the one warm-up charge", stripe.Requests())
	}
	for _, k := range []*client.Key{sk, rk} {
		v, err := admin.GetKey(ctx, k.ID)
		if err != nil {
			t.Fatal(err)
		}
		row.recorded += *v.SpentUSD
		if *v.SpentUSD != 0 || *v.ReservedUSD != 0 {
			t.Errorf("key %s spent $%s, reserved $%s", k.ID, v.SpentUSD, v.ReservedUSD)
		}
	}
	// Generous: the target is 300 MB; this bound catches a return of the
	// blow-up (gigabytes), not noise.
	if peak > 600<<20 {
		t.Errorf("peak RSS %d MB for %d concurrent 1 MiB hostile bodies", peak>>20, hostileWorkers)
	}
}

// vmHWM reads a process's peak resident set size, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
