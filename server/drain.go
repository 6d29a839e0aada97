package server

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// drain stops the listeners and waits, until ctx ends, for in-flight
// requests to finish and settle. When ctx ends first (the drain took
// longer than --shutdown-timeout), the calls still at a vendor are
// abandoned: their clients see the connection close when the process
// exits, and their reservations stay pending, counted as spend with
// outcome unknown by the next start (on PostgreSQL: the restart of the
// same --instance-id, or any replica's sweep). Never under-counted; each
// one is logged here, with what an operator needs to find it (call id,
// key id, vendor) and nothing secret.
func (s *Server) drain(ctx context.Context) error {
	var errs []error
	for _, srv := range s.servers {
		errs = append(errs, srv.Shutdown(ctx))
	}
	err := errors.Join(errs...)
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return err
	}
	abandoned := s.proxy.InFlight()
	for _, c := range abandoned {
		s.log.Warn("shutdown: call abandoned by the drain; it stays reserved and the next start counts it as spend with outcome unknown",
			"call_id", c.CallID, "key_id", c.KeyID, "vendor", c.Vendor, "in_flight", c.Age.Round(time.Millisecond).String())
	}
	return fmt.Errorf("the drain did not finish in time: %d call(s) still at the vendor were abandoned (logged); they stay counted as spend: %w", len(abandoned), err)
}
