package admin

import (
	"encoding/csv"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/api"
)

// callBounds reads since and until for the audit log: unlike the reports'
// window they have no default (absent is unbounded).
func callBounds(r *http.Request, f *keybrake.CallFilter) *keybrake.Error {
	q := r.URL.Query()
	if q.Get("since") == "" && q.Get("until") == "" {
		return nil
	}
	w, e := keybrake.ParseWindow(q.Get("since"), q.Get("until"), time.Now())
	if e != nil {
		return e
	}
	if q.Get("since") != "" {
		f.Since = w.Since
	}
	if q.Get("until") != "" {
		f.Until = w.Until
	}
	return nil
}

var callHeader = []string{"id", "time", "key_id", "agent_run_label", "vendor", "method", "path", "matched_rule", "outcome", "code",
	"http_status", "estimated_usd", "actual_usd", "object_id", "idempotency_key", "item", "vendor_request_id", "latency_ms", "retry_of"}

func callRecord(c *keybrake.Call) []string {
	retry := ""
	if c.RetryOf != 0 {
		retry = itoa(c.RetryOf)
	}
	return []string{itoa(c.ID), stamp(c.Time), c.KeyID, c.AgentRunLabel, c.Vendor, c.Method, c.Path, c.Rule, string(c.Outcome),
		string(c.Code), strconv.Itoa(c.Status), c.Estimated.String(), c.Actual.String(), c.ObjectID, c.IdempotencyKey, c.Item,
		c.VendorRequestID, itoa(c.Latency.Milliseconds()), retry}
}

// exportCalls streams the whole filtered audit log as CSV or NDJSON,
// newest first, without holding it in memory. A failure part-way aborts the
// connection, so a client never takes a cut-off export for a whole one.
func (a *API) exportCalls(w http.ResponseWriter, r *http.Request, f keybrake.CallFilter, format string) {
	h := w.Header()
	var write func(c *keybrake.Call) error
	var cw *csv.Writer
	switch format {
	case "csv":
		h.Set("Content-Type", "text/csv; charset=utf-8")
		h.Set("Content-Disposition", `attachment; filename="keybrake-calls.csv"`)
		cw = csv.NewWriter(w)
		cw.Write(callHeader) //nolint:errcheck // checked at Flush
		write = func(c *keybrake.Call) error { return cw.Write(cells(callRecord(c))) }
	case "ndjson":
		h.Set("Content-Type", "application/x-ndjson")
		h.Set("Content-Disposition", `attachment; filename="keybrake-calls.ndjson"`)
		enc := json.NewEncoder(w)
		write = func(c *keybrake.Call) error {
			return enc.Encode(api.Call{Call: c, LatencyMS: c.Latency.Milliseconds()})
		}
	default:
		writeError(w, keybrake.FieldError("format", "format must be json, csv or ndjson"))
		return
	}
	rc := http.NewResponseController(w)
	n := 0
	err := a.cfg.Store.ExportCalls(r.Context(), f, func(c *keybrake.Call) error {
		if err := write(c); err != nil {
			return err
		}
		if n++; n%keybrake.MaxPageSize == 0 {
			if cw != nil {
				cw.Flush()
			}
			rc.Flush() //nolint:errcheck // a writer that cannot flush still streams at the end
		}
		return nil
	})
	if cw != nil {
		cw.Flush()
		if err == nil {
			err = cw.Error()
		}
	}
	if err != nil {
		a.log.Error("audit export aborted", "rows", n, "err", err.Error())
		panic(http.ErrAbortHandler)
	}
}
