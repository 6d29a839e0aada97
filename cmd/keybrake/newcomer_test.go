package main

// The fixes from a newcomer's first run, each through run() as a user
// types it.

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/server"
)

func TestVersion(t *testing.T) {
	code, out, errOut := cli(t, "version", "--json")
	var v struct {
		Version   string `json:"version"`
		GoVersion string `json:"go_version"`
		Platform  string `json:"platform"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.Version == "" || v.GoVersion != runtime.Version() || v.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Fatalf("version --json: %d %s %s", code, out, errOut)
	}
	code, line, _ := cli(t, "version")
	if code != 0 || !strings.HasPrefix(line, "keybrake "+v.Version) || !strings.Contains(line, runtime.Version()) {
		t.Fatalf("version: %d %q", code, line)
	}
	if code, out, _ = cli(t, "--version"); code != 0 || out != line {
		t.Fatalf("--version: %d %q, want %q", code, out, line)
	}

	// A build from a clone carries its commit (this worktree's builds run
	// with -buildvcs=false, so the VCS settings are given here).
	b := fromBuildInfo(&debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2025-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"},
	}}, true)
	if b.Commit != "0123456789abcdef0123" || b.CommitAt != "2025-01-02T03:04:05Z" || !b.Modified || b.GoVersion != "go1.26.0" ||
		!strings.HasPrefix(b.String(), "keybrake (devel) (commit 0123456789ab+modified, 2025-01-02T03:04:05Z) go1.26.0 ") {
		t.Fatalf("from build info: %+v %q", b, b.String())
	}
	if b := fromBuildInfo(&debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, true); b.Version != "v1.4.0" || b.Commit != "" {
		t.Fatalf("go install …@v1.4.0: %+v", b)
	}
}

// calls is every request a key made; allowed_calls and denied_calls split
// it, the same in key show, the run summary and the reports.
func TestCountsNamedTheSameEverywhere(t *testing.T) {
	env := kbtest.Start(t)
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken)
	t.Setenv("KEYBRAKE_URL", env.URL)
	code, out, errOut := cli(t, "--json", "key", "issue", "--daily-usd-cap", "1", "--endpoint", "POST /v1/payment_intents", "--label", "counts")
	var k struct {
		ID       string `json:"key_id"`
		VaultKey string `json:"vault_key"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &k) != nil {
		t.Fatalf("key issue: %d %s %s", code, out, errOut)
	}
	if r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", "amount=100&currency=usd"); r.Status != 200 {
		t.Fatalf("charge: %d %s", r.Status, r.Body)
	}
	for range 2 {
		if r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", "amount=100&currency=usd"); r.Status != 429 {
			t.Fatalf("over the cap: %d %s", r.Status, r.Body)
		}
	}
	if n := env.Stripe.Requests(); n != 1 {
		t.Fatalf("the vendor received %d requests; the two denials must not reach it", n)
	}

	type counts struct {
		Calls   int64 `json:"calls"`
		Allowed int64 `json:"allowed_calls"`
		Denied  int64 `json:"denied_calls"`
	}
	want := counts{3, 1, 2}
	for _, args := range [][]string{{"key", "show", k.ID}, {"report", "counts"}} {
		code, out, _ := cli(t, append([]string{"--json"}, args...)...)
		var c counts
		if code != 0 || json.Unmarshal([]byte(out), &c) != nil || c != want {
			t.Errorf("%v --json: %d %+v, want %+v\n%s", args, code, c, want, out)
		}
	}
	for _, args := range [][]string{{"key", "list"}, {"report", "runs"}} {
		code, out, _ := cli(t, append([]string{"--json"}, args...)...)
		var rows []counts
		if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 1 || rows[0] != want {
			t.Errorf("%v --json: %d %+v, want %+v", args, code, rows, want)
		}
	}
	code, out, _ = cli(t, "--json", "report", "daily")
	var daily struct{ Data []counts }
	if code != 0 || json.Unmarshal([]byte(out), &daily) != nil || len(daily.Data) != 1 || daily.Data[0] != want {
		t.Errorf("report daily --json: %d %s", code, out)
	}

	if _, out, _ = cli(t, "key", "show", k.ID); !regexp.MustCompile(`calls\s+3 \(1 allowed, 2 denied\)`).MatchString(out) {
		t.Errorf("key show:\n%s", out)
	}
	if _, out, _ = cli(t, "report", "counts"); !regexp.MustCompile(`calls\s+3 \(1 allowed, 2 denied;`).MatchString(out) {
		t.Errorf("report LABEL:\n%s", out)
	}
	for _, args := range [][]string{{"key", "list"}, {"report", "runs"}, {"report", "daily"}} {
		if _, out, _ = cli(t, args...); !regexp.MustCompile(`CALLS\s+ALLOWED\s+DENIED`).MatchString(out) {
			t.Errorf("%v: no CALLS ALLOWED DENIED columns:\n%s", args, out)
		}
	}
}

