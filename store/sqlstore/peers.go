package sqlstore

import (
	"context"
	"database/sql"
	"sync"
	"time"
)

// Peer is a replica that serves ledger operations for the keys it owns
// (package peer), as its last beat announced it.
type Peer struct {
	ID  string
	URL string
}

// peerSweepAge is how old a peer row must be before any beat deletes it: a
// process killed without withdrawing leaves its row behind.
const peerSweepAge = time.Hour

// Peers is the session peer beats go through: a connection of their own,
// held out of the pool, so that a beat does not queue behind the calls of
// a loaded replica. Otherwise the others would drop the replica from their
// lists, and move its keys, exactly when routing matters most.
type Peers struct {
	s    *Store
	mu   sync.Mutex
	conn *sql.Conn // nil until the first beat, and after a failure
}

// Peers returns the store's peer beat session; Close it at shutdown.
func (s *Store) Peers() *Peers { return &Peers{s: s} }

// Beat announces that the peer id serves at url now, on the store's clock
// (the database's, on PostgreSQL, so replicas' clocks need not agree), and
// returns every peer seen within fresh, this one included, in id order.
// One transaction: the list a replica routes by always includes itself.
func (p *Peers) Beat(ctx context.Context, id, url string, fresh time.Duration) ([]Peer, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil {
		c, err := p.s.w.Conn(ctx)
		if err != nil {
			return nil, p.s.wrap("peer beat", err)
		}
		p.conn = c
	}
	peers, err := p.beat(ctx, id, url, fresh)
	if err != nil {
		p.conn.Close() //nolint:errcheck // a new session is taken at the next beat
		p.conn = nil
		return nil, p.s.wrap("peer beat", err)
	}
	return peers, nil
}

func (p *Peers) beat(ctx context.Context, id, url string, fresh time.Duration) ([]Peer, error) {
	tx, err := p.conn.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	now, err := p.s.dialect.Now(ctx, tx)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO peers (id, url, seen_at) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET url = excluded.url, seen_at = excluded.seen_at`, id, url, micros(now)); err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM peers WHERE seen_at < $1`, micros(now.Add(-peerSweepAge))); err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, url FROM peers WHERE seen_at >= $1 ORDER BY id`, micros(now.Add(-fresh)))
	if err != nil {
		return nil, err
	}
	var peers []Peer
	for rows.Next() {
		var pr Peer
		if err := rows.Scan(&pr.ID, &pr.URL); err != nil {
			rows.Close()
			return nil, err
		}
		peers = append(peers, pr)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return peers, tx.Commit()
}

// Withdraw deletes the peer's row and gives the session back, at
// shutdown, so the others stop routing to this replica at their next
// beat. A failure is not one: the row ages out.
func (p *Peers) Withdraw(ctx context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		p.conn.Close() //nolint:errcheck // back to the pool
		p.conn = nil
	}
	_, err := p.s.w.ExecContext(ctx, `DELETE FROM peers WHERE id = $1`, id)
	return p.s.wrap("withdraw peer", err)
}

// Lease is the end of the lease under which this process may decide for
// its instance name (ClaimInstance), or why it may not now; zero and nil
// when it holds no name. A replica that has another decide for it (package
// peer) bounds that decision by its own lease too: the calls are recorded
// under its name.
func (s *Store) Lease() (time.Time, error) {
	if err := s.held(); err != nil {
		return time.Time{}, err
	}
	c := s.claim.p.Load()
	if c == nil {
		return time.Time{}, nil
	}
	return (*c).Lease()
}
