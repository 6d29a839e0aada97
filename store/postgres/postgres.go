// Package postgres opens Keybrake's shared store: the ledger of
// store/sqlstore on PostgreSQL through pgx, for several replicas behind a
// load balancer. Every decision locks its key row (SELECT … FOR UPDATE), so
// caps hold to the micro-dollar across replicas; the database's clock
// decides expiry and the calendar day, so replicas with drifting clocks
// still agree; and every statement is bounded (connect, lock and statement
// timeouts, plus a client-side backstop), so a database that hangs makes
// the proxy answer 503 store_unavailable instead of holding requests open.
package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/keybrake/keybrake/store/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options tune the store. The zero value is the production setting; all but
// QueryTimeout can also be set in the URL, which wins (see each field).
type Options struct {
	// MaxConns bounds the replica's connection pool (URL: pool_max_conns).
	// Default 16. Requests beyond it queue in the replica; on one hot key
	// they would queue on the key's row lock anyway.
	MaxConns int
	// ConnectTimeout bounds one connection attempt (URL: connect_timeout,
	// in seconds). Default 5s.
	ConnectTimeout time.Duration
	// LockTimeout bounds the wait for a key's row lock (URL: lock_timeout).
	// Default 5s: past it the call fails closed with store_unavailable.
	LockTimeout time.Duration
	// StatementTimeout bounds one statement on the server (URL:
	// statement_timeout). Default 10s.
	StatementTimeout time.Duration
	// IdleInTransactionTimeout ends a session that holds a transaction open
	// without sending anything (URL: idle_in_transaction_session_timeout):
	// a replica that froze or lost its network mid-decision releases the
	// key's row lock after it. Default 15s.
	IdleInTransactionTimeout time.Duration
	// QueryTimeout is the client-side backstop on every statement, for a
	// database host that stops answering altogether (server-side timeouts
	// cannot fire then). Default StatementTimeout + 5s.
	QueryTimeout time.Duration
	// Logger receives what the store does on its own: losing and taking
	// back a replica name (ClaimInstance). Default: discarded.
	Logger *slog.Logger
	// BatchSize bounds the Decide and Settle calls group-committed in one
	// transaction (default sqlstore.DefaultBatchSize); 1 turns batching off,
	// one transaction per call (for measuring what it buys).
	BatchSize int

	timings timings // of the instance-name protocol (tests shorten them)
}