// pflag takes a flag's first `quoted` word as its value name; a usage
// that quotes a command printed --pricing keybrake pricing. Every flag's
// value name is either its type or an upper-case placeholder.
func TestFlagValueNames(t *testing.T) {
	placeholder := regexp.MustCompile("^[A-Z][A-Z0-9:=_]*$")
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		check := func(f *pflag.Flag) {
			if n := strings.Count(f.Usage, "`"); n != 0 && n != 2 {
				t.Errorf("%s --%s: %d backquotes in its usage", c.CommandPath(), f.Name, n)
			}
			if name, _ := pflag.UnquoteUsage(f); strings.Contains(f.Usage, "`") && !placeholder.MatchString(name) {
				t.Errorf("%s --%s shows the value name %q", c.CommandPath(), f.Name, name)
			}
		}
		c.LocalFlags().VisitAll(check)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRoot(&globals{stdout: os.Stdout, stderr: os.Stderr}))
	_, out, _ := cli(t, "serve", "--help")
	for _, want := range []string{"--pricing FILE", "--db PATH", "--fx-rate CUR=RATE", "--upstream-timeout duration"} {
		if !strings.Contains(out, want) {
			t.Errorf("serve --help lacks %q", want)
		}
	}
	if strings.Contains(out, "keybrake pricing  ") || strings.Contains(out, "--pricing keybrake") {
		t.Errorf("serve --help:\n%s", out)
	}
}

func TestUnknownEnumValuesRefused(t *testing.T) {
	env := kbtest.Start(t)
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken)
	t.Setenv("KEYBRAKE_URL", env.URL)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"calls", "--outcome", "bogus"}, `--outcome: unknown outcome "bogus"`},
		{[]string{"calls", "--outcome", "denied_bogus"}, `--outcome: unknown outcome "denied_bogus"`},
		{[]string{"key", "list", "--status", "bogus"}, "--status: status must be active, revoked or expired"},
		{[]string{"report", "daily", "--vendor", "bogus"}, `--vendor: unknown vendor "bogus"`},
		{[]string{"report", "agents", "--group-by", "bogus"}, "--group-by: group_by must be agent_name or label_prefix"},
		{[]string{"webhook", "create", "--url", "http://127.0.0.1:9/h", "--event", "bogus"}, "--event:"},
	} {
		code, out, errOut := cli(t, tc.args...)
		if code == 0 || !strings.Contains(errOut, tc.want) || out != "" {
			t.Errorf("%v: %d %q %q, want an error containing %q", tc.args, code, out, errOut, tc.want)
		}
	}
	for _, outcome := range []string{"forwarded", "unknown", "replayed", "denied_cap_exhausted"} {
		if code, _, errOut := cli(t, "calls", "--outcome", outcome); code != 0 {
			t.Errorf("--outcome %s: %d %s", outcome, code, errOut)
		}
	}
	code, _, errOut := cli(t, "--json", "calls", "--outcome", "bogus")
	var e map[string]string
	if code == 0 || json.Unmarshal([]byte(errOut), &e) != nil || e["code"] != "invalid_request" || e["field"] != "outcome" || e["flag"] != "--outcome" {
		t.Errorf("--json: %d %s", code, errOut)
	}
}

func TestDemoRefusesBadCounts(t *testing.T) {
	for _, args := range [][]string{{"--charges", "0"}, {"--charges", "-5"}, {"--charges", "100001"}, {"--cap", "0"}, {"--cap", "-1"}, {"--cap", "lots"}} {
		code, out, errOut := cli(t, append([]string{"demo"}, args...)...)
		if code == 0 || !strings.Contains(errOut, args[0]) || out != "" {
			t.Errorf("demo %v: %d %q %q", args, code, out, errOut)
		}
	}
}

