package admin

import (
	"context"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/api"
)

// The API's operations for callers in the same process, such as the
// dashboard: the HTTP handlers call these too, so a key is revoked and shown
// by one piece of code whichever door the operator came through. They do not
// authenticate: the caller has (the admin token, or a dashboard session
// opened with it).

// Revoke revokes a key, as DELETE /vault/keys/{key_id} does: at once for
// every later decision, idempotently (a second revoke answers the first
// revocation's time), with its key.revoked event written in the same
// transaction. An unknown key is keybrake.ErrNotFound.
func (a *API) Revoke(ctx context.Context, id string) (api.RevokeResponse, error) {
	k, err := a.cfg.Store.RevokeKey(ctx, id)
	if err != nil {
		return api.RevokeResponse{}, err
	}
	a.log.Info("vault key revoked", "key_id", k.ID, "revoked_at", k.RevokedAt)
	return api.RevokeResponse{ID: k.ID, Status: keybrake.StatusRevoked, RevokedAt: *k.RevokedAt}, nil
}

// View is a key as GET /vault/keys/{key_id} shows it: its policy, status and
// usage, with the remaining headroom zero unless the key is active, and the
// catalogue operations each of its rules grants.
func (a *API) View(v *keybrake.KeyView) api.Key {
	out := viewJSON(v)
	out.AllowedOperations = a.grants(v.Vendor, v.Rules)
	return out
}
