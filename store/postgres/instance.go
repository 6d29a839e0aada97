package postgres

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/store/sqlstore"
)

// A replica name (--instance-id) lets a restarted replica recover at once
// the calls its previous incarnation left pending: no live process can
// settle them. That is only safe if the previous incarnation is really
// gone. A session advisory lock alone does not prove it: PostgreSQL drops
// the lock when the session ends, and a session also ends when the
// database restarts or an operator runs pg_terminate_backend, while the
// replica lives on with calls at the vendor. So the name is held by two
// things, and a process needs both to decide:
//
//   - the advisory lock, on a session of its own outside the pool, which
//     makes one process at a time the claimant of the name;
//   - a lease: a row in the instances table whose holder is this process's
//     random token and whose beat it increments every second (beatEvery) —
//     through its own session while it holds the lock, and through a new
//     one while it cannot take the lock back, to show it is alive.
//
// A process decides only while its last beat, taken under the lock, is
// younger than leaseFor, and every decision gets the end of that lease as
// its deadline (sqlstore's admit): none commits later. When the session
// fails the replica opens a new one and takes the lock back at once if it
// is free. If another session holds it, the replica keeps beating, refused
// (503 store_unavailable, /healthz 503), until it can.
//
// A process that starts with a name takes the lock, then reads the row.
// Free, or released by a clean shutdown: it is the holder. Otherwise it
// watches the beat for watchFor (> leaseFor): if the beat moves, the holder
// is alive, and the newcomer gives the lock back and refuses to start; if
// it stands still, the holder's lease ran out long ago, so it made no
// decision since, and the newcomer takes the name (a compare-and-set on
// holder and beat) and recovers its calls. The old holder, if it was in
// fact alive but cut off from the database for that long, finds at its
// next beat that the row is no longer its own and decides nothing more
// (its settlements still land: they correct the recovered calls' spend).
const (
	beatEvery = time.Second
	leaseFor  = 7 * time.Second
	watchFor  = 10 * time.Second
)

// timings are the protocol's periods; tests shorten them.
type timings struct{ beat, lease, watch time.Duration }

var defaultTimings = timings{beat: beatEvery, lease: leaseFor, watch: watchFor}

const (
	lockSQL = `SELECT pg_try_advisory_lock(hashtextextended('keybrake-instance:' || current_schema() || ':' || $1, 0))`
	nowSQL  = `(extract(epoch FROM clock_timestamp()) * 1000000)::bigint`
	readSQL = `SELECT holder, beat FROM instances WHERE name = $1`
	newSQL  = `INSERT INTO instances (name, holder, beat, heartbeat_at) VALUES ($1, $2, 1, ` + nowSQL + `) ON CONFLICT (name) DO NOTHING`
	takeSQL = `UPDATE instances SET holder = $2, beat = beat + 1, heartbeat_at = ` + nowSQL + ` WHERE name = $1 AND holder = $3 AND beat = $4`
	beatSQL = `UPDATE instances SET beat = beat + 1, heartbeat_at = ` + nowSQL + ` WHERE name = $1 AND holder = $2`
	freeSQL = `UPDATE instances SET holder = '' WHERE name = $1 AND holder = $2`
)

// instance is one process's hold on a replica name: a sqlstore.Claim.
type instance struct {
	name, token string
	cfg         *pgx.ConnConfig
	log         *slog.Logger
	t           timings

	mu       sync.Mutex
	conn     *pgx.Conn // the session for the lock and the beats; nil when lost
	locked   bool      // conn holds the advisory lock
	until    time.Time // end of the lease; zero when not held
	why      error     // why the name is not held now
	fenced   bool      // another process took the name over: for good
	released bool

	check chan struct{}
	stop  chan struct{}
	done  chan struct{}
}

// claimer returns the dialect's ClaimInstance for connections made from cfg.
func claimer(cfg *pgx.ConnConfig, log *slog.Logger, t timings) func(context.Context, *sql.DB, string) (sqlstore.Claim, error) {
	return func(ctx context.Context, _ *sql.DB, name string) (sqlstore.Claim, error) {
		return claimInstance(ctx, cfg, log, t, name)
	}
}

