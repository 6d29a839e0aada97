package sqlstore

import (
	"context"
	"database/sql"
	"time"

	"github.com/keybrake/keybrake"
)

// Gauges reads the store-wide gauges: the pending calls' reservations (an
// index range on outcome) and the keys neither revoked nor expired (an
// index range on expires_at).
func (s *Store) Gauges(ctx context.Context) (*keybrake.Gauges, error) {
	g := &keybrake.Gauges{Reserved: map[string]keybrake.Micros{}}
	err := s.read(ctx, "gauges", func(q Querier, now time.Time) error {
		if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM keys WHERE expires_at > $1 AND revoked_at IS NULL`, micros(now)).
			Scan(&g.ActiveKeys); err != nil {
			return err
		}
		return s.readRows(ctx, "gauges", `SELECT vendor, CAST(COALESCE(SUM(estimated), 0) AS BIGINT) FROM calls
			WHERE outcome = $1 GROUP BY vendor`, []any{string(keybrake.OutcomePending)}, func(rows *sql.Rows) error {
			var vendor string
			var sum int64
			err := rows.Scan(&vendor, &sum)
			g.Reserved[vendor] = keybrake.Micros(sum)
			return err
		})
	})
	return g, err
}
