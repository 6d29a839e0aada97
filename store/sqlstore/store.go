// Package sqlstore is Keybrake's ledger written once in SQL and run on two
// engines: SQLite (the embedded default) and PostgreSQL (shared by replicas).
// The engines differ only in what Dialect captures: where "now" comes from,
// how a key row is locked, and how failures are classified. Every decision
// (status, expiry, caps, reservation, idempotency claim, audit row) is one
// transaction, so caps and revokes hold across goroutines, processes and
// replicas.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/keybrake/keybrake"
)

// Dialect is what differs between engines.
type Dialect struct {
	Name string
	// Now reads the store's clock inside a transaction. SQLite, owned by one
	// process, uses that process's clock; PostgreSQL uses the database's, so
	// replicas agree on expiry and on the calendar day.
	Now func(ctx context.Context, q Querier) (time.Time, error)
	// LockKey is appended to the SELECT of a key row inside a decision
	// (" FOR UPDATE" on PostgreSQL; SQLite's BEGIN IMMEDIATE already
	// serialises writers).
	LockKey string
	// Unavailable reports whether err means the store cannot be used right
	// now (as opposed to a bug or bad input). Nil treats every error so.
	Unavailable func(err error) bool
	// Writable, when set, tells Ping whether a transaction could write (a
	// PostgreSQL standby or a read-only database answers reads but refuses
	// every decision).
	Writable func(ctx context.Context, q Querier) error
	// CannotWrite, when set, reports whether a failed write means the store
	// cannot commit at all (disk full, I/O error, read-only) rather than
	// contention; Ping fails for FailedWriteWindow after one.
	CannotWrite func(err error) bool
	// ClaimInstance, when set, makes the caller the only live holder of a
	// replica name until release (PostgreSQL: a session advisory lock and a
	// heartbeat lease, see store/postgres/instance.go). SQLite needs none:
	// one process owns the file.
	ClaimInstance func(ctx context.Context, db *sql.DB, instance string) (Claim, error)

	// StrPos names the SQL function (haystack, needle) → 1-based position
	// of needle, 0 if absent: instr on SQLite, strpos on PostgreSQL.
	StrPos string
	// SkipLocked is appended to the SELECT that claims outbox rows
	// (" FOR UPDATE SKIP LOCKED" on PostgreSQL, so replicas claim different
	// rows without waiting on each other; SQLite serialises writers).
	SkipLocked string
	// Prepare keeps the ledger's statements prepared (see stmtCache), for a
	// driver that parses every unprepared statement again (modernc SQLite;
	// pgx already caches its prepared statements).
	Prepare bool
	// DeadlineBetweenOps: a batch's statements run without its deadline,
	// which the batch checks before each op and before its commit instead.
	// For a driver that watches every cancellable statement with a
	// goroutine of its own (modernc SQLite: a goroutine, a channel and two
	// progress-handler calls per statement), on an engine whose statements
	// in a batch are short and local. PostgreSQL keeps the deadline on
	// every statement: there it is what ends a wait on a database that
	// stopped answering.
	DeadlineBetweenOps bool
	// Arrays: the driver binds Go slices as SQL arrays (= ANY($1)), so a
	// batch's "these keys" is one statement text, not one per batch size.
	Arrays bool
}

// Querier is what both *sql.DB and *sql.Tx provide.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Store is the ledger on one SQL engine.
type Store struct {
	w, r     *sql.DB // writer and reader pools (the same pool on PostgreSQL)
	dialect  Dialect
	closers  []func() error
	health   health
	claim    claimSlot // the replica name this store holds, if any
	batch    *batcher  // group commit of Decide and Settle; nil: one transaction each
	stmts    stmtCache
	ids      idPool                     // audit row ids drawn ahead (Dialect.Arrays)
	hooks    atomic.Pointer[batchHooks] // tests only
	observer atomic.Pointer[func(ops int, took time.Duration, err error)]
}

// New wraps open pools. writer may be the same *sql.DB as reader. Decide
// and Settle are group-committed in batches of up to DefaultBatchSize (see
// batch.go; SetBatchSize changes it).
func New(writer, reader *sql.DB, d Dialect) *Store {
	s := &Store{w: writer, r: reader, dialect: d, health: health{name: keybrake.NewID("hb_")}}
	s.stmts.db, s.stmts.enabled = writer, d.Prepare
	s.SetBatchSize(DefaultBatchSize)
	return s
}

// OnClose registers cleanup run by Close after the pools are closed.
func (s *Store) OnClose(f func() error) { s.closers = append(s.closers, f) }

// Close closes the pools.
func (s *Store) Close() error {
	if s.batch != nil {
		s.batch.stop()
	}
	s.stmts.close()
	s.dropHeartbeat()
	errs := []error{s.w.Close()}
	if s.r != s.w {
		errs = append(errs, s.r.Close())
	}
	for _, f := range s.closers {
		errs = append(errs, f())
	}
	return errors.Join(errs...)
}

// DB returns the writer pool (for tests and migrations).
func (s *Store) DB() *sql.DB { return s.w }

// Now is the store's clock.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	t, err := s.dialect.Now(ctx, s.r)
	if err != nil {
		return time.Time{}, s.wrap("read clock", err)
	}
	return t, nil
}

// wrap classifies an engine error: anything that is not "not found" or a
// domain error means the store is unavailable, and the proxy fails closed.
func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var ke *keybrake.Error
	if errors.Is(err, keybrake.ErrNotFound) || errors.As(err, &ke) {
		return err
	}
	if s.dialect.Unavailable == nil || s.dialect.Unavailable(err) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w: %w", op, keybrake.ErrStoreUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// tx runs f in one transaction on the writer pool.
func (s *Store) tx(ctx context.Context, op string, f func(tx *sql.Tx, now time.Time) error) (err error) {
	defer func() { s.noteWrite(err) }()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.wrap(op, err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	now, err := s.dialect.Now(ctx, tx)
	if err != nil {
		return s.wrap(op, err)
	}
	if err := f(tx, now); err != nil {
		return s.wrap(op, err)
	}
	if err := tx.Commit(); err != nil {
		return s.wrap(op+": commit", err)
	}
	return nil
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

// Day is the UTC calendar day a daily cap counts against.
func Day(t time.Time) string { return t.UTC().Format("2006-01-02") }
