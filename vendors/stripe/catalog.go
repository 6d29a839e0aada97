package stripe

import (
	"strings"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
)

// The Stripe catalogue: every call Keybrake forwards to Stripe, and how it is
// priced. A path that is not here does not exist (403 unknown_operation).
// It holds the objects that move money (PaymentIntents, charges, refunds,
// invoices and invoice items, customer balance, transfers, payouts, top-ups,
// Treasury outbound payments) and the free reads and writes an agent needs
// around them. What mints or reveals credentials, or moves money Keybrake
// cannot bound (subscriptions, payment links, checkout sessions, issuing
// cards), is listed as forbidden so that issuance refuses a rule covering it
// by name.
//
// Money lives in two places. Some calls name their amount (a PaymentIntent
// or charge created, a transfer, a payout): they are priced from the body.
// Others act on the amount of an existing object (confirm, capture, refund
// "the rest", pay an invoice): Keybrake GETs the object first (lookup).
// PaymentIntents and charges are priced by exposure: what the object can
// move after the call, less what this key already counted on it (see
// keybrake.Quote), so "create small, update up, confirm" costs what it
// moves, and a PaymentIntent counted at its creation is not counted again
// when it is confirmed.
func newCatalog(fx *pricing.FX) (*keybrake.Catalog, error) {
	m := pricing.Minor{FX: fx, Exponent: Exponent}
	amount := func(field string) *pricing.Amount {
		return &pricing.Amount{Minor: m, Field: field, Currency: "currency", Settle: field}
	}
	const (
		free      = keybrake.ModelFree
		body      = keybrake.ModelBody
		lookup    = keybrake.ModelLookup
		forbidden = keybrake.ModelForbidden
	)
	read := "a read: free"
	noMoney := "moves no money: free"
	pi := &piPricer{m}
	ch := &chargePricer{m}
	ops := []*keybrake.Operation{
		// PaymentIntents.
		op("payment_intents.create", "POST /v1/payment_intents", body, "amount × FX of currency; settled from the answer's amount", amount("amount")),
		op("payment_intents.list", "GET /v1/payment_intents", free, read, nil),
		op("payment_intents.search", "GET /v1/payment_intents/search", free, read, nil),
		op("payment_intents.retrieve", "GET /v1/payment_intents/*", free, read, nil),
		op("payment_intents.update", "POST /v1/payment_intents/*", body,
			"a new amount (with its currency) reserves what it adds to what this key counted on the PaymentIntent; other updates are free", &piUpdate{m}),
		op("payment_intents.confirm", "POST /v1/payment_intents/*/confirm", lookup,
			"reserves the PaymentIntent's amount, less what this key counted on it", pi.with(piAmount)),
		op("payment_intents.capture", "POST /v1/payment_intents/*/capture", lookup,
			"reserves what the PaymentIntent will have received (partial captures add up), less what this key counted on it", pi.with(piCapture)),
		op("payment_intents.increment_authorization", "POST /v1/payment_intents/*/increment_authorization", lookup,
			"reserves the new amount, in the PaymentIntent's currency, less what this key counted on it", pi.with(piIncrement)),
		op("payment_intents.apply_customer_balance", "POST /v1/payment_intents/*/apply_customer_balance", lookup,
			"reserves the PaymentIntent's amount, less what this key counted on it", pi.with(piAmount)),
		op("payment_intents.verify_microdeposits", "POST /v1/payment_intents/*/verify_microdeposits", lookup,
			"verifying lets the payment proceed: reserves the PaymentIntent's amount, less what this key counted on it", pi.with(piAmount)),
		op("payment_intents.cancel", "POST /v1/payment_intents/*/cancel", free, noMoney, nil),

		// Charges.
		op("charges.create", "POST /v1/charges", body, "amount × FX of currency; settled from the answer's amount", amount("amount")),
		op("charges.list", "GET /v1/charges", free, read, nil),
		op("charges.search", "GET /v1/charges/search", free, read, nil),
		op("charges.retrieve", "GET /v1/charges/*", free, read, nil),
		op("charges.update", "POST /v1/charges/*", free, "description and metadata only: free", nil),
		op("charges.capture", "POST /v1/charges/*/capture", lookup,
			"reserves amount (or the charge's amount), less what this key counted on the charge", ch),
		op("charges.refunds.create", "POST /v1/charges/*/refunds", lookup,
			"a refund: amount, or the rest of the charge (amount − amount_refunded), in its currency", &refundPricer{m, "charge"}),
		op("charges.refund", "POST /v1/charges/*/refund", lookup,
			"a refund (deprecated form): amount, or the rest of the charge, in its currency", &refundPricer{m, "charge"}),
		op("charges.refunds.list", "GET /v1/charges/*/refunds", free, read, nil),
		op("charges.refunds.retrieve", "GET /v1/charges/*/refunds/*", free, read, nil),

		// Refunds.
		op("refunds.create", "POST /v1/refunds", lookup,
			"a refund: amount in the charge's or PaymentIntent's currency, or the rest of it when no amount is given", &refundPricer{m, ""}),
		op("refunds.list", "GET /v1/refunds", free, read, nil),
		op("refunds.retrieve", "GET /v1/refunds/*", free, read, nil),
		op("refunds.update", "POST /v1/refunds/*", free, "metadata only: free", nil),
		op("refunds.cancel", "POST /v1/refunds/*/cancel", free, noMoney, nil),

		// Customers and their balance.
		op("customers.create", "POST /v1/customers", free, "free; a balance is refused (use customers.balance_transactions.create, which is priced)", customerGuard{}),
		op("customers.list", "GET /v1/customers", free, read, nil),
		op("customers.search", "GET /v1/customers/search", free, read, nil),
		op("customers.retrieve", "GET /v1/customers/*", free, read, nil),
		op("customers.update", "POST /v1/customers/*", free, "free; a balance is refused (use customers.balance_transactions.create, which is priced)", customerGuard{}),
		op("customers.delete", "DELETE /v1/customers/*", free, noMoney, nil),
		op("customers.balance_transactions.create", "POST /v1/customers/*/balance_transactions", body,
			"|amount| × FX of currency (a credit or a debit moves money either way)", &pricing.Amount{Minor: m, Field: "amount", Currency: "currency", Signed: true, Settle: "amount"}),
		op("customers.balance_transactions.list", "GET /v1/customers/*/balance_transactions", free, read, nil),
		op("customers.balance_transactions.retrieve", "GET /v1/customers/*/balance_transactions/*", free, read, nil),
		op("customers.payment_methods.list", "GET /v1/customers/*/payment_methods", free, read, nil),

		// Payment methods and setup intents: saving a card moves no money.
		op("payment_methods.create", "POST /v1/payment_methods", free, noMoney, nil),
		op("payment_methods.list", "GET /v1/payment_methods", free, read, nil),
		op("payment_methods.retrieve", "GET /v1/payment_methods/*", free, read, nil),
		op("payment_methods.update", "POST /v1/payment_methods/*", free, noMoney, nil),
		op("payment_methods.attach", "POST /v1/payment_methods/*/attach", free, noMoney, nil),
		op("payment_methods.detach", "POST /v1/payment_methods/*/detach", free, noMoney, nil),
		op("setup_intents.create", "POST /v1/setup_intents", free, noMoney, nil),
		op("setup_intents.list", "GET /v1/setup_intents", free, read, nil),
		op("setup_intents.retrieve", "GET /v1/setup_intents/*", free, read, nil),
		op("setup_intents.update", "POST /v1/setup_intents/*", free, noMoney, nil),
		op("setup_intents.confirm", "POST /v1/setup_intents/*/confirm", free, noMoney, nil),
		op("setup_intents.cancel", "POST /v1/setup_intents/*/cancel", free, noMoney, nil),

		// Products and prices: definitions, charged only through priced
		// operations.
		op("products.create", "POST /v1/products", free, noMoney, nil),
		op("products.list", "GET /v1/products", free, read, nil),
		op("products.retrieve", "GET /v1/products/*", free, read, nil),
		op("products.update", "POST /v1/products/*", free, noMoney, nil),
		op("products.delete", "DELETE /v1/products/*", free, noMoney, nil),
		op("prices.create", "POST /v1/prices", free, noMoney, nil),
		op("prices.list", "GET /v1/prices", free, read, nil),
		op("prices.retrieve", "GET /v1/prices/*", free, read, nil),
		op("prices.update", "POST /v1/prices/*", free, noMoney, nil),

		// Invoices. Stripe collects an invoice by itself when auto_advance
		// is on, which Keybrake could not price: every write must turn it
		// off, and paying is an explicit, priced call.
		op("invoices.create", "POST /v1/invoices", free, "free with auto_advance=false (required: Stripe would otherwise collect it by itself)", invoiceGuard{}),
		op("invoices.list", "GET /v1/invoices", free, read, nil),
		op("invoices.retrieve", "GET /v1/invoices/*", free, read, nil),
		op("invoices.update", "POST /v1/invoices/*", free, "free with auto_advance=false (required)", invoiceGuard{}),
		op("invoices.delete", "DELETE /v1/invoices/*", free, "deletes a draft: free", nil),
		op("invoices.finalize", "POST /v1/invoices/*/finalize", free, "free with auto_advance=false (required)", invoiceGuard{}),
		op("invoices.pay", "POST /v1/invoices/*/pay", lookup, "reserves the invoice's amount_remaining, in its currency", &invoicePay{m}),
		op("invoices.void", "POST /v1/invoices/*/void", free, noMoney, nil),
		op("invoices.send", "POST /v1/invoices/*/send", free, "emails the invoice for the customer to pay: free", nil),
		op("invoiceitems.create", "POST /v1/invoiceitems", body,
			"|amount| (or unit_amount × quantity) × FX of currency: pending items are charged with the customer's next invoice", &invoiceItem{m}),
		op("invoiceitems.list", "GET /v1/invoiceitems", free, read, nil),
		op("invoiceitems.retrieve", "GET /v1/invoiceitems/*", free, read, nil),
		op("invoiceitems.delete", "DELETE /v1/invoiceitems/*", free, noMoney, nil),

		// Connect transfers, payouts, top-ups, Treasury.
		op("transfers.create", "POST /v1/transfers", body, "amount × FX of currency; settled from the answer", amount("amount")),
		op("transfers.list", "GET /v1/transfers", free, read, nil),
		op("transfers.retrieve", "GET /v1/transfers/*", free, read, nil),
		op("transfers.update", "POST /v1/transfers/*", free, "description and metadata only: free", nil),
		op("transfers.reversals.create", "POST /v1/transfers/*/reversals", lookup,
			"amount, or the rest of the transfer (amount − amount_reversed), in its currency", &reversalPricer{m}),
		op("transfers.reversals.list", "GET /v1/transfers/*/reversals", free, read, nil),
		op("payouts.create", "POST /v1/payouts", body, "amount × FX of currency; settled from the answer", amount("amount")),
		op("payouts.list", "GET /v1/payouts", free, read, nil),
		op("payouts.retrieve", "GET /v1/payouts/*", free, read, nil),
		op("payouts.cancel", "POST /v1/payouts/*/cancel", free, noMoney, nil),
		op("topups.create", "POST /v1/topups", body, "amount × FX of currency; settled from the answer", amount("amount")),
		op("topups.list", "GET /v1/topups", free, read, nil),
		op("topups.retrieve", "GET /v1/topups/*", free, read, nil),
		op("topups.cancel", "POST /v1/topups/*/cancel", free, noMoney, nil),
		op("treasury.outbound_payments.create", "POST /v1/treasury/outbound_payments", body, "amount × FX of currency; settled from the answer", amount("amount")),
		op("treasury.outbound_payments.list", "GET /v1/treasury/outbound_payments", free, read, nil),
		op("treasury.outbound_payments.retrieve", "GET /v1/treasury/outbound_payments/*", free, read, nil),
		op("treasury.outbound_transfers.create", "POST /v1/treasury/outbound_transfers", body, "amount × FX of currency; settled from the answer", amount("amount")),
		op("treasury.outbound_transfers.list", "GET /v1/treasury/outbound_transfers", free, read, nil),
		op("treasury.outbound_transfers.retrieve", "GET /v1/treasury/outbound_transfers/*", free, read, nil),

		// Reads.
		op("balance.retrieve", "GET /v1/balance", free, read, nil),
		op("balance_transactions.list", "GET /v1/balance_transactions", free, read, nil),
		op("balance_transactions.retrieve", "GET /v1/balance_transactions/*", free, read, nil),
		op("events.list", "GET /v1/events", free, read, nil),
		op("events.retrieve", "GET /v1/events/*", free, read, nil),
		op("subscriptions.list", "GET /v1/subscriptions", free, read, nil),
		op("subscriptions.retrieve", "GET /v1/subscriptions/*", free, read, nil),

		// Forbidden: credentials, and money Keybrake cannot bound.
		op("ephemeral_keys.create", "POST /v1/ephemeral_keys", forbidden, "mints a key that calls Stripe directly, bypassing Keybrake", nil),
		op("ephemeral_keys.delete", "DELETE /v1/ephemeral_keys/*", forbidden, "manages keys that call Stripe directly", nil),
		op("account_links.create", "POST /v1/account_links", forbidden, "mints a link that signs in to a Stripe account", nil),
		op("accounts.login_links.create", "POST /v1/accounts/*/login_links", forbidden, "mints a link that signs in to a connected account's dashboard", nil),
		op("account_sessions.create", "POST /v1/account_sessions", forbidden, "mints a client secret for embedded components that act on the account", nil),
		op("billing_portal.sessions.create", "POST /v1/billing_portal/sessions", forbidden, "mints a link to a portal where subscriptions change outside Keybrake", nil),
		op("webhook_endpoints.create", "POST /v1/webhook_endpoints", forbidden, "reveals the endpoint's signing secret", nil),
		op("webhook_endpoints.update", "POST /v1/webhook_endpoints/*", forbidden, "redirects the account's events, with their data, elsewhere", nil),
		op("terminal.connection_tokens.create", "POST /v1/terminal/connection_tokens", forbidden, "mints a token that lets a reader take payments directly", nil),
		op("apps.secrets.create", "POST /v1/apps/secrets", forbidden, "stores or reveals app secrets", nil),
		op("apps.secrets.list", "GET /v1/apps/secrets", forbidden, "reveals app secrets", nil),
		op("apps.secrets.find", "GET /v1/apps/secrets/find", forbidden, "reveals app secrets", nil),
		op("apps.secrets.delete", "POST /v1/apps/secrets/delete", forbidden, "manages app secrets", nil),
		op("subscriptions.create", "POST /v1/subscriptions", forbidden, "recurring charges: unbounded", nil),
		op("subscriptions.update", "POST /v1/subscriptions/*", forbidden, "recurring charges and prorations: unbounded", nil),
		op("subscriptions.cancel", "DELETE /v1/subscriptions/*", forbidden, "may invoice and charge prorations immediately", nil),
		op("subscriptions.resume", "POST /v1/subscriptions/*/resume", forbidden, "restarts recurring charges: unbounded", nil),
		op("subscription_items.create", "POST /v1/subscription_items", forbidden, "recurring charges: unbounded", nil),
		op("subscription_items.update", "POST /v1/subscription_items/*", forbidden, "recurring charges: unbounded", nil),
		op("subscription_schedules.create", "POST /v1/subscription_schedules", forbidden, "recurring charges: unbounded", nil),
		op("subscription_schedules.update", "POST /v1/subscription_schedules/*", forbidden, "recurring charges: unbounded", nil),
		op("payment_links.create", "POST /v1/payment_links", forbidden, "a link anyone can pay, any number of times: unbounded", nil),
		op("payment_links.update", "POST /v1/payment_links/*", forbidden, "a link anyone can pay, any number of times: unbounded", nil),
		op("checkout.sessions.create", "POST /v1/checkout/sessions", forbidden, "the customer's choices (quantities, subscriptions) decide the amount: not bounded by the request", nil),
		op("issuing.cards.create", "POST /v1/issuing/cards", forbidden, "a card spends outside Keybrake", nil),
		op("issuing.cards.retrieve", "GET /v1/issuing/cards/*", forbidden, "can reveal card details", nil),
		op("issuing.cards.update", "POST /v1/issuing/cards/*", forbidden, "changes what a card may spend outside Keybrake", nil),
		op("issuing.authorizations.approve", "POST /v1/issuing/authorizations/*/approve", forbidden, "approves card spending Keybrake did not price", nil),
		op("v2.money_management.outbound_payments.create", "POST /v2/money_management/outbound_payments", forbidden, "v2 money movement is not priced by Keybrake", nil),
		op("v2.money_management.outbound_transfers.create", "POST /v2/money_management/outbound_transfers", forbidden, "v2 money movement is not priced by Keybrake", nil),
		op("v2.core.account_links.create", "POST /v2/core/account_links", forbidden, "mints a link that signs in to an account", nil),
	}
	return keybrake.NewCatalog("stripe", nil, ops)
}

// op builds one catalogue entry from "METHOD /path".
func op(name, route string, model keybrake.PriceModel, note string, p keybrake.Pricer) *keybrake.Operation {
	method, path, _ := strings.Cut(route, " ")
	return &keybrake.Operation{Vendor: "stripe", Name: name, Method: method, Pattern: keybrake.MustParsePattern(path),
		Model: model, Note: note, Pricer: p}
}
