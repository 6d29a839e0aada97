package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/internal/bench"
)

// The amount each benchmark call asks for: 1 US cent, so a run of a few
// hundred thousand calls stays far below the keys' caps.
const (
	benchBody   = "amount=1&currency=usd"
	centMicros  = keybrake.MicrosPerUSD / 100
	adminToken  = "kbbench-admin-token-0123456789abcdef"
	benchSecret = "sk_test_bench"
)

// runConfig is `kbbench run`'s flags.
type runConfig struct {
	keybrake string // path of the keybrake binary
	duration time.Duration
	warmup   time.Duration
	conns    int
	pgURL    string // a PostgreSQL server to create a fresh database on; "" skips the PostgreSQL setups
	only     string // comma-separated setup names; "" runs them all
	dir      string // working directory (databases, logs, lua scripts)
	// replicaProcs is GOMAXPROCS of each replica of a multi-replica setup
	// (0: the default, every core).
	replicaProcs int
}

// result is one measured load run.
type result struct {
	rps      float64
	p50, p99 time.Duration
	non2xx   int64
	errors   int64 // socket errors
	requests int64
	cpu      time.Duration // used by the processes serving the calls (see cpu.go)
}

// cpuPerCall is the CPU the serving processes spent on one call.
func (r result) cpuPerCall() time.Duration {
	if r.requests == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.requests)
}

// row is one line of the table.
type row struct {
	name  string
	res   result
	ratio float64 // to the mean of the plain runs around it; 0 for the plain rows
	// cpuRatio is the plain runs' CPU per call over this one's: the same
	// comparison made with what a call costs instead of how many went.
	cpuRatio float64
	// perBatch is the mean ops per store batch during the run (from each
	// replica's keybrake_store_batch_ops); 0 when not measured.
	perBatch float64
	check    string // the exactness check's verdict
	failed   bool
}

// target is a setup under test: one or more listening addresses, the
// keys it accepts, and how to read back what it recorded.
type target struct {
	addrs []string
	keys  []string
	spent func() (spent, reserved keybrake.Micros, err error)
	stop  func()
	cpu   cpuMeter // the processes serving its calls
	// batches reads the committed batches' ops and count, summed over the
	// replicas (nil: no store batches, the in-memory ledger).
	batches func() (ops, count float64, err error)
}

// setup starts one configuration of Keybrake.
type setup struct {
	name  string
	start func(r *runner) (*target, error)
}

type runner struct {
	cfg      runConfig
	self     string // this executable, for its upstream/plain/memproxy modes
	upstream string // base URL
	procs    []*proc
	mu       sync.Mutex
	seq      int
}

func runCmd(args []string) error {
	var cfg runConfig
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	fs.StringVar(&cfg.keybrake, "keybrake", "keybrake", "path of the keybrake binary")
	fs.DurationVar(&cfg.duration, "d", 5*time.Second, "measured duration of each run")
	fs.DurationVar(&cfg.warmup, "warmup", time.Second, "unmeasured warm-up before each Keybrake run")
	fs.IntVar(&cfg.conns, "c", 64, "connections (wrk -c)")
	fs.StringVar(&cfg.pgURL, "pg", os.Getenv("KEYBRAKE_BENCH_POSTGRES_URL"), "PostgreSQL URL to create a scratch database on (empty: skip PostgreSQL)")
	fs.StringVar(&cfg.only, "only", "", "comma-separated setups to run (default all): nostore,sqlite1,sqlite64,pg1,pg64,pg3")
	fs.IntVar(&cfg.replicaProcs, "replica-gomaxprocs", 0, "GOMAXPROCS of each replica of the 3-replica setup (0: Go's default, every core; a container with a CPU limit gets its limit)")
	fs.StringVar(&cfg.dir, "dir", "", "working directory (default a new temporary one, removed after)")
	fs.Parse(args) //nolint:errcheck // ExitOnError
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk not found: apt-get install wrk (scripts/bench/run does it)")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if cfg.dir == "" {
		if cfg.dir, err = os.MkdirTemp("", "kbbench-"); err != nil {
			return err
		}
		defer os.RemoveAll(cfg.dir)
	}
	r := &runner{cfg: cfg, self: self}
	defer r.stopAll()
	return r.run()
}

