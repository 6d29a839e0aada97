package sqlstore

import (
	"context"
	"time"

	"github.com/keybrake/keybrake"
)

// ExportCalls hands every audit row matching f to each, newest first,
// reading one page of MaxPageSize rows at a time. The cursor walks down the
// ids, so rows written after the first page are not included, and a row
// settled meanwhile may show either state. Memory stays flat however long
// the log, and no statement runs long: PostgreSQL's statement_timeout would
// end one query streaming millions of rows, and on SQLite it would hold one
// read snapshot open. f.Limit and f.Cursor are ignored.
func (s *Store) ExportCalls(ctx context.Context, f keybrake.CallFilter, each func(*keybrake.Call) error) error {
	f.Limit, f.Cursor = keybrake.MaxPageSize, ""
	for {
		page, next, err := s.ListCalls(ctx, f)
		if err != nil {
			return err
		}
		for _, c := range page {
			if err := each(c); err != nil {
				return err
			}
		}
		if next == "" {
			return nil
		}
		f.Cursor = next
	}
}

// timeBounds returns the WHERE terms for Since <= at < Until; zero times
// leave that side open.
func timeBounds(since, until time.Time, arg func(any) string) []string {
	var out []string
	if !since.IsZero() {
		out = append(out, "at >= "+arg(micros(since)))
	}
	if !until.IsZero() {
		out = append(out, "at < "+arg(micros(until)))
	}
	return out
}
