package server

import (
	"context"
	"time"
)

// PruneAudit deletes the audit rows older than Config.AuditRetention that
// the ledger no longer needs, and returns how many went; with no retention
// configured it does nothing. The sweep runs it every ten minutes.
func (s *Server) PruneAudit(ctx context.Context) (int64, error) {
	if s.cfg.AuditRetention <= 0 {
		return 0, nil
	}
	return s.store.PruneCalls(ctx, s.cfg.AuditRetention)
}

func (s *Server) pruneAudit(ctx context.Context) {
	start := time.Now()
	n, err := s.PruneAudit(ctx)
	switch {
	case err != nil:
		s.log.Error("audit retention: prune failed", "err", err.Error(), "pruned", n)
	case n > 0:
		s.log.Info("audit retention: pruned old audit rows", "pruned", n, "retention", s.cfg.AuditRetention.String(),
			"duration_ms", time.Since(start).Milliseconds())
	}
}