func claimInstance(ctx context.Context, cfg *pgx.ConnConfig, log *slog.Logger, t timings, name string) (*instance, error) {
	b := make([]byte, 12)
	rand.Read(b) //nolint:errcheck // crypto/rand does not fail
	in := &instance{name: name, token: hex.EncodeToString(b), cfg: cfg, log: log, t: t,
		check: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var ok bool
	if err := conn.QueryRow(ctx, lockSQL, name).Scan(&ok); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	if !ok {
		conn.Close(context.Background())
		return nil, &keybrake.Error{Code: keybrake.CodeInvalidRequest, Message: fmt.Sprintf("instance id %q is held by another live keybrake serve on this database; give each replica its own --instance-id", name)}
	}
	start := time.Now()
	if err := in.take(ctx, conn); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	in.conn, in.locked, in.until = conn, true, start.Add(t.lease)
	go in.run()
	return in, nil
}

// take makes the name this process's, holding its lock: at once if it is
// new or was released; else only after watching its last holder's beat
// stand still for the watch period.
func (in *instance) take(ctx context.Context, conn *pgx.Conn) error {
	holder, beat, err := readRow(ctx, conn, in.name)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		tag, err := conn.Exec(ctx, newSQL, in.name, in.token)
		if err == nil && tag.RowsAffected() != 1 {
			err = fmt.Errorf("instance id %q was created by another process at the same moment", in.name)
		}
		return err
	case err != nil:
		return err
	case holder != "":
		in.log.Warn("instance id was not released by its last holder (killed, or alive without its database session): watching its heartbeat before taking it over",
			"instance", in.name, "watch", in.t.watch.String())
		for deadline := time.Now().Add(in.t.watch); time.Now().Before(deadline); {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(in.t.beat / 2):
			}
			h, b, err := readRow(ctx, conn, in.name)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if h != holder || b != beat {
				return in.alive()
			}
		}
	}
	tag, err := conn.Exec(ctx, takeSQL, in.name, in.token, holder, beat)
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		return in.alive()
	}
	if holder != "" {
		in.log.Warn("instance id taken over: its last holder did not heartbeat for the whole watch, so it is gone", "instance", in.name, "watch", in.t.watch.String())
	}
	return nil
}

func (in *instance) alive() error {
	return &keybrake.Error{Code: keybrake.CodeInvalidRequest, Message: fmt.Sprintf("instance id %q belongs to a live keybrake serve: it lost its database session (a restart?) but still heartbeats, and will take its name back; give each replica its own --instance-id", in.name)}
}

func readRow(ctx context.Context, conn *pgx.Conn, name string) (holder string, beat int64, err error) {
	err = conn.QueryRow(ctx, readSQL, name).Scan(&holder, &beat)
	return holder, beat, err
}

// run beats every period, or at once when asked to check, until Release.
func (in *instance) run() {
	defer close(in.done)
	tick := time.NewTicker(in.t.beat)
	defer tick.Stop()
	for {
		select {
		case <-in.stop:
			return
		case <-tick.C:
		case <-in.check:
		}
		in.verify()
	}
}

// verify beats, first taking back a lost session and lock if it can. A
// failure on the session it had is retried at once on a new one.
func (in *instance) verify() {
	for attempt := 0; attempt < 2; attempt++ {
		in.mu.Lock()
		conn, locked, fenced := in.conn, in.locked, in.fenced
		in.mu.Unlock()
		if fenced {
			return
		}
		hadSession := conn != nil
		ctx, cancel := context.WithTimeout(context.Background(), in.t.lease/2)
		start := time.Now()
		held, err := in.beat(ctx, &conn, &locked)
		cancel()
		in.mu.Lock()
		in.conn, in.locked = conn, locked
		in.mu.Unlock()
		switch {
		case err == nil && held:
			in.holds(start.Add(in.t.lease))
			return
		case err == nil:
			in.lose(errors.New("another database session holds its lock"))
			return
		case errors.Is(err, errTakenOver):
			in.fence()
			return
		default:
			in.lose(err)
			if !hadSession {
				return // a new session failed: wait for the next beat
			}
		}
	}
}

var errTakenOver = errors.New("taken over")