// serveFails runs serve, which must refuse to start, in an empty directory
// and returns its error; the directory must still be empty.
func serveFails(t *testing.T, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken)
	done := make(chan struct{})
	var code int
	var errOut string
	go func() {
		defer close(done)
		code, _, errOut = cli(t, append([]string{"serve", "--db", filepath.Join(dir, "k.db")}, args...)...)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("serve %v did not fail", args)
	}
	if code == 0 {
		t.Fatalf("serve %v: exit 0", args)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		var names []string
		for _, e := range left {
			names = append(names, e.Name())
		}
		t.Errorf("serve %v failed and left %v behind", args, names)
	}
	return errOut
}

func busyPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

func TestFailedStartLeavesNothingBehind(t *testing.T) {
	busy := busyPort(t)
	if e := serveFails(t, "--addr", busy); !strings.Contains(e, "listen on "+busy+" (--addr)") || !strings.Contains(e, "address already in use") {
		t.Errorf("port in use: %s", e)
	}
	if e := serveFails(t, "--addr", "127.0.0.1:0", "--admin-addr", busy); !strings.Contains(e, "(--admin-addr)") {
		t.Errorf("admin port in use: %s", e)
	}
	t.Run("bad base URL", func(t *testing.T) {
		t.Setenv("KEYBRAKE_STRIPE_BASE_URL", "ftp://stripe.example")
		if e := serveFails(t, "--addr", "127.0.0.1:0"); !strings.Contains(e, `stripe base URL "ftp://stripe.example"`) {
			t.Errorf("bad base URL: %s", e)
		}
	})
	if e := serveFails(t, "--addr", "127.0.0.1:18080", "--admin-addr", "127.0.0.1:18080"); !strings.Contains(e, "--addr 127.0.0.1:18080 and --admin-addr 127.0.0.1:18080 are the same address") {
		t.Errorf("same addresses: %s", e)
	}
	if e := serveFails(t, "--addr", ":18081", "--metrics-addr", "127.0.0.1:18081"); !strings.Contains(e, "are the same address") {
		t.Errorf("metrics on the proxy's port: %s", e)
	}
}

func TestDBPathErrorsNameThePath(t *testing.T) {
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken)
	dir := t.TempDir()
	code, _, errOut := cli(t, "serve", "--addr", "127.0.0.1:0", "--db", dir)
	if code == 0 || !strings.Contains(errOut, "database path "+dir+" is a directory") || !strings.Contains(errOut, filepath.Join(dir, "keybrake.db")) {
		t.Errorf("--db a directory: %d %s", code, errOut)
	}
	missing := filepath.Join(dir, "nope", "k.db")
	code, _, errOut = cli(t, "serve", "--addr", "127.0.0.1:0", "--db", missing)
	if code == 0 || !strings.Contains(errOut, "database path "+missing+": the directory "+filepath.Dir(missing)+" does not exist") {
		t.Errorf("--db in a missing directory: %d %s", code, errOut)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 || fileExists(dir+".lock") {
		t.Errorf("left behind: %v", left)
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func TestErrorsNameTheFlag(t *testing.T) {
	env := kbtest.Start(t)
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken)
	t.Setenv("KEYBRAKE_URL", env.URL)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"key", "issue", "--endpoint", "POST /v1/payment_intents"}, "--daily-usd-cap is required"},
		{[]string{"key", "issue", "--daily-usd-cap", "5"}, "--endpoint is required"},
		{[]string{"key", "issue", "--daily-usd-cap", "0", "--endpoint", "POST /v1/payment_intents"}, "--daily-usd-cap: daily_usd_cap must be greater than 0 (invalid_request)"},
		{[]string{"key", "issue", "--daily-usd-cap", "five", "--endpoint", "POST /v1/payment_intents"}, "--daily-usd-cap: daily_usd_cap:"},
		{[]string{"key", "issue", "--daily-usd-cap", "5", "--endpoint", "POST /v1/nope"}, "--endpoint: "},
		{[]string{"key", "issue", "--daily-usd-cap", "5", "--endpoint", "POST /v1/payment_intents", "--expires-in", "soon"}, "--expires-in: expires_in \"soon\""},
		{[]string{"key", "issue", "--daily-usd-cap", "5", "--endpoint", "POST /v1/payment_intents", "--vendor", "acme"}, `--vendor: unknown vendor "acme"`},
		{[]string{"token", "create", "--name", "x", "--vendors", "stripe", "--endpoints", "POST /v1/payment_intents"}, "--max-daily-usd-cap is required"},
		{[]string{"webhook", "create"}, "--url is required"},
		{[]string{"calls", "--limit", "5000"}, "--limit: limit must be an integer from 1 to 1000"},
	} {
		code, out, errOut := cli(t, tc.args...)
		if code == 0 || !strings.Contains(errOut, tc.want) || out != "" {
			t.Errorf("%v: %d %q %q, want an error containing %q", tc.args, code, out, errOut, tc.want)
		}
	}
	if n := env.Stripe.Requests(); n != 0 {
		t.Errorf("the vendor received %d requests", n)
	}
}