func (r *runner) want(name string) bool {
	if r.cfg.only == "" {
		return true
	}
	for _, n := range strings.Split(r.cfg.only, ",") {
		if strings.TrimSpace(n) == name {
			return true
		}
	}
	return false
}

func (r *runner) run() error {
	upAddr, err := r.spawn("upstream", r.self, []string{"upstream", "-addr", "127.0.0.1:0"}, nil)
	if err != nil {
		return err
	}
	r.upstream = "http://" + upAddr
	plainAddr, err := r.spawn("plain", r.self, []string{"plain", "-addr", "127.0.0.1:0", "-upstream", r.upstream}, nil)
	if err != nil {
		return err
	}
	// The plain proxy forwards whatever it gets; one key's header makes
	// its requests the same bytes as Keybrake's.
	plainKeys := []string{keybrake.NewVaultKey()}

	setups := []setup{
		{"Keybrake, no store (in-memory ledger)", func(r *runner) (*target, error) { return r.memProxy(1) }},
		{"Keybrake, SQLite, one hot key", func(r *runner) (*target, error) { return r.sqlite(1) }},
		{"Keybrake, SQLite, 64 keys", func(r *runner) (*target, error) { return r.sqlite(64) }},
		{"Keybrake, PostgreSQL, one hot key", func(r *runner) (*target, error) { return r.postgres(1, 1) }},
		{"Keybrake, PostgreSQL, 64 keys", func(r *runner) (*target, error) { return r.postgres(1, 64) }},
		{"Keybrake, PostgreSQL, 3 replicas, one key", func(r *runner) (*target, error) { return r.postgres(3, 1) }},
	}
	short := []string{"nostore", "sqlite1", "sqlite64", "pg1", "pg64", "pg3"}

	var rows []row
	plain := func() (result, error) {
		res, err := r.load([]string{plainAddr}, plainKeys, r.cfg.duration, r.meter("plain"))
		if err == nil {
			rows = append(rows, row{name: "plain httputil.ReverseProxy", res: res})
		}
		return res, err
	}
	direct, err := r.load([]string{upAddr}, plainKeys, r.cfg.duration, r.meter("upstream"))
	if err != nil {
		return err
	}
	rows = append(rows, row{name: "the upstream, direct", res: direct})
	before, err := plain()
	if err != nil {
		return err
	}
	for i, s := range setups {
		if !r.want(short[i]) {
			continue
		}
		if strings.Contains(s.name, "PostgreSQL") && r.cfg.pgURL == "" {
			rows = append(rows, row{name: s.name, check: "skipped: no -pg URL (KEYBRAKE_BENCH_POSTGRES_URL)"})
			continue
		}
		fmt.Fprintf(os.Stderr, "kbbench: %s\n", s.name)
		kb, err := r.measure(s)
		after, perr := plain()
		if perr != nil {
			return perr
		}
		if err != nil {
			rows = append(rows, row{name: s.name, check: "FAILED: " + err.Error(), failed: true})
		} else {
			kb.ratio = kb.res.rps / ((before.rps + after.rps) / 2)
			if c := kb.res.cpuPerCall(); c > 0 {
				kb.cpuRatio = float64(before.cpuPerCall()+after.cpuPerCall()) / 2 / float64(c)
			}
			rows = append(rows, kb)
		}
		before = after
	}
	printTable(os.Stdout, rows)
	for _, rw := range rows {
		if rw.failed {
			return errors.New("a setup failed its run or its exactness check")
		}
	}
	return nil
}

