package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"

	"github.com/keybrake/keybrake"
)

// FailedWriteWindow is how long a write that could not commit for want of
// the store itself (a full disk, an I/O error, a read-only database) keeps
// Ping failing. A load balancer polling /healthz then takes the replica
// out while real decisions fail, even when the heartbeat's own small write
// still fits; once writes commit again it comes back within the window.
const FailedWriteWindow = 10 * time.Second

// health is the store's memory of its last failed write.
type health struct {
	name string // this store's heartbeat row

	mu       sync.Mutex
	failedAt time.Time
	failure  error
	cleared  bool // stale heartbeat rows were deleted (once per process)
	wrote    bool // this store's row may exist
}

// noteWrite remembers a write transaction's failure if it means the store
// cannot commit at all. Contention (SQLite busy, a row lock past
// lock_timeout, a decision past its deadline) does not count: a hot key
// must not take the replica out of the load balancer.
func (s *Store) noteWrite(err error) {
	if err == nil || s.dialect.CannotWrite == nil || !s.dialect.CannotWrite(err) {
		return
	}
	s.health.mu.Lock()
	s.health.failedAt, s.health.failure = time.Now(), err
	s.health.mu.Unlock()
}

// recentFailure is the last write failure and how long ago it was, if it
// is within the window.
func (s *Store) recentFailure() (time.Duration, error) {
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	if s.health.failure == nil {
		return 0, nil
	}
	ago := time.Since(s.health.failedAt)
	if ago > FailedWriteWindow {
		return 0, nil
	}
	return ago, s.health.failure
}

// Ping checks that the store can take a decision right now: that no write
// failed for want of the store itself in the last FailedWriteWindow, that
// this replica holds its instance name (ClaimInstance), and that a write
// commits: it updates this store's heartbeat row. A store that answers
// reads but cannot commit is not healthy, since the proxy would refuse
// every call; rolling back an empty write transaction proves nothing on a
// full disk.
func (s *Store) Ping(ctx context.Context) error {
	if ago, err := s.recentFailure(); err != nil {
		return fmt.Errorf("ping: %w: a write could not commit %s ago: %w", keybrake.ErrStoreUnavailable, ago.Round(time.Millisecond), err)
	}
	if err := s.held(); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return s.tx(ctx, "ping", func(tx *sql.Tx, now time.Time) error {
		if s.dialect.Writable != nil {
			if err := s.dialect.Writable(ctx, tx); err != nil {
				return fmt.Errorf("%w: %w", keybrake.ErrStoreUnavailable, err)
			}
		}
		res, err := tx.ExecContext(ctx, `UPDATE heartbeats SET at = $1 WHERE name = $2`, micros(now), s.health.name)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n > 0 {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO heartbeats (name, at) VALUES ($1, $2)`, s.health.name, micros(now)); err != nil {
			return err
		}
		// A first heartbeat: clear the rows of processes that died without
		// deleting theirs (kill -9), once they are a day old.
		s.health.mu.Lock()
		clear := !s.health.cleared
		s.health.cleared, s.health.wrote = true, true
		s.health.mu.Unlock()
		if clear {
			_, err = tx.ExecContext(ctx, `DELETE FROM heartbeats WHERE at < $1`, micros(now.Add(-24*time.Hour)))
		}
		return err
	})
}

// dropHeartbeat deletes this store's heartbeat row at Close. A failure is
// not one: a start clears day-old rows.
func (s *Store) dropHeartbeat() {
	s.health.mu.Lock()
	wrote := s.health.wrote
	s.health.mu.Unlock()
	if !wrote {
		return // never pinged: no row, and no write to make (a read-only open)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.w.ExecContext(ctx, `DELETE FROM heartbeats WHERE name = $1`, s.health.name) //nolint:errcheck // see above
}