func TestURLWithoutScheme(t *testing.T) {
	env := kbtest.Start(t)
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken)
	bare := strings.TrimPrefix(env.URL, "http://")
	if code, out, errOut := cli(t, "--url", bare, "key", "list"); code != 0 || !strings.Contains(out, "KEY_ID") {
		t.Errorf("--url %s: %d %s %s", bare, code, out, errOut)
	}
	if code, _, errOut := cli(t, "--url", "ftp://"+bare, "key", "list"); code == 0 || !strings.Contains(errOut, "--url") || !strings.Contains(errOut, "http://127.0.0.1:8080") {
		t.Errorf("--url ftp://: %d %s", code, errOut)
	}
}

func TestLimitedCallsPageSaysMoreExist(t *testing.T) {
	env := kbtest.Start(t)
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken)
	t.Setenv("KEYBRAKE_URL", env.URL)
	k := chargeRun(t, env, "paging", "a", 100, 100, 100)
	code, out, errOut := cli(t, "calls", "--key", k, "--limit", "2")
	if code != 0 || strings.Count(out, "\n") != 3 || !strings.Contains(errOut, "showing the newest 2 calls; more exist: --all follows every page") {
		t.Errorf("calls --limit 2: %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = cli(t, "--json", "calls", "--key", k, "--limit", "2")
	var rows []any
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 2 || !strings.Contains(errOut, "more exist") {
		t.Errorf("--json calls --limit 2: %d %s %s", code, out, errOut)
	}
	for _, args := range [][]string{{"--limit", "3"}, {"--limit", "2", "--all"}} {
		code, out, errOut = cli(t, append([]string{"calls", "--key", k}, args...)...)
		if code != 0 || strings.Count(out, "\n") != 4 || errOut != "" {
			t.Errorf("calls %v: %d\n%s%s", args, code, out, errOut)
		}
	}
}

// One rule for every duration: a Go duration or whole seconds. serve
// reads its flags and environment before it binds its port, so a port in
// use shows the durations were accepted.
func TestDurationsOneRule(t *testing.T) {
	busy := busyPort(t)
	for _, args := range [][]string{{"--upstream-timeout", "60"}, {"--upstream-timeout", "90s"}, {"--shutdown-timeout", "120"}, {"--webhook-timeout", "5"}} {
		if e := serveFails(t, append([]string{"--addr", busy}, args...)...); !strings.Contains(e, "address already in use") {
			t.Errorf("serve %v was refused: %s", args, e)
		}
	}
	t.Run("env", func(t *testing.T) {
		t.Setenv("KEYBRAKE_UPSTREAM_TIMEOUT", "60")
		if e := serveFails(t, "--addr", busy); !strings.Contains(e, "address already in use") {
			t.Errorf("KEYBRAKE_UPSTREAM_TIMEOUT=60 was refused: %s", e)
		}
	})
	for _, args := range [][]string{{"--upstream-timeout", "-5"}, {"--upstream-timeout", "sixty"}, {"--decision-timeout", "1.5"}} {
		if e := serveFails(t, append([]string{"--addr", busy}, args...)...); !strings.Contains(e, args[0]) || !strings.Contains(e, "whole seconds") {
			t.Errorf("serve %v: %s", args, e)
		}
	}
	t.Run("bad env", func(t *testing.T) {
		t.Setenv("KEYBRAKE_IDEMPOTENCY_TTL", "-1")
		if e := serveFails(t, "--addr", busy); !strings.Contains(e, "KEYBRAKE_IDEMPOTENCY_TTL") {
			t.Errorf("KEYBRAKE_IDEMPOTENCY_TTL=-1: %s", e)
		}
	})
	for in, want := range map[string]time.Duration{"60": time.Minute, "0": 0, "1h30m": 90 * time.Minute, " 15 ": 15 * time.Second} {
		if d, err := parseDuration(in); err != nil || d != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, d, err, want)
		}
	}
}