// measure starts a setup, warms it up, loads it, and checks that what it
// recorded is exactly what the upstream received meanwhile.
func (r *runner) measure(s setup) (row, error) {
	t, err := s.start(r)
	if err != nil {
		return row{}, err
	}
	defer t.stop()
	up0, err := r.upstreamStats()
	if err != nil {
		return row{}, err
	}
	if r.cfg.warmup > 0 {
		if _, err := r.load(t.addrs, t.keys, r.cfg.warmup, t.cpu); err != nil {
			return row{}, err
		}
	}
	var ops0, n0 float64
	if t.batches != nil {
		if ops0, n0, err = t.batches(); err != nil {
			return row{}, err
		}
	}
	res, err := r.load(t.addrs, t.keys, r.cfg.duration, t.cpu)
	if err != nil {
		return row{}, err
	}
	rw := row{name: s.name, res: res}
	if t.batches != nil {
		ops1, n1, err := t.batches()
		if err != nil {
			return row{}, err
		}
		if n1 > n0 {
			rw.perBatch = (ops1 - ops0) / (n1 - n0)
		}
	}
	// Exactness: once nothing is reserved any more (calls in flight when
	// wrk stopped have settled), the keys' spend is what the upstream was
	// asked for, to the micro-dollar.
	var spent, reserved keybrake.Micros
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if spent, reserved, err = t.spent(); err != nil {
			return row{}, err
		}
		if reserved == 0 || time.Now().After(deadline) {
			break
		}
	}
	up1, err := r.upstreamStats()
	if err != nil {
		return row{}, err
	}
	received := keybrake.Micros(up1.Amount-up0.Amount) * centMicros
	calls := up1.Requests - up0.Requests
	switch {
	case up1.Bad != up0.Bad:
		rw.check, rw.failed = fmt.Sprintf("FAILED: the upstream got %d unreadable bodies", up1.Bad-up0.Bad), true
	case reserved != 0:
		rw.check, rw.failed = fmt.Sprintf("FAILED: %s still reserved 30s after the run", reserved), true
	case spent != received:
		rw.check, rw.failed = fmt.Sprintf("FAILED: recorded %s, upstream received %s", spent, received), true
	case res.non2xx != 0 || res.errors != 0:
		rw.check, rw.failed = fmt.Sprintf("FAILED: %d non-2xx, %d socket errors", res.non2xx, res.errors), true
	default:
		rw.check = fmt.Sprintf("exact: %d calls, $%s recorded = received", calls, spent)
	}
	return rw, nil
}

func (r *runner) upstreamStats() (bench.UpstreamStats, error) {
	var st bench.UpstreamStats
	err := getJSON(r.upstream+"/__bench/stats", "", &st)
	return st, err
}

// memProxy is Keybrake's proxy with the in-memory ledger.
func (r *runner) memProxy(nkeys int) (*target, error) {
	keyfile := filepath.Join(r.cfg.dir, "mem-keys.txt")
	addr, err := r.spawn("memproxy", r.self, []string{"memproxy", "-addr", "127.0.0.1:0", "-upstream", r.upstream,
		"-keys", strconv.Itoa(nkeys), "-keyfile", keyfile}, nil)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(keyfile)
	if err != nil {
		return nil, err
	}
	t := &target{addrs: []string{addr}, keys: strings.Fields(string(b)), stop: func() { r.stop("memproxy") }, cpu: r.meter("memproxy")}
	t.spent = func() (keybrake.Micros, keybrake.Micros, error) {
		var v struct{ Spent, Reserved keybrake.Micros }
		var raw map[string]keybrake.Micros
		if err := getJSON("http://"+addr+"/__bench/totals", "", &raw); err != nil {
			return 0, 0, err
		}
		v.Spent, v.Reserved = raw["spent_usd"], raw["reserved_usd"]
		return v.Spent, v.Reserved, nil
	}
	return t, nil
}

// serveEnv is the environment of a `keybrake serve` under test.
func (r *runner) serveEnv() []string {
	return []string{"KEYBRAKE_ADMIN_TOKEN=" + adminToken, "KEYBRAKE_STRIPE_SECRET_KEY=" + benchSecret,
		"KEYBRAKE_STRIPE_BASE_URL=" + r.upstream}
}

