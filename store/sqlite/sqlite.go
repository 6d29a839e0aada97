// Package sqlite opens Keybrake's embedded default store: one SQLite file,
// through the pure-Go modernc.org/sqlite driver (no cgo, so `go install`
// works everywhere), in WAL mode with synchronous=FULL so a committed
// reservation survives kill -9 and power loss alike.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/keybrake/keybrake/store/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options tune the store. The zero value is the production setting.
type Options struct {
	// BusyTimeout is how long a writer waits for the database lock before
	// the call fails closed with store_unavailable. Default 5s.
	BusyTimeout time.Duration
	// Clock replaces the process clock (tests of expiry and day rollover).
	Clock func() time.Time
	// ReadOnly opens the file without the write lock, for inspection.
	ReadOnly bool
	// BatchSize bounds the Decide and Settle calls group-committed in one
	// transaction on the one writer connection (default
	// sqlstore.DefaultBatchSize); 1 turns batching off, one transaction per
	// call (for measuring what it buys).
	BatchSize int
}

// Open creates (if needed), migrates and opens the SQLite store at path. One
// process owns a database file at a time: a second `keybrake serve` on the
// same file is refused, which is what makes the restart recovery of pending
// calls safe.
func Open(ctx context.Context, path string, opt Options) (_ *sqlstore.Store, err error) {
	if path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	if opt.BusyTimeout <= 0 {
		opt.BusyTimeout = 5 * time.Second
	}
	created, err := checkPath(path)
	if err != nil {
		return nil, err
	}
	var unlock func() error
	if !opt.ReadOnly {
		if unlock, err = lockFile(path + ".lock"); err != nil {
			return nil, err
		}
		if created {
			// A first start that fails (a bad migration, a full disk)
			// leaves no half-made database or lock file behind.
			defer func() {
				if err != nil {
					removeNew(path)
				}
			}()
		}
	}
	q := url.Values{}
	for _, p := range []string{
		"journal_mode(WAL)",
		"synchronous(FULL)",
		"foreign_keys(ON)",
		// Savepoint sub-journals (one per op of a batch) and temporary
		// b-trees live in memory: they never need to survive a crash (the
		// WAL does), and on disk each cost a write() per page touched.
		"temp_store(MEMORY)",
		fmt.Sprintf("busy_timeout(%d)", opt.BusyTimeout.Milliseconds()),
	} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	dsn := "file:" + path + "?" + q.Encode()
	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, closeAll(err, unlock)
	}
	// One writer connection: SQLite has one write lock per file, and
	// queuing for it in Go is fairer and cheaper than spinning on
	// SQLITE_BUSY inside the driver.
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, closeAll(err, unlock)
	}
	r, err := sql.Open("sqlite", strings.Replace(dsn, "_txlock=immediate", "_txlock=deferred", 1))
	if err != nil {
		w.Close()
		return nil, closeAll(err, unlock)
	}
	r.SetMaxOpenConns(8)
	r.SetMaxIdleConns(8)

	clock := opt.Clock
	if clock == nil {
		clock = time.Now
	}
	s := sqlstore.New(w, r, sqlstore.Dialect{
		Name: "sqlite",
		Now: func(context.Context, sqlstore.Querier) (time.Time, error) {
			return clock().UTC(), nil
		},
		Unavailable: unavailable,
		StrPos:      "instr",
		CannotWrite: cannotWrite,
		Prepare:     true,
		// A batch's statements touch a few pages of one local file; its
		// deadline is checked between them (see Dialect).
		DeadlineBetweenOps: true,
	})
	if opt.BatchSize != 0 {
		s.SetBatchSize(opt.BatchSize)
	}
	if unlock != nil {
		s.OnClose(unlock)
	}
	return s, nil
}

func migrate(ctx context.Context, db *sql.DB) error {
	p, err := goose.NewProvider(goose.DialectSQLite3, db, mustSub(migrations, "migrations"))
	if err != nil {
		return fmt.Errorf("sqlite: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	return nil
}

// unavailable classifies engine errors that mean "cannot use the store now"
// (busy, locked, read-only, disk full, I/O) as opposed to constraint
// violations, which are bugs and must not read as an outage.
func unavailable(err error) bool {
	var se *msqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_MISMATCH, sqlite3.SQLITE_ERROR:
			return false
		}
	}
	return true
}

// cannotWrite reports the errors after which no write can commit: a full
// disk, an I/O error, a read-only or damaged file. SQLITE_BUSY and a
// decision's deadline are contention, not this.
func cannotWrite(err error) bool {
	var se *msqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY,
		sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CANTOPEN:
		return true
	}
	return false
}

func closeAll(err error, unlock func() error) error {
	if unlock != nil {
		return errors.Join(err, unlock())
	}
	return err
}