// -q prints only the secret (VAULT_KEY=$(keybrake key issue -q …)), key list
// -q only the ids; --idempotency-key makes a retried issue print the same key.
func TestQuietAndIdempotentIssue(t *testing.T) {
	env := kbtest.Start(t, kbtest.Options{Configure: kbtest.Sealing})
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken)
	t.Setenv("KEYBRAKE_URL", env.URL)
	args := []string{"key", "issue", "-q", "--daily-usd-cap", "5", "--endpoint", "payment_intents.create", "--label", "quiet", "--idempotency-key", "quiet-run/IssueVaultKey"}
	code, out, errOut := cli(t, args...)
	secret := strings.TrimSuffix(out, "\n")
	if code != 0 || !keybrake.WellFormedVaultKey(secret) || strings.Count(out, "\n") != 1 {
		t.Fatalf("key issue -q: %d %q %s", code, out, errOut)
	}
	if r := env.Do(t, secret, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", "amount=100&currency=usd"); r.Status != 200 {
		t.Fatalf("charge with the -q secret: %d %s", r.Status, r.Body)
	}
	if code, again, _ := cli(t, args...); code != 0 || again != out {
		t.Fatalf("the retried issue printed %q, want %q", again, out)
	}
	code, ids, _ := cli(t, "key", "list", "--label", "quiet", "-q")
	if code != 0 || !regexp.MustCompile(`^vk_\w+\n$`).MatchString(ids) {
		t.Fatalf("key list -q: %d %q, want the one key id", code, ids)
	}
	if code, _, errOut = cli(t, append([]string{"--json"}, args...)...); code == 0 || !strings.Contains(errOut, "choose one") {
		t.Errorf("--json -q: %d %s", code, errOut)
	}
	code, _, errOut = cli(t, "key", "issue", "--daily-usd-cap", "6", "--endpoint", "payment_intents.create", "--label", "quiet", "--idempotency-key", "quiet-run/IssueVaultKey")
	if code == 0 || !strings.Contains(errOut, "idempotency_key_reused") {
		t.Errorf("the same --idempotency-key with another cap: %d %s", code, errOut)
	}
}

// serve's defaults are server.DefaultConfig's: written once.
func TestServeDefaultsAreDefaultConfig(t *testing.T) {
	for _, env := range []string{"KEYBRAKE_ADDR", "KEYBRAKE_DB", "KEYBRAKE_MAX_EXPIRES_IN", "KEYBRAKE_UPSTREAM_TIMEOUT", "KEYBRAKE_DECISION_TIMEOUT",
		"KEYBRAKE_IDEMPOTENCY_TTL", "KEYBRAKE_SHUTDOWN_TIMEOUT", "KEYBRAKE_WEBHOOK_TIMEOUT", "KEYBRAKE_ANOMALY_INTERVAL", "KEYBRAKE_ANOMALY_FACTOR", "KEYBRAKE_UI_IDLE_TIMEOUT"} {
		t.Setenv(env, "")
	}
	d := server.DefaultConfig()
	serve, _, err := newRoot(&globals{stdout: os.Stdout, stderr: os.Stderr}).Find([]string{"serve"})
	if err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{
		"addr": d.Addr, "db": d.DB, "max-expires-in": d.MaxExpiresIn.String(), "upstream-timeout": d.UpstreamTimeout.String(),
		"decision-timeout": d.DecisionTimeout.String(), "idempotency-ttl": d.IdempotencyTTL.String(), "shutdown-timeout": d.ShutdownTimeout.String(),
		"webhook-timeout": d.Observe.WebhookTimeout.String(), "webhook-poll-interval": d.Observe.WebhookPoll.String(),
		"anomaly-interval": d.Observe.AnomalyInterval.String(), "anomaly-factor": d.Observe.AnomalyFactor.String(), "sandbox": "false",
		"ui-idle-timeout": d.UI.IdleTimeout.String(),
	} {
		if f := serve.Flags().Lookup(flag); f == nil || f.DefValue != want {
			t.Errorf("--%s defaults to %v, server.DefaultConfig to %q", flag, f, want)
		}
	}
}