// sqlite is `keybrake serve` on a fresh SQLite file, synchronous=FULL as
// shipped.
func (r *runner) sqlite(nkeys int) (*target, error) {
	r.seq++
	db := filepath.Join(r.cfg.dir, fmt.Sprintf("bench-%d.db", r.seq))
	name := fmt.Sprintf("sqlite-%d", r.seq)
	addr, err := r.spawn(name, r.cfg.keybrake, []string{"serve", "--addr", "127.0.0.1:0", "--db", db}, r.serveEnv())
	if err != nil {
		return nil, err
	}
	t, err := r.keybrakeTarget([]string{addr}, nkeys, func() { r.stop(name) })
	if err == nil {
		t.cpu = r.meter(name)
	}
	return t, err
}

// postgres is `keybrake serve` on a fresh PostgreSQL database, one or
// more replicas sharing it; the database is dropped afterwards.
func (r *runner) postgres(replicas, nkeys int) (*target, error) {
	ctx := context.Background()
	r.seq++
	dbName := fmt.Sprintf("kb_bench_%d_%d", os.Getpid(), r.seq)
	admin, err := pgx.Connect(ctx, r.cfg.pgURL)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redact(r.cfg.pgURL), err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+dbName); err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}
	drop := func() {
		c, err := pgx.Connect(ctx, r.cfg.pgURL)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kbbench: drop database:", err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+dbName+" WITH (FORCE)"); err != nil {
			fmt.Fprintln(os.Stderr, "kbbench: drop database:", err)
		}
	}
	u, err := url.Parse(r.cfg.pgURL)
	if err != nil {
		drop()
		return nil, err
	}
	u.Path = "/" + dbName
	q := u.Query()
	q.Set("pool_max_conns", "10") // 3 replicas stay well under a shared server's max_connections
	u.RawQuery = q.Encode()
	var addrs, names []string
	stop := func() {
		for _, n := range names {
			r.stop(n)
		}
		drop()
	}
	for i := range replicas {
		name := fmt.Sprintf("pg-%d-%d", r.seq, i)
		// Started one at a time: the first migrates the fresh database.
		env := r.serveEnv()
		if replicas > 1 && r.cfg.replicaProcs > 0 {
			env = append(env, "GOMAXPROCS="+strconv.Itoa(r.cfg.replicaProcs))
		}
		addr, err := r.spawn(name, r.cfg.keybrake, []string{"serve", "--addr", "127.0.0.1:0", "--db", u.String(),
			"--instance-id", fmt.Sprintf("bench-%d", i)}, env)
		if err != nil {
			stop()
			return nil, err
		}
		addrs, names = append(addrs, addr), append(names, name)
	}
	t, err := r.keybrakeTarget(addrs, nkeys, stop)
	if err == nil {
		t.cpu = r.meter(names...)
		t.cpu.byName = "postgres"
	}
	return t, err
}

// keybrakeTarget issues keys through the first replica's admin API, under
// one run label, and reads the spend back from the run summary.
func (r *runner) keybrakeTarget(addrs []string, nkeys int, stop func()) (*target, error) {
	label := keybrake.NewID("bench_")
	t := &target{addrs: addrs, stop: stop}
	for range nkeys {
		body := fmt.Sprintf(`{"vendor":"stripe","daily_usd_cap":"1000000","allowed_endpoints":["payment_intents.create"],"expires_in":"1h","agent_run_label":%q}`, label)
		req, _ := http.NewRequest("POST", "http://"+addrs[0]+"/vault/keys", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			stop()
			return nil, err
		}
		var k struct {
			VaultKey string `json:"vault_key"`
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if err := json.Unmarshal(b, &k); err != nil || k.VaultKey == "" {
			stop()
			return nil, fmt.Errorf("issue key: %d %s", res.StatusCode, b)
		}
		t.keys = append(t.keys, k.VaultKey)
	}
	t.batches = func() (ops, count float64, err error) {
		for _, a := range addrs {
			o, c, err := batchStats("http://" + a + "/metrics")
			if err != nil {
				return 0, 0, err
			}
			ops, count = ops+o, count+c
		}
		return ops, count, nil
	}
	t.spent = func() (keybrake.Micros, keybrake.Micros, error) {
		var s struct {
			Spent    keybrake.Micros `json:"spent_usd"`
			Reserved keybrake.Micros `json:"reserved_usd"`
		}
		err := getJSON("http://"+addrs[0]+"/vault/runs/"+label, adminToken, &s)
		return s.Spent, s.Reserved, err
	}
	return t, nil
}

// load runs wrk -t1 against each address at once, the connections split
// between them, every request a POST /v1/payment_intents with a form body
// and no Idempotency-Key, the keys taken in turn. Several addresses are
// summed: calls/s added, p50 and p99 the worst of them.
func (r *runner) load(addrs, keys []string, d time.Duration, cpu cpuMeter) (result, error) {
	script := filepath.Join(r.cfg.dir, fmt.Sprintf("load-%d.lua", len(keys)))
	if err := os.WriteFile(script, []byte(luaScript(keys)), 0o600); err != nil {
		return result{}, err
	}
	results := make([]result, len(addrs))
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		conns := r.cfg.conns / len(addrs)
		if i < r.cfg.conns%len(addrs) {
			conns++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = wrk(a, script, conns, d)
		}()
	}
	cpu0 := cpu.read()
	wg.Wait()
	var sum result
	sum.cpu = cpu.read() - cpu0
	for i, res := range results {
		if errs[i] != nil {
			return result{}, errs[i]
		}
		sum.rps += res.rps
		sum.p50, sum.p99 = max(sum.p50, res.p50), max(sum.p99, res.p99)
		sum.non2xx += res.non2xx
		sum.errors += res.errors
		sum.requests += res.requests
	}
	return sum, nil
}

