// Package pgtest holds helpers for tests that need a PostgreSQL database:
// a private schema per test (so tests and packages share one database
// without seeing each other's rows), and a TCP forwarder that can cut every
// connection to the database and bring it back, to simulate an outage
// without stopping the shared server.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

// Schema creates a fresh schema kb_<random> in the database at baseURL,
// drops it (with everything in it) when the test ends, and returns the URL
// with search_path set to it, followed by pg_catalog. Naming pg_catalog
// explicitly puts it after the test schema, which lets a test shadow a
// built-in function such as clock_timestamp() (see ShiftClock).
func Schema(t testing.TB, baseURL string) (schemaURL, schema string) {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	schema = "kb_" + hex.EncodeToString(b)
	db := Admin(t, baseURL)
	if _, err := db.ExecContext(context.Background(), `CREATE SCHEMA `+schema); err != nil {
		t.Fatalf("create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		// Drop even while connections of a killed process linger.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return WithParams(t, baseURL, "search_path", schema+",pg_catalog"), schema
}

// Admin opens a small pool on baseURL for the test's own statements, closed
// when the test ends.
func Admin(t testing.TB, baseURL string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", baseURL)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(2)
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("PostgreSQL at %s: %v", redact(baseURL), err)
	}
	return db
}

// WithParams returns rawURL with query parameters set (name, value pairs).
func WithParams(t testing.TB, rawURL string, kv ...string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// WithHost returns rawURL pointed at another host:port.
func WithHost(t testing.TB, rawURL, hostport string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = hostport
	return u.String()
}

// ShiftClock makes clock_timestamp(), as seen through schema's search_path,
// run skew ahead of (or, negative, behind) the database server's real
// clock. It installs, once, a schema-local clock_timestamp() that adds the
// skew stored in a one-row table, so later shifts take effect on the next
// statement of every connection, including cached prepared statements.
// Call it once before the store under test first reads the clock.
func ShiftClock(t testing.TB, db *sql.DB, schema string, skew time.Duration) {
	t.Helper()
	ctx := context.Background()
	stmts := []string{
		`CREATE TABLE IF NOT EXISTS ` + schema + `.test_clock_skew (one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), skew INTERVAL NOT NULL)`,
		`CREATE OR REPLACE FUNCTION ` + schema + `.clock_timestamp() RETURNS timestamptz LANGUAGE sql VOLATILE AS
			$$ SELECT pg_catalog.clock_timestamp() + COALESCE((SELECT skew FROM ` + schema + `.test_clock_skew), interval '0') $$`,
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			t.Fatalf("install test clock: %v", err)
		}
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO `+schema+`.test_clock_skew (skew) VALUES (make_interval(secs => $1))
		ON CONFLICT (one) DO UPDATE SET skew = EXCLUDED.skew`, skew.Seconds()); err != nil {
		t.Fatalf("shift test clock: %v", err)
	}
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// Forwarder is a TCP proxy on 127.0.0.1 in front of the database. Cut closes
// every open connection and refuses new ones until Restore; the database
// itself keeps running for everyone else.
type Forwarder struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	cut    bool
	paused bool
	resume *sync.Cond
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// Forward starts a forwarder to target (host:port) and stops it when the
// test ends.
func Forward(t testing.TB, target string) *Forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Forwarder{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	f.resume = sync.NewCond(&f.mu)
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

// ForwardURL starts a forwarder to rawURL's host and returns the URL that
// goes through it.
func ForwardURL(t testing.TB, rawURL string) (*Forwarder, string) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	f := Forward(t, u.Host)
	return f, WithHost(t, rawURL, f.Addr())
}

// Addr is the forwarder's host:port.
func (f *Forwarder) Addr() string { return f.ln.Addr().String() }

// Cut closes every forwarded connection and refuses new ones (they are
// accepted and closed at once, as a database that went away would).
func (f *Forwarder) Cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut = true
	for c := range f.conns {
		c.Close()
	}
	f.resume.Broadcast()
}

// Restore forwards new connections again.
func (f *Forwarder) Restore() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut = false
}

// Pause keeps every connection open but stops moving bytes, as a network
// partition or a frozen database host would: nothing errors, nothing
// answers. Resume delivers what was held back.
func (f *Forwarder) Pause() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paused = true
}

// Resume ends a Pause.
func (f *Forwarder) Resume() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paused = false
	f.resume.Broadcast()
}

// Open is how many connections are being forwarded right now.
func (f *Forwarder) Open() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns) / 2
}

func (f *Forwarder) close() {
	f.ln.Close()
	f.Resume()
	f.Cut()
	f.wg.Wait()
}

func (f *Forwarder) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		cut := f.cut
		f.mu.Unlock()
		if cut {
			c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", f.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		f.mu.Lock()
		if f.cut { // cut while dialling
			f.mu.Unlock()
			c.Close()
			up.Close()
			continue
		}
		f.conns[c], f.conns[up] = struct{}{}, struct{}{}
		f.mu.Unlock()
		f.wg.Add(2)
		go f.pipe(c, up)
		go f.pipe(up, c)
	}
}

func (f *Forwarder) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.mu.Lock()
			for f.paused && !f.cut {
				f.resume.Wait()
			}
			f.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil { // either side, or Cut, closed the connection
			break
		}
	}
	dst.Close()
	src.Close()
	f.mu.Lock()
	delete(f.conns, dst)
	delete(f.conns, src)
	f.mu.Unlock()
}