// Open connects to the PostgreSQL database at url (postgres://… or
// postgresql://…), applies the migrations and returns the store.
//
// Tables live in the first schema of the connection's search_path (URL
// parameter search_path=…; default "public"), so several Keybrake
// deployments, or tests, can share one database. Migrations hold a
// PostgreSQL advisory lock scoped to that database and schema: replicas that
// start at once apply them once, the others wait and find them done.
//
// Besides the Options fields, any libpq URL parameter works (sslmode,
// application_name, …); lock_timeout, statement_timeout and
// idle_in_transaction_session_timeout given in the URL win over Options.
func Open(ctx context.Context, rawURL string, opt Options) (*sqlstore.Store, error) {
	cfg, err := parseConfig(rawURL, &opt)
	if err != nil {
		return nil, err
	}
	db := stdlib.OpenDB(*cfg, stdlib.OptionShouldPing(boundedPing(min(opt.QueryTimeout, 5*time.Second))))
	db.SetMaxOpenConns(opt.MaxConns)
	db.SetMaxIdleConns(opt.MaxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	db.SetConnMaxLifetime(30 * time.Minute)

	if err := migrate(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	d := Dialect()
	d.ClaimInstance = claimer(cfg, opt.Logger, opt.timings)
	s := sqlstore.New(db, db, d)
	if opt.BatchSize != 0 {
		s.SetBatchSize(opt.BatchSize)
	}
	return s, nil
}

// Dialect is the PostgreSQL flavour of the shared ledger.
func Dialect() sqlstore.Dialect {
	return sqlstore.Dialect{
		Name:        "postgres",
		Now:         now,
		LockKey:     " FOR UPDATE",
		Unavailable: Unavailable,
		Writable:    writable,
		CannotWrite: cannotWrite,
		StrPos:      "strpos",
		SkipLocked:  " FOR UPDATE SKIP LOCKED",
		Arrays:      true,
		// ClaimInstance is set by Open: its sessions are made from the URL.
	}
}

// now reads the database's clock. Every replica asks the same server, so a
// key expires at the same instant everywhere and the daily cap rolls over at
// one UTC midnight, however far a replica's own clock has drifted.
// clock_timestamp() is the time of the read, not of the transaction's start.
func now(ctx context.Context, q sqlstore.Querier) (time.Time, error) {
	var t time.Time
	if err := q.QueryRowContext(ctx, `SELECT clock_timestamp()`).Scan(&t); err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

// parseConfig reads the URL, applies the defaults and the session settings
// that make a hung or overloaded database fail closed.
func parseConfig(rawURL string, opt *Options) (*pgx.ConnConfig, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, errors.New("postgres: the database URL must look like postgres://user@host:5432/dbname?sslmode=disable")
	}
	q := u.Query()
	if v := q.Get("pool_max_conns"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("postgres: pool_max_conns=%q: want a positive integer", v)
		}
		opt.MaxConns = n
	}
	q.Del("pool_max_conns") // ours, not a server setting
	u.RawQuery = q.Encode()

	if opt.MaxConns <= 0 {
		opt.MaxConns = 16
	}
	if opt.ConnectTimeout <= 0 {
		opt.ConnectTimeout = 5 * time.Second
	}
	if opt.LockTimeout <= 0 {
		opt.LockTimeout = 5 * time.Second
	}
	if opt.StatementTimeout <= 0 {
		opt.StatementTimeout = 10 * time.Second
	}
	if opt.IdleInTransactionTimeout <= 0 {
		opt.IdleInTransactionTimeout = 15 * time.Second
	}
	if opt.QueryTimeout <= 0 {
		opt.QueryTimeout = opt.StatementTimeout + 5*time.Second
	}
	if opt.Logger == nil {
		opt.Logger = discard
	}
	if opt.timings == (timings{}) {
		opt.timings = defaultTimings
	}

	cfg, err := pgx.ParseConfig(u.String())
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if !q.Has("connect_timeout") {
		cfg.ConnectTimeout = opt.ConnectTimeout
	}
	// Keepalives notice a vanished database host within about 30s even
	// while a connection sits idle in the pool.
	dialer := &net.Dialer{
		Timeout:         cfg.ConnectTimeout,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3},
	}
	cfg.DialFunc = dialer.DialContext
	for name, d := range map[string]time.Duration{
		"lock_timeout":                        opt.LockTimeout,
		"statement_timeout":                   opt.StatementTimeout,
		"idle_in_transaction_session_timeout": opt.IdleInTransactionTimeout,
	} {
		if _, set := cfg.RuntimeParams[name]; !set {
			cfg.RuntimeParams[name] = strconv.FormatInt(d.Milliseconds(), 10)
		}
	}
	// Plan every statement for its own arguments. The ledger's statements
	// take arrays (= ANY($1), unnest), and pgx keeps them prepared, so
	// after five runs PostgreSQL may settle on a generic plan made for the
	// table as it was then: on a new database, a sequential scan of calls.
	// Measured on a fresh bench database, every batch then scanned the whole
	// calls table while holding the key's lock (22M rows read in 15 s, half
	// the backend's CPU). Replanning a short statement costs far less.
	if _, set := cfg.RuntimeParams["plan_cache_mode"]; !set {
		cfg.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	}
	if _, set := cfg.RuntimeParams["application_name"]; !set {
		cfg.RuntimeParams["application_name"] = "keybrake"
	}
	cfg.Tracer = queryDeadline(opt.QueryTimeout)
	return cfg, nil
}

// queryDeadline is a pgx tracer used for one thing: giving every statement
// a client-side deadline when its context has none, so a request never
// waits on a database host that stopped answering (network partition, a
// frozen server) longer than the backstop. pgx runs the statement with the
// context TraceQueryStart returns.
type queryDeadline time.Duration

type cancelKey struct{}

func (d queryDeadline) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	if _, ok := ctx.Deadline(); ok {
		return ctx
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(d))
	return context.WithValue(ctx, cancelKey{}, cancel)
}

func (d queryDeadline) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if cancel, ok := ctx.Value(cancelKey{}).(context.CancelFunc); ok {
		cancel()
	}
}