// beat opens a session if there is none, takes the lock if this session
// lacks it, and increments the beat if the row is still ours. It reports
// whether the name is held: lock and row both.
func (in *instance) beat(ctx context.Context, conn **pgx.Conn, locked *bool) (bool, error) {
	if *conn == nil {
		c, err := pgx.ConnectConfig(ctx, in.cfg)
		if err != nil {
			return false, err
		}
		*conn, *locked = c, false
	}
	drop := func(err error) (bool, error) {
		(*conn).Close(context.Background())
		*conn, *locked = nil, false
		return false, err
	}
	if !*locked {
		if err := (*conn).QueryRow(ctx, lockSQL, in.name).Scan(locked); err != nil {
			return drop(err)
		}
	}
	tag, err := (*conn).Exec(ctx, beatSQL, in.name, in.token)
	if err != nil {
		return drop(err)
	}
	if tag.RowsAffected() == 0 {
		return drop(errTakenOver)
	}
	return *locked, nil
}

func (in *instance) holds(until time.Time) {
	in.mu.Lock()
	was := !in.until.IsZero()
	in.until, in.why = until, nil
	in.mu.Unlock()
	if !was {
		in.log.Info("instance id held again: deciding", "instance", in.name)
	}
}

func (in *instance) lose(why error) {
	in.mu.Lock()
	was := !in.until.IsZero()
	in.until, in.why = time.Time{}, why
	in.mu.Unlock()
	if was {
		in.log.Warn("instance id not held: deciding nothing (503 store_unavailable) until it is held again", "instance", in.name, "err", why.Error())
	}
}

func (in *instance) fence() {
	in.mu.Lock()
	in.fenced, in.until = true, time.Time{}
	in.mu.Unlock()
	in.log.Error("instance id was taken over by another process after this one could not heartbeat for the whole lease: deciding nothing more; restart this process", "instance", in.name)
}

// Lease implements sqlstore.Claim.
func (in *instance) Lease() (time.Time, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	switch {
	case in.fenced:
		return time.Time{}, fmt.Errorf("instance id %q was taken over by another process; this one decides nothing more", in.name)
	case in.released:
		return time.Time{}, fmt.Errorf("instance id %q was released", in.name)
	case in.until.IsZero() || !time.Now().Before(in.until):
		why := in.why
		if why == nil {
			why = errors.New("no heartbeat within the lease")
		}
		return time.Time{}, fmt.Errorf("instance id %q is not held by this process: %w", in.name, why)
	}
	return in.until, nil
}

// Check implements sqlstore.Claim.
func (in *instance) Check() {
	select {
	case in.check <- struct{}{}:
	default:
	}
}

// Release implements sqlstore.Claim: it stops the beats, marks the row
// released (so the next process with this name starts at once) and ends
// the session, which drops the lock. After a database restart the old
// session is gone, and with it the lock: that is not an error, and neither
// is a database that cannot be reached to mark the row (the next process
// then watches the beat before taking the name).
func (in *instance) Release() error {
	in.mu.Lock()
	if in.released {
		in.mu.Unlock()
		return nil
	}
	in.released = true
	in.mu.Unlock()
	close(in.stop)
	<-in.done

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	in.mu.Lock()
	conn, fenced := in.conn, in.fenced
	in.conn = nil
	in.mu.Unlock()
	var err error
	if !fenced {
		if conn != nil {
			_, err = conn.Exec(ctx, freeSQL, in.name, in.token)
		}
		if conn == nil || err != nil {
			var c *pgx.Conn
			if c, err = pgx.ConnectConfig(ctx, in.cfg); err == nil {
				_, err = c.Exec(ctx, freeSQL, in.name, in.token)
				c.Close(ctx)
			}
		}
	}
	if conn != nil {
		// Unlock before closing: a closed session's locks go only when its
		// backend has exited, after Close returns, so a process taking the
		// name right after a clean release could still find it locked.
		conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`) //nolint:errcheck // closing drops it anyway
		conn.Close(ctx)
	}
	if err != nil {
		if Unavailable(err) {
			in.log.Warn("instance id not marked released: the database is unreachable; the next process with this name will watch its heartbeat before taking it", "instance", in.name, "err", err.Error())
			return nil
		}
		return fmt.Errorf("release instance id %q: %w", in.name, err)
	}
	return nil
}

// discard is the logger when Options has none.
var discard = slog.New(slog.NewTextHandler(io.Discard, nil))