// luaScript is the wrk script: one prepared request per key, taken in
// turn (with one key, wrk's own fast path: no request function).
func luaScript(keys []string) string {
	var b strings.Builder
	b.WriteString("wrk.method = \"POST\"\nwrk.body = \"" + benchBody + "\"\n")
	b.WriteString("wrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\n")
	if len(keys) == 1 {
		fmt.Fprintf(&b, "wrk.headers[\"Authorization\"] = \"Bearer %s\"\n", keys[0])
		return b.String()
	}
	// wrk.format replaces wrk.headers with the table it is given, and
	// wrk.host is known only once the thread runs: the requests are built
	// on the first call, each with every header.
	b.WriteString("local keys = {\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "  %q,\n", k)
	}
	b.WriteString("}\nlocal reqs = {}\nlocal i = 0\nrequest = function()\n")
	b.WriteString("  if #reqs == 0 then\n    for _, k in ipairs(keys) do\n")
	b.WriteString("      table.insert(reqs, wrk.format(\"POST\", \"/v1/payment_intents\", {[\"Host\"] = wrk.host, [\"Content-Type\"] = \"application/x-www-form-urlencoded\", [\"Authorization\"] = \"Bearer \" .. k}, \"" + benchBody + "\"))\n")
	b.WriteString("    end\n  end\n  i = i % #reqs + 1\n  return reqs[i]\nend\n")
	return b.String()
}

var (
	reRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reReqs    = regexp.MustCompile(`(\d+) requests in`)
	reNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	reSockErr = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reLatency = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
)

