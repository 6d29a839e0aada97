package client

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/api"
)

// ReportParams filter the spend reports. Since and Until are RFC 3339 or
// YYYY-MM-DD (default: the last 30 days); the other fields apply to the
// reports that name them.
type ReportParams struct {
	Since, Until string
	Limit        int
	Cursor       string // runs
	LabelPrefix  string // runs
	AgentName    *string
	GroupBy      string // agents: agent_name or label_prefix
	Depth        int    // agents, with label_prefix
	Sep          string // agents, with label_prefix
	Vendor       string // daily
	Factor       string // anomalies, e.g. "3" or "2.5"
	MinUSD       string // anomalies
}

func (p ReportParams) query() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"since": p.Since, "until": p.Until, "cursor": p.Cursor, "label_prefix": p.LabelPrefix,
		"group_by": p.GroupBy, "sep": p.Sep, "vendor": p.Vendor, "factor": p.Factor, "min_usd": p.MinUSD} {
		set(q, k, v)
	}
	if p.AgentName != nil {
		q.Set("agent_name", *p.AgentName)
	}
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	if p.Depth > 0 {
		q.Set("depth", strconv.Itoa(p.Depth))
	}
	return q
}

// Report answers of the four reports.
type (
	RunsReport      = api.RunsReport
	AgentsReport    = api.AgentsReport
	DailyReport     = api.DailyReport
	AnomaliesReport = api.AnomaliesReport
)

// ReportRuns is one row per agent_run_label, newest first, paginated.
func (c *Client) ReportRuns(ctx context.Context, p ReportParams) (*RunsReport, error) {
	var r RunsReport
	return &r, c.do(ctx, http.MethodGet, "/vault/reports/runs", p.query(), nil, &r)
}

// ReportAgents is one row per agent_name (or label prefix), most expensive first.
func (c *Client) ReportAgents(ctx context.Context, p ReportParams) (*AgentsReport, error) {
	var r AgentsReport
	return &r, c.do(ctx, http.MethodGet, "/vault/reports/agents", p.query(), nil, &r)
}

// ReportDaily is one row per UTC day and vendor, with the month's projection.
func (c *Client) ReportDaily(ctx context.Context, p ReportParams) (*DailyReport, error) {
	var r DailyReport
	return &r, c.do(ctx, http.MethodGet, "/vault/reports/daily", p.query(), nil, &r)
}

// ReportAnomalies lists runs that spent over factor × their agent's median.
func (c *Client) ReportAnomalies(ctx context.Context, p ReportParams) (*AnomaliesReport, error) {
	var r AnomaliesReport
	return &r, c.do(ctx, http.MethodGet, "/vault/reports/anomalies", p.query(), nil, &r)
}

// ReportCSV copies a report ("runs", "agents", "daily" or "anomalies") as
// CSV to w.
func (c *Client) ReportCSV(ctx context.Context, name string, p ReportParams, w io.Writer) error {
	q := p.query()
	q.Set("format", "csv")
	_, err := c.stream(ctx, "/vault/reports/"+url.PathEscape(name), q, w, nil)
	return err
}

// ExportCalls streams the whole filtered audit log (format "csv" or
// "ndjson") to w, newest first, and returns how many rows it copied.
// progress, when set, is called as rows arrive.
func (c *Client) ExportCalls(ctx context.Context, p ListCallsParams, format string, w io.Writer, progress func(rows int64)) (int64, error) {
	q := url.Values{}
	set(q, "key_id", p.KeyID)
	set(q, "agent_run_label", p.AgentRunLabel)
	set(q, "outcome", p.Outcome)
	set(q, "since", p.Since)
	set(q, "until", p.Until)
	q.Set("format", format)
	n, err := c.stream(ctx, "/vault/calls", q, w, progress)
	if format == "csv" && n > 0 {
		n-- // the header line
	}
	return n, err
}

// stream GETs path and copies the answer to w line by line, counting lines.
// It has no overall timeout (an export of millions of rows takes a while);
// cancel ctx to stop it. A connection cut before the end is an error: the
// server aborts rather than end a partial export cleanly.
func (c *Client) stream(ctx context.Context, path string, q url.Values, w io.Writer, progress func(int64)) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path+"?"+q.Encode(), nil)
	if err != nil {
		return 0, &Error{Message: fmt.Sprintf("bad request URL: %v", err)}
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	hc := *c.HTTP
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return 0, &Error{Message: fmt.Sprintf("cannot reach Keybrake at %s: %v", c.base, err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return 0, errorFrom(resp.StatusCode, data)
	}
	var lines int64
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	bw := bufio.NewWriterSize(w, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if _, werr := bw.Write(line); werr != nil {
				return lines, werr
			}
			if line[len(line)-1] == '\n' {
				lines++
				if progress != nil && lines%1000 == 0 {
					progress(lines)
				}
			}
		}
		switch {
		case err == nil, err == bufio.ErrBufferFull:
			continue
		case err == io.EOF:
			return lines, bw.Flush()
		default:
			bw.Flush() //nolint:errcheck // already failing
			return lines, &Error{Status: resp.StatusCode, Message: fmt.Sprintf("the export was cut off after %d lines: %v", lines, err)}
		}
	}
}

// Webhook is a webhook as the API shows it; Secret only when created.
type Webhook = api.Webhook

// Delivery is one event on its way to one webhook, with its attempts.
type Delivery = keybrake.Delivery

// WebhookParams describes a webhook to create.
type WebhookParams = api.WebhookRequest

// CreateWebhook registers a receiver. The signing secret (whsec_…) is in
// the answer's Secret and is never shown again.
func (c *Client) CreateWebhook(ctx context.Context, p WebhookParams) (*Webhook, error) {
	var w Webhook
	return &w, c.do(ctx, http.MethodPost, "/vault/webhooks", nil, p, &w)
}

// ListWebhooks lists the receivers.
func (c *Client) ListWebhooks(ctx context.Context) (*Page[Webhook], error) {
	var page Page[Webhook]
	return &page, c.do(ctx, http.MethodGet, "/vault/webhooks", nil, nil, &page)
}

// DeleteWebhook removes a receiver; its undelivered events are canceled.
func (c *Client) DeleteWebhook(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/vault/webhooks/"+url.PathEscape(id), nil, nil, nil)
}

// ListDeliveries lists a webhook's deliveries, newest first, with attempts.
func (c *Client) ListDeliveries(ctx context.Context, id string, limit int, cursor string) (*Page[Delivery], error) {
	q := url.Values{}
	set(q, "cursor", cursor)
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var page Page[Delivery]
	return &page, c.do(ctx, http.MethodGet, "/vault/webhooks/"+url.PathEscape(id)+"/deliveries", q, nil, &page)
}
