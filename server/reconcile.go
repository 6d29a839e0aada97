package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/proxy"
)

// reconcileAttempts is how often the reconciler asks the vendor for a call's
// final cost before the estimate stands for good.
const reconcileAttempts = 10

// reconcile periodically reprices calls settled at their estimate, for the
// vendors that state a cost only later. Every replica may run it: the store
// reprices a call once.
func (s *Server) reconcile(ctx context.Context) {
	defer s.bg.Done()
	hc := &http.Client{Transport: proxy.NewTransport(s.cfg.UpstreamTimeout), Timeout: s.cfg.UpstreamTimeout}
	tick := time.NewTicker(s.cfg.ReconcileInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, v := range s.vendors {
			r, ok := v.(keybrake.Reconciler)
			if !ok || !v.Configured() {
				continue
			}
			s.reconcileVendor(ctx, hc, v.Name(), r)
		}
	}
}

func (s *Server) reconcileVendor(ctx context.Context, hc *http.Client, vendor string, r keybrake.Reconciler) {
	due, err := s.store.DueForReconcile(ctx, vendor, s.cfg.ReconcileInterval, 100)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			s.log.Error("reconciler: listing calls failed", "vendor", vendor, "err", err.Error())
		}
		return
	}
	for _, c := range due {
		cost, known, err := r.FinalCost(ctx, hc, c.ObjectID)
		if err != nil {
			s.log.Warn("reconciler: final cost not read", "vendor", vendor, "call_id", c.ID, "err", err.Error())
		}
		if err := s.store.Reconcile(ctx, c.ID, cost, known && err == nil, reconcileAttempts); err != nil {
			s.log.Error("reconciler: call not repriced", "call_id", c.ID, "err", err.Error())
			continue
		}
		if known && err == nil {
			s.log.Info("reconciler: call repriced", "vendor", vendor, "call_id", c.ID, "key_id", c.KeyID,
				"estimated_usd", c.Actual.String(), "final_usd", cost.String())
		}
	}
}