func wrk(addr, script string, conns int, d time.Duration) (result, error) {
	secs := max(1, int(math.Round(d.Seconds())))
	cmd := exec.Command("wrk", "-t1", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(secs)+"s", "--latency", "--timeout", "10s",
		"-s", script, "http://"+addr+"/v1/payment_intents")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	var res result
	m := reRPS.FindSubmatch(out)
	if m == nil {
		return result{}, fmt.Errorf("wrk output without Requests/sec: %s", out)
	}
	res.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	if m := reReqs.FindSubmatch(out); m != nil {
		res.requests, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	if m := reNon2xx.FindSubmatch(out); m != nil {
		res.non2xx, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	if m := reSockErr.FindSubmatch(out); m != nil {
		for _, g := range m[1:] {
			n, _ := strconv.ParseInt(string(g), 10, 64)
			res.errors += n
		}
	}
	for _, m := range reLatency.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(m[2]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(m[3])]
		if string(m[1]) == "50" {
			res.p50 = time.Duration(v * float64(unit))
		} else {
			res.p99 = time.Duration(v * float64(unit))
		}
	}
	return res, nil
}

func printTable(w io.Writer, rows []row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "| setup\t| calls/s\t| p50\t| p99\t| ratio to plain proxy\t| CPU per call\t| CPU ratio\t| ops per batch\t| spend check\t|")
	fmt.Fprintln(tw, "|---\t|---:\t|---:\t|---:\t|---:\t|---:\t|---:\t|---:\t|---\t|")
	for _, rw := range rows {
		if rw.res.rps == 0 {
			fmt.Fprintf(tw, "| %s\t| \t| \t| \t| \t| \t| \t| \t| %s\t|\n", rw.name, rw.check)
			continue
		}
		ratio := ""
		if rw.ratio > 0 {
			ratio = fmt.Sprintf("%.2f×", rw.ratio)
		}
		cpu, cpuRatio := "", ""
		if c := rw.res.cpuPerCall(); c > 0 {
			cpu = fmt.Sprintf("%d µs", c.Microseconds())
		}
		if rw.cpuRatio > 0 {
			cpuRatio = fmt.Sprintf("%.2f×", rw.cpuRatio)
		}
		perBatch := ""
		if rw.perBatch > 0 {
			perBatch = fmt.Sprintf("%.1f", rw.perBatch)
		}
		fmt.Fprintf(tw, "| %s\t| %s\t| %s\t| %s\t| %s\t| %s\t| %s\t| %s\t| %s\t|\n", rw.name, rate(rw.res.rps), ms(rw.res.p50), ms(rw.res.p99), ratio, cpu, cpuRatio, perBatch, rw.check)
	}
	tw.Flush()
}

func rate(rps float64) string {
	if rps >= 10000 {
		return fmt.Sprintf("%.1fk", rps/1000)
	}
	return strconv.Itoa(int(math.Round(rps)))
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

// spawn starts a child that listens on 127.0.0.1:0 and waits until it
// answers, returning its address. Its stderr goes to a log file in the
// working directory (Keybrake's one JSON line per request included: the
// log is part of the path measured).
func (r *runner) spawn(name, bin string, args, env []string) (string, error) {
	// The child picks its own port: find it from a free one we choose.
	port, err := freePort()
	if err != nil {
		return "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for i, a := range args {
		if a == "127.0.0.1:0" {
			args[i] = addr
		}
	}
	logf, err := os.Create(filepath.Join(r.cfg.dir, name+".log"))
	if err != nil {
		return "", err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = r.cfg.dir
	if err := cmd.Start(); err != nil {
		logf.Close()
		return "", fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }() //nolint:errcheck // its exit is seen through done
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr, nil
		}
		select {
		case <-p.done:
			deadline = time.Time{}
		default:
		}
	}
	b, _ := os.ReadFile(logf.Name())
	return "", fmt.Errorf("%s did not start listening on %s: %s", name, addr, lastLines(b, 5))
}

// meter measures the CPU of the children of these names.
func (r *runner) meter(names ...string) cpuMeter {
	r.mu.Lock()
	defer r.mu.Unlock()
	var m cpuMeter
	for _, p := range r.procs {
		for _, n := range names {
			if p.name == n {
				m.pids = append(m.pids, p.cmd.Process.Pid)
			}
		}
	}
	return m
}

// proc is a child process of the run, by the name stop knows it by.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// stop ends a child by name: SIGINT (a graceful drain for keybrake), then
// kill after 10s.
func (r *runner) stop(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, p := range r.procs {
		if p.name != name {
			continue
		}
		p.cmd.Process.Signal(os.Interrupt) //nolint:errcheck // it may have exited
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill() //nolint:errcheck
			<-p.done
		}
		r.procs = append(r.procs[:i], r.procs[i+1:]...)
		return
	}
}

func (r *runner) stopAll() {
	r.mu.Lock()
	var names []string
	for _, p := range r.procs {
		names = append(names, p.name)
	}
	r.mu.Unlock()
	for _, n := range names {
		r.stop(n)
	}
}

func getJSON(u, token string, v any) error {
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != 200 {
		return fmt.Errorf("GET %s: %d %s", u, res.StatusCode, b)
	}
	return json.Unmarshal(b, v)
}

func lastLines(b []byte, n int) string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
