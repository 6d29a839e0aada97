package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Cluster is a private PostgreSQL server that one test owns, so that it
// can stop, restart or starve it without disturbing the shared server that
// other packages' tests use at the same time. It runs from the binaries
// under /usr/lib/postgresql/*/bin (or pg_ctl on PATH), as the postgres user
// when the test runs as root: initdb and postgres refuse to run as root.
type Cluster struct {
	bin   string   // directory holding initdb, pg_ctl, postgres
	runAs []string // command prefix that runs as the postgres user, or nil
	dir   string   // data directory
	port  int
	opts  []string // postgres -c settings
	logf  string
}

// ClusterOptions tune a private cluster.
type ClusterOptions struct {
	// Settings are extra postgres -c name=value settings.
	Settings []string
	// DataDir, when set, holds the cluster (it must be empty; a tmpfs
	// mount, for a disk that fills up). Default: a fresh directory in the
	// system's temporary directory.
	DataDir string
}

// StartCluster initialises and starts a private cluster on a free local
// port and stops it when the test ends. Without PostgreSQL's server
// binaries the test is skipped, or fails in CI (CI=1), where they must be
// installed.
func StartCluster(t testing.TB, o ClusterOptions) *Cluster {
	t.Helper()
	bin := serverBinaries()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin or on PATH in CI")
		}
		t.Skip("PostgreSQL server binaries (initdb, pg_ctl) not found; install the postgresql package to run this test")
	}
	c := &Cluster{bin: bin}
	var owner *user.User
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, and there is no postgres user to run a private cluster as: %v", err)
		}
		owner = u
		c.runAs = []string{"runuser", "-u", "postgres", "--"}
	}
	c.dir = o.DataDir
	if c.dir == "" {
		// Not t.TempDir: its parents are private to root, and the postgres
		// user must reach the data directory.
		d, err := os.MkdirTemp("", "keybrake-pg-")
		if err != nil {
			t.Fatal(err)
		}
		c.dir = d
		t.Cleanup(func() { os.RemoveAll(d) })
	}
	if owner != nil {
		uid, _ := strconv.Atoi(owner.Uid)
		gid, _ := strconv.Atoi(owner.Gid)
		if err := os.Chown(c.dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(c.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	c.port = freePort(t)
	c.logf = filepath.Join(c.dir, "server.log")
	c.opts = append([]string{
		"listen_addresses=127.0.0.1",
		"unix_socket_directories=" + c.dir,
		"fsync=off", // a test server: a clean restart keeps everything, a power cut is not drilled
		"max_connections=100",
		"shared_buffers=16MB",
	}, o.Settings...)

	c.run(t, "initdb", "-D", c.dir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	c.Start(t)
	t.Cleanup(func() {
		c.pgctl("stop", "-m", "immediate") //nolint:errcheck // may be stopped already
	})
	return c
}

// URL is a connection URL for the cluster's postgres database.
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// Dir is the data directory.
func (c *Cluster) Dir() string { return c.dir }

// Start starts the (stopped) server and waits until it accepts connections.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	if err := c.pgctl("start", "-w", "-t", "60", "-l", c.logf, "-o", c.serverArgs()); err != nil {
		t.Fatalf("pg_ctl start: %v\n%s", err, c.Log())
	}
}

// Stop stops the server in "fast" mode, as `pg_ctlcluster … stop` and a
// service restart do: every session is ended with SQLSTATE 57P01
// ("terminating connection due to administrator command").
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	if err := c.pgctl("stop", "-w", "-t", "60", "-m", "fast"); err != nil {
		t.Fatalf("pg_ctl stop: %v\n%s", err, c.Log())
	}
}

// Restart stops the server, keeps it down for down, and starts it again.
func (c *Cluster) Restart(t testing.TB, down time.Duration) {
	t.Helper()
	c.Stop(t)
	time.Sleep(down)
	c.Start(t)
}

// Log is the server's log so far.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(c.logf)
	return string(b)
}

func (c *Cluster) serverArgs() string {
	args := []string{"-p", strconv.Itoa(c.port)}
	for _, o := range c.opts {
		args = append(args, "-c", "'"+o+"'")
	}
	return strings.Join(args, " ")
}

func (c *Cluster) pgctl(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "pg_ctl"), append([]string{"-D", c.dir}, args...)...)
	if c.runAs != nil {
		cmd = exec.CommandContext(ctx, c.runAs[0], append(c.runAs[1:], cmd.Args...)...)
	}
	cmd.Dir = os.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

func (c *Cluster) run(t testing.TB, tool string, args ...string) {
	t.Helper()
	argv := append([]string{filepath.Join(c.bin, tool)}, args...)
	if c.runAs != nil {
		argv = append(append([]string{}, c.runAs...), argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = os.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", tool, err, out)
	}
}

// InstanceLockHolders selects (with $1 the schema, $2 the replica name)
// the backends holding the session advisory lock that store/postgres takes
// for a replica name (--instance-id). pg_locks shows a bigint key's high
// half in classid and its low half in objid, with objsubid 1.
const InstanceLockHolders = `SELECT l.pid FROM pg_locks l,
	(SELECT hashtextextended('keybrake-instance:' || $1 || ':' || $2, 0) AS k) h
	WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
	  AND l.classid::bigint = ((h.k >> 32) & 4294967295) AND l.objid::bigint = (h.k & 4294967295)`

// TakeInstanceLock takes that lock (with $1 the schema, $2 the name),
// waiting for it, as a second claimant of the name would.
const TakeInstanceLock = `SELECT pg_advisory_lock(hashtextextended('keybrake-instance:' || $1 || ':' || $2, 0))`

// StealInstanceLock ends the session holding a replica name's lock (with
// pg_terminate_backend) and takes the lock on conn before the replica can
// take it back, as a second claimant would. The lock is granted to conn
// as the ended session exits; should the replica win the race anyway, it
// tries again.
func StealInstanceLock(t testing.TB, db *sql.DB, conn *sql.Conn, schema, name string) {
	t.Helper()
	ctx := context.Background()
	if _, err := conn.ExecContext(ctx, `SET lock_timeout = '3s'`); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		if n := TerminateBackends(t, db, InstanceLockHolders, schema, name); n != 1 {
			t.Fatalf("ended %d sessions holding the lock of %q, want 1", n, name)
		}
		_, err := conn.ExecContext(ctx, TakeInstanceLock, schema, name)
		if err == nil {
			return
		}
		if attempt == 5 {
			t.Fatalf("take the lock of %q: %v", name, err)
		}
	}
}

// TerminateBackends ends with pg_terminate_backend every other session
// whose pid the query (with args) selects, and returns how many it ended.
// Scope the query to the test's own sessions (its schema, its advisory
// lock): other tests share the server.
func TerminateBackends(t testing.TB, db *sql.DB, pids string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM (`+pids+`) AS p (pid)
		WHERE pid <> pg_backend_pid()) AS t WHERE pg_terminate_backend`, args...).Scan(&n); err != nil {
		t.Fatalf("pg_terminate_backend: %v", err)
	}
	return n
}

// serverBinaries finds the directory of PostgreSQL's initdb and pg_ctl: the
// newest /usr/lib/postgresql/<version>/bin, else the one pg_ctl on PATH
// lives in.
func serverBinaries() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[i])), 64)
		vj, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[j])), 64)
		return vi > vj
	})
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "pg_ctl")) {
			return d
		}
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if p, err = filepath.EvalSymlinks(p); err == nil && isExec(filepath.Join(filepath.Dir(p), "initdb")) {
			return filepath.Dir(p)
		}
	}
	return ""
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
