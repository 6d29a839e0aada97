package admin

import (
	"net/http"
	"strconv"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/api"
)

func (a *API) listCalls(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, e := limitParam(r)
	if e != nil {
		writeError(w, e)
		return
	}
	f := keybrake.CallFilter{
		KeyID: q.Get("key_id"), AgentRunLabel: q.Get("agent_run_label"),
		Outcome: keybrake.Outcome(q.Get("outcome")), Limit: limit, Cursor: q.Get("cursor"),
	}
	if e := callBounds(r, &f); e != nil {
		writeError(w, e)
		return
	}
	if f.Outcome != "" {
		if _, e := keybrake.ParseOutcome(string(f.Outcome)); e != nil {
			writeError(w, e)
			return
		}
	}
	if format := q.Get("format"); format != "" && format != "json" {
		a.exportCalls(w, r, f, format)
		return
	}
	calls, next, err := a.cfg.Store.ListCalls(r.Context(), f)
	if err != nil {
		a.storeError(w, "calls", err)
		return
	}
	page := api.Page[api.Call]{Data: make([]api.Call, 0, len(calls)), NextCursor: next, HasMore: next != ""}
	for _, c := range calls {
		page.Data = append(page.Data, api.Call{Call: c, LatencyMS: c.Latency.Milliseconds()})
	}
	writeJSON(w, http.StatusOK, page)
}

func (a *API) runSummary(w http.ResponseWriter, r *http.Request) {
	label := r.PathValue("label")
	sum, err := a.cfg.Store.RunSummary(r.Context(), label)
	if err != nil {
		a.storeError(w, "run "+strconv.Quote(label), err)
		return
	}
	writeJSON(w, http.StatusOK, sum)
}
