package resend

import (
	"strings"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
)

// The Resend catalogue: every call Keybrake forwards to Resend, and how it
// is priced. A path that is not here does not exist (403
// unknown_operation). Sends are priced by recipients; broadcasts go to an
// audience Keybrake cannot count, so their sends are refused until the
// pricing file prices them; API keys and webhooks (whose signing secrets
// the answers reveal) are forbidden.
func newCatalog() (*keybrake.Catalog, error) {
	const (
		free      = keybrake.ModelFree
		body      = keybrake.ModelBody
		fixed     = keybrake.ModelFixed
		forbidden = keybrake.ModelForbidden
	)
	read := "a read: free"
	noMoney := "moves no money: free"
	settings := &emailSettings{PerRecipient: pricing.MustUSD(defaultPerRecipient)}
	ops := []*keybrake.Operation{
		op("emails.send", "POST /emails", body, "recipients (to + cc + bcc) × the price of one email", &emailPricer{s: settings}),
		op("emails.batch", "POST /emails/batch", body, "recipients of every email of the batch (at most 100) × the price of one email; only those Resend accepted are settled", &emailPricer{batch: true, s: settings}),
		op("emails.list", "GET /emails", free, read, nil),
		op("emails.retrieve", "GET /emails/*", free, read, nil),
		op("emails.update", "PATCH /emails/*", free, "reschedules an email already priced: free", nil),
		op("emails.cancel", "POST /emails/*/cancel", free, "cancels a scheduled email: free", nil),

		op("domains.create", "POST /domains", free, noMoney, nil),
		op("domains.list", "GET /domains", free, read, nil),
		op("domains.retrieve", "GET /domains/*", free, read, nil),
		op("domains.update", "PATCH /domains/*", free, noMoney, nil),
		op("domains.delete", "DELETE /domains/*", free, noMoney, nil),
		op("domains.verify", "POST /domains/*/verify", free, noMoney, nil),

		op("audiences.create", "POST /audiences", free, noMoney, nil),
		op("audiences.list", "GET /audiences", free, read, nil),
		op("audiences.retrieve", "GET /audiences/*", free, read, nil),
		op("audiences.delete", "DELETE /audiences/*", free, noMoney, nil),
		op("audiences.contacts.create", "POST /audiences/*/contacts", free, noMoney, nil),
		op("audiences.contacts.list", "GET /audiences/*/contacts", free, read, nil),
		op("audiences.contacts.retrieve", "GET /audiences/*/contacts/*", free, read, nil),
		op("audiences.contacts.update", "PATCH /audiences/*/contacts/*", free, noMoney, nil),
		op("audiences.contacts.delete", "DELETE /audiences/*/contacts/*", free, noMoney, nil),
		op("contacts.create", "POST /contacts", free, noMoney, nil),
		op("contacts.list", "GET /contacts", free, read, nil),
		op("contacts.retrieve", "GET /contacts/*", free, read, nil),
		op("contacts.update", "PATCH /contacts/*", free, noMoney, nil),
		op("contacts.delete", "DELETE /contacts/*", free, noMoney, nil),

		op("broadcasts.create", "POST /broadcasts", free, `creates a draft: free ("send": true is refused: send it with broadcasts.send)`, broadcastCreate{}),
		op("broadcasts.list", "GET /broadcasts", free, read, nil),
		op("broadcasts.retrieve", "GET /broadcasts/*", free, read, nil),
		op("broadcasts.update", "PATCH /broadcasts/*", free, `edits a draft: free ("send" refused)`, broadcastCreate{}),
		op("broadcasts.delete", "DELETE /broadcasts/*", free, noMoney, nil),
		op("broadcasts.send", "POST /broadcasts/*/send", fixed, "sends to an audience whose size Keybrake cannot see: no built-in price", nil),

		op("api_keys.list", "GET /api-keys", forbidden, "lists the account's API keys", nil),
		op("api_keys.create", "POST /api-keys", forbidden, "mints an API key that calls Resend directly, bypassing Keybrake", nil),
		op("api_keys.retrieve", "GET /api-keys/*", forbidden, "reads an API key", nil),
		op("api_keys.delete", "DELETE /api-keys/*", forbidden, "deletes an API key", nil),
		op("webhooks.list", "GET /webhooks", forbidden, "lists webhooks with their signing secrets", nil),
		op("webhooks.create", "POST /webhooks", forbidden, "answers the webhook's signing secret", nil),
		op("webhooks.retrieve", "GET /webhooks/*", forbidden, "answers the webhook's signing secret", nil),
		op("webhooks.update", "PATCH /webhooks/*", forbidden, "redirects the account's events elsewhere", nil),
		op("webhooks.delete", "DELETE /webhooks/*", forbidden, "manages webhooks", nil),
	}
	return keybrake.NewCatalog("resend", nil, ops)
}

// defaultPerRecipient is Resend's $0.90 per 1,000 emails beyond a plan's
// quota.
const defaultPerRecipient = "0.0009"

func op(name, route string, model keybrake.PriceModel, note string, p keybrake.Pricer) *keybrake.Operation {
	method, path, _ := strings.Cut(route, " ")
	return &keybrake.Operation{Vendor: "resend", Name: name, Method: method, Pattern: keybrake.MustParsePattern(path),
		Model: model, Note: note, Pricer: p}
}

func unpriceable(format string, args ...any) error {
	return keybrake.Errorf(keybrake.CodeUnpriceableRequest, format, args...)
}