// boundedPing replaces database/sql's liveness ping of a connection that sat
// idle for over a second, which pgx sends without a deadline (the tracer does
// not see it): a database host that stopped answering would hold the request
// there. It pings with a deadline; on failure the connection is closed, and
// answering true lets stdlib's own ping fail at once and discard it, so
// database/sql moves on to another connection.
func boundedPing(limit time.Duration) func(context.Context, stdlib.ShouldPingParams) bool {
	return func(ctx context.Context, p stdlib.ShouldPingParams) bool {
		if p.IdleDuration <= time.Second {
			return false
		}
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, limit)
			defer cancel()
		}
		// A failed ping leaves the connection closed (pgconn closes it on a
		// deadline or a network error).
		return p.Conn.PgConn().Ping(ctx) != nil
	}
}

func migrate(ctx context.Context, db *sql.DB) error {
	// Scope the migration lock to this database and schema, so separate
	// deployments (or test schemas) in one cluster do not wait on each other.
	var database string
	var schema sql.NullString
	if err := db.QueryRowContext(ctx, `SELECT current_database(), current_schema()`).Scan(&database, &schema); err != nil {
		return fmt.Errorf("postgres: connect: %w", err)
	}
	if !schema.Valid {
		return errors.New("postgres: no schema of the search_path exists; create it first (CREATE SCHEMA …) or fix search_path in the URL")
	}
	h := fnv.New64a()
	io.WriteString(h, "keybrake migrations\x00"+database+"\x00"+schema.String) //nolint:errcheck // hashes never fail
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(int64(h.Sum64()>>1)),
		lock.WithLockTimeout(1, 300), // poll every second, up to 5 minutes
	)
	if err != nil {
		return fmt.Errorf("postgres: migration lock: %w", err)
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, sub, goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("postgres: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("postgres: migrate schema %s: %w", schema.String, err)
	}
	return nil
}

// Unavailable reports whether err means the database cannot serve Keybrake
// right now — unreachable, shutting down, read-only, out of resources, a
// lock or statement timeout, a transaction the server aborted to break a
// deadlock — as opposed to a constraint violation or a bad query, which are
// bugs and must not read as an outage. Either way nothing is forwarded.
func Unavailable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		class := pe.Code[:2]
		switch {
		case class == "08", // connection exception
			class == "53",      // insufficient resources: disk full, out of memory, too many connections
			class == "57",      // operator intervention: admin/crash shutdown, cannot connect now, query canceled (statement_timeout)
			class == "58",      // system error: I/O
			class == "40",      // transaction rollback: serialization failure, deadlock detected
			pe.Code == "55P03", // lock_not_available: lock_timeout
			pe.Code == "25006", // read_only_sql_transaction: a standby, or default_transaction_read_only
			pe.Code == "25P03": // idle_in_transaction_session_timeout
			return true
		}
		return false
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	switch {
	case errors.As(err, &ce), errors.As(err, &ne),
		errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone),
		errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		pgconn.Timeout(err), pgconn.SafeToRetry(err):
		return true
	}
	// pgx reports a connection that died mid-statement with plain errors
	// ("conn closed", "unexpected EOF"); treat anything that mentions the
	// connection as an outage rather than a bug.
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "connection")
}

// writable refuses a database that would refuse writes: a hot standby, or a
// database or session set to default_transaction_read_only.
func writable(ctx context.Context, q sqlstore.Querier) error {
	var ro string
	if err := q.QueryRowContext(ctx, "SHOW transaction_read_only").Scan(&ro); err != nil {
		return err
	}
	if ro == "on" {
		return errors.New("the database is read-only")
	}
	return nil
}

// cannotWrite reports the errors after which no write can commit, whatever
// it is: a full disk, memory exhausted, an I/O error, a read-only
// database. Lock and statement timeouts, deadlocks and lost connections
// are not: the first three are contention on a key, and an unreachable
// database fails Ping by itself.
func cannotWrite(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch {
	case pe.Code == "53100", // disk_full
		pe.Code == "53200",  // out_of_memory
		pe.Code[:2] == "58", // system error: I/O
		pe.Code == "25006":  // read_only_sql_transaction
		return true
	}
	return false
}
