package admin

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/api"
	"github.com/keybrake/keybrake/webhooks"
)

// webhookStore is what the webhook routes need.
type webhookStore interface {
	CreateWebhook(ctx context.Context, w *keybrake.Webhook, sealedSecret string) (*keybrake.Webhook, error)
	ListWebhooks(ctx context.Context) ([]*keybrake.Webhook, error)
	DeleteWebhook(ctx context.Context, id string) (*keybrake.Webhook, error)
	ListDeliveries(ctx context.Context, webhookID string, limit int, cursor string) ([]*keybrake.Delivery, string, error)
}

func (a *API) routeWebhooks() {
	a.handle("POST /vault/webhooks", adminOnly(a.createWebhook))
	a.handle("GET /vault/webhooks", adminOnly(a.listWebhooks))
	a.handle("DELETE /vault/webhooks/{webhook_id}", adminOnly(a.deleteWebhook))
	a.handle("GET /vault/webhooks/{webhook_id}/deliveries", adminOnly(a.listDeliveries))
}

func (a *API) createWebhook(w http.ResponseWriter, r *http.Request) {
	var req api.WebhookRequest
	if e := decodeJSON(r, w, &req); e != nil {
		writeError(w, e)
		return
	}
	events, e := keybrake.ValidateWebhook(req.URL, req.Events)
	if e != nil {
		writeError(w, e)
		return
	}
	if a.cfg.WebhookDenyPrivate {
		if e := publicHost(req.URL); e != nil {
			writeError(w, e)
			return
		}
	}
	if len(req.Description) > 500 || !printable(req.Description) {
		writeError(w, keybrake.FieldError("description", "description must be at most 500 printable characters"))
		return
	}
	hook := &keybrake.Webhook{ID: keybrake.NewID("wh_"), URL: req.URL, Events: events, Description: req.Description}
	secret := webhooks.NewSecret()
	sealed, err := a.cfg.Sealer.Seal(hook.ID, secret)
	if err != nil {
		a.storeError(w, "webhook", err)
		return
	}
	created, err := a.cfg.Store.CreateWebhook(r.Context(), hook, sealed)
	if err != nil {
		a.storeError(w, "webhook", err)
		return
	}
	a.log.Info("webhook created", "webhook_id", created.ID, "events", strings.Join(created.Events, ","), "secret_sealed", a.cfg.Sealer.Sealed())
	writeJSON(w, http.StatusCreated, api.Webhook{Webhook: *created, Secret: secret})
}

// publicHost refuses a URL whose host is a literal private or local
// address when the SSRF guard is on. Names are checked when dialled.
func publicHost(raw string) *keybrake.Error {
	u, _ := url.Parse(raw)
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil && webhooks.PrivateAddr(ip) {
		return keybrake.FieldError("url", "url points at %s, a private or local address, which --webhook-deny-private refuses", host)
	}
	if h := strings.ToLower(host); h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return keybrake.FieldError("url", "url points at %s, a local address, which --webhook-deny-private refuses", host)
	}
	return nil
}

func (a *API) listWebhooks(w http.ResponseWriter, r *http.Request) {
	hooks, err := a.cfg.Store.ListWebhooks(r.Context())
	if err != nil {
		a.storeError(w, "webhooks", err)
		return
	}
	page := api.Page[api.Webhook]{Data: make([]api.Webhook, 0, len(hooks))}
	for _, h := range hooks {
		page.Data = append(page.Data, api.Webhook{Webhook: *h})
	}
	writeJSON(w, http.StatusOK, page)
}

func (a *API) deleteWebhook(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("webhook_id")
	if _, err := a.cfg.Store.DeleteWebhook(r.Context(), id); err != nil {
		a.storeError(w, "webhook "+strconv.Quote(id), err)
		return
	}
	a.log.Info("webhook deleted", "webhook_id", id)
	writeJSON(w, http.StatusOK, api.WebhookDeleted{ID: id, Deleted: true})
}

func (a *API) listDeliveries(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("webhook_id")
	limit, e := limitParam(r)
	if e != nil {
		writeError(w, e)
		return
	}
	list, next, err := a.cfg.Store.ListDeliveries(r.Context(), id, limit, r.URL.Query().Get("cursor"))
	if err != nil {
		a.storeError(w, "webhook "+strconv.Quote(id), err)
		return
	}
	page := api.Page[keybrake.Delivery]{Data: make([]keybrake.Delivery, 0, len(list)), HasMore: next != "", NextCursor: next}
	for _, d := range list {
		page.Data = append(page.Data, *d)
	}
	writeJSON(w, http.StatusOK, page)
}

// alertThresholds reads a key's alert_thresholds at issue: absent takes the
// default, [] turns the alerts off.
func alertThresholds(in *[]int) ([]int, *keybrake.Error) {
	if in == nil {
		return append([]int{}, keybrake.DefaultAlertThresholds...), nil
	}
	out, err := keybrake.NormalizeThresholds(*in)
	if err != nil {
		return nil, keybrake.FieldError("alert_thresholds", "alert_thresholds: %v (whole percents of the daily cap, e.g. [50, 80, 100], or [] for none)", err)
	}
	return out, nil
}
