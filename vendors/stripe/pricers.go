package stripe

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"strings"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
)

// Stripe's own price models: exposure on PaymentIntents and charges, refunds
// and reversals of "the rest", invoice payment, invoice items. The generic
// amount-in-the-body model is pricing.Amount.

func unpriceable(format string, args ...any) error {
	return keybrake.Errorf(keybrake.CodeUnpriceableRequest, format, args...)
}

// validID accepts what a Stripe object id is made of, so an id from a body
// cannot steer a lookup elsewhere.
func validID(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// stripeObject is the part of a PaymentIntent, charge, invoice or transfer a
// price needs.
type stripeObject struct {
	ID               string `json:"id"`
	Object           string `json:"object"`
	Amount           int64  `json:"amount"`
	AmountCapturable int64  `json:"amount_capturable"`
	AmountReceived   int64  `json:"amount_received"`
	AmountCaptured   int64  `json:"amount_captured"`
	AmountRefunded   int64  `json:"amount_refunded"`
	AmountReversed   int64  `json:"amount_reversed"`
	AmountRemaining  int64  `json:"amount_remaining"`
	Currency         string `json:"currency"`
}

// fetch reads the object a call acts on (GET /v1/{collection}/{id}) and
// checks that Stripe answered with that very object. A definite refusal
// (404: no such object) makes the call unpriceable; no answer, a 429 or a
// 5xx is lookup_failed, which may be retried.
func fetch(ctx context.Context, c *keybrake.PriceCall, collection, id, object string) (*stripeObject, error) {
	if !validID(id) {
		return nil, unpriceable("%q is not a Stripe object id", truncate(id))
	}
	path := "/v1/" + collection + "/" + id
	if c.Fetch == nil {
		return nil, keybrake.Errorf(keybrake.CodeLookupFailed, "%s is priced from %s, which cannot be read here", c.Op.Name, path)
	}
	b, err := c.Fetch.Fetch(ctx, path)
	if err != nil {
		var fe *keybrake.FetchError
		if errors.As(err, &fe) && fe.Status >= 400 && fe.Status < 500 && fe.Status != 429 {
			return nil, unpriceable("%s is priced from the %s it acts on, and GET %s answered %d%s; nothing was forwarded",
				c.Op.Name, object, path, fe.Status, stripeMessage(fe.Body))
		}
		return nil, &keybrake.Error{Code: keybrake.CodeLookupFailed, Err: err,
			Message: "Keybrake could not read " + path + " from Stripe to price " + c.Op.Name + "; nothing was forwarded, retry later"}
	}
	// Stripe names every object's type; an answer of another type (a list
	// for /v1/payment_intents/search) or another id is not the object.
	var obj stripeObject
	if err := json.Unmarshal(b, &obj); err != nil || obj.Object != "" && obj.Object != object || obj.ID != id {
		return nil, unpriceable("GET %s did not answer the %s %s", path, object, id)
	}
	for _, a := range []int64{obj.Amount, obj.AmountCapturable, obj.AmountReceived, obj.AmountCaptured, obj.AmountRefunded, obj.AmountReversed, obj.AmountRemaining} {
		if a < 0 {
			return nil, unpriceable("GET %s answered a negative amount", path)
		}
	}
	if _, err := pricing.CheckCurrency("currency", obj.Currency); err != nil {
		return nil, unpriceable("GET %s answered no usable currency", path)
	}
	obj.Currency, obj.Object = strings.ToLower(obj.Currency), object
	return &obj, nil
}

// stripeMessage is Stripe's error message from an error body, shortened.
func stripeMessage(body []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Message == "" {
		return ""
	}
	return " (" + truncate(e.Error.Message) + ")"
}

func truncate(s string) string {
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

func needForm(c *keybrake.PriceCall) (url.Values, error) {
	if c.Form == nil {
		return nil, unpriceable("%s is priced from a form-encoded or JSON body", c.Op.Name)
	}
	return c.Form, nil
}

// optionalAmount reads an amount field that may be absent.
func optionalAmount(form url.Values, field string) (int64, bool, error) {
	s, ok, err := pricing.FormValue(form, field)
	if err != nil || !ok {
		return 0, false, err
	}
	minor, valid := pricing.ParseMinor(s, false)
	if !valid {
		return 0, false, unpriceable("%s must be a non-negative integer in the currency's smallest unit, got %q", field, truncate(s))
	}
	return minor, true, nil
}

// exposure is the quote of a call after which object can move minor units
// of currency: it reserves what the key has not counted on the object yet.
func exposure(m pricing.Minor, id string, minor int64, currency string) (*keybrake.Quote, error) {
	usd, err := m.USD(minor, currency)
	if err != nil {
		return nil, err
	}
	return &keybrake.Quote{Amount: usd, ObjectID: id, Exposure: true}, nil
}

// piUpdate prices POST /v1/payment_intents/{id}: a new amount is an
// exposure. It must name amount and currency together: two concurrent
// updates, one changing only the amount and the other only the currency,
// would each be priced against the other's stale value.
type piUpdate struct{ m pricing.Minor }

func (p *piUpdate) Price(_ context.Context, c *keybrake.PriceCall) (*keybrake.Quote, error) {
	form, err := needForm(c)
	if err != nil {
		return nil, err
	}
	amount, hasAmount, err := pricing.FormValue(form, "amount")
	if err != nil {
		return nil, err
	}
	currency, hasCurrency, err := pricing.FormValue(form, "currency")
	if err != nil {
		return nil, err
	}
	if !hasAmount && !hasCurrency {
		return &keybrake.Quote{}, nil
	}
	if !hasAmount || !hasCurrency {
		return nil, unpriceable("an update that changes a PaymentIntent's amount or currency must name both amount and currency, so Keybrake prices exactly what the PaymentIntent will hold")
	}
	minor, ok := pricing.ParseMinor(amount, false)
	if !ok {
		return nil, unpriceable("amount must be a non-negative integer in the currency's smallest unit, got %q", truncate(amount))
	}
	cur, err := pricing.CheckCurrency("currency", currency)
	if err != nil {
		return nil, err
	}
	return exposure(p.m, c.Params[0], minor, cur)
}

func (p *piUpdate) Describe() string {
	return "new amount × FX of currency, less what this key counted on the PaymentIntent (exposure)"
}

// What a PaymentIntent lookup reserves.
type piKind int

const (
	piAmount    piKind = iota // confirm, apply_customer_balance, verify_microdeposits: its amount
	piCapture                 // capture: what it received before, plus amount_to_capture or what is capturable
	piIncrement               // increment_authorization: the new amount
)

type piPricer struct{ m pricing.Minor }

func (p *piPricer) with(k piKind) keybrake.Pricer { return &piLookup{p.m, k} }

// piLookup prices an operation on an existing PaymentIntent from the
// PaymentIntent itself, as an exposure.
type piLookup struct {
	m    pricing.Minor
	kind piKind
}

func (p *piLookup) Price(ctx context.Context, c *keybrake.PriceCall) (*keybrake.Quote, error) {
	form, err := needForm(c)
	if err != nil {
		return nil, err
	}
	// Read the body before the lookup: a request Keybrake refuses anyway
	// should not cost a call to Stripe.
	var minor int64
	var given bool
	switch p.kind {
	case piCapture:
		minor, given, err = optionalAmount(form, "amount_to_capture")
	case piIncrement:
		minor, err = pricing.FormAmount(form, "amount", false)
		given = true
	}
	if err != nil {
		return nil, err
	}
	pi, err := fetch(ctx, c, "payment_intents", c.Params[0], "payment_intent")
	if err != nil {
		return nil, err
	}
	switch {
	case p.kind == piCapture:
		// Partial captures (final_capture=false) add up: after this one
		// the PaymentIntent has moved what it received before plus what
		// this call captures.
		if !given {
			minor = pi.AmountCapturable
		}
		minor += pi.AmountReceived
	case given:
	default:
		minor = pi.Amount
	}
	return exposure(p.m, pi.ID, minor, pi.Currency)
}

func (p *piLookup) Describe() string {
	switch p.kind {
	case piCapture:
		return "(amount received + amount_to_capture, or amount_capturable) × FX of the PaymentIntent's currency, less what this key counted on it"
	case piIncrement:
		return "new amount × FX of the PaymentIntent's currency, less what this key counted on it"
	}
	return "the PaymentIntent's amount × FX of its currency, less what this key counted on it"
}

// chargePricer prices a charge capture as an exposure of the charge.
type chargePricer struct{ m pricing.Minor }

func (p *chargePricer) Price(ctx context.Context, c *keybrake.PriceCall) (*keybrake.Quote, error) {
	form, err := needForm(c)
	if err != nil {
		return nil, err
	}
	minor, given, err := optionalAmount(form, "amount")
	if err != nil {
		return nil, err
	}
	ch, err := fetch(ctx, c, "charges", c.Params[0], "charge")
	if err != nil {
		return nil, err
	}
	if !given {
		minor = ch.Amount
	}
	return exposure(p.m, ch.ID, minor, ch.Currency)
}

func (p *chargePricer) Describe() string {
	return "amount (or the charge's amount) × FX of its currency, less what this key counted on the charge"
}

// refundPricer prices a refund: its own amount of money, never offset by
// what was counted on the charge. Without an amount it refunds "the rest":
// what remains on the charge, or what the PaymentIntent received.
type refundPricer struct {
	m pricing.Minor
	// on is "charge" when the charge id is in the path
	// (/v1/charges/{id}/refunds); "" reads charge or payment_intent from
	// the body.
	on string
}

func (p *refundPricer) Price(ctx context.Context, c *keybrake.PriceCall) (*keybrake.Quote, error) {
	form, err := needForm(c)
	if err != nil {
		return nil, err
	}
	minor, given, err := optionalAmount(form, "amount")
	if err != nil {
		return nil, err
	}
	var obj *stripeObject
	var rest int64
	switch {
	case p.on == "charge":
		obj, err = fetch(ctx, c, "charges", c.Params[0], "charge")
	default:
		charge, hasCharge, err1 := pricing.FormValue(form, "charge")
		pi, hasPI, err2 := pricing.FormValue(form, "payment_intent")
		switch {
		case err1 != nil || err2 != nil:
			return nil, errors.Join(err1, err2)
		case hasCharge && hasPI:
			return nil, unpriceable("name either charge or payment_intent, not both")
		case hasCharge:
			obj, err = fetch(ctx, c, "charges", charge, "charge")
		case hasPI:
			obj, err = fetch(ctx, c, "payment_intents", pi, "payment_intent")
		default:
			// A refund of a customer's cash balance names its amount and
			// currency.
			_, hasCurrency, _ := pricing.FormValue(form, "currency")
			if !given || !hasCurrency {
				return nil, unpriceable("a refund names a charge or payment_intent, or (from a customer balance) its amount and currency")
			}
			cur, err := pricing.FormCurrency(form, "currency")
			if err != nil {
				return nil, err
			}
			return p.quote(minor, cur)
		}
	}
	if err != nil {
		return nil, err
	}
	switch obj.Object {
	case "charge":
		rest = obj.Amount - obj.AmountRefunded
	default:
		rest = obj.AmountReceived
	}
	if !given {
		minor = max(rest, 0)
	}
	return p.quote(minor, obj.Currency)
}

func (p *refundPricer) quote(minor int64, currency string) (*keybrake.Quote, error) {
	usd, err := p.m.USD(minor, currency)
	if err != nil {
		return nil, err
	}
	return &keybrake.Quote{Amount: usd, Settle: p.m.SettleJSON("amount", currency)}, nil
}

func (p *refundPricer) Describe() string {
	return "amount (or the rest: charge amount − amount_refunded, or what the PaymentIntent received) × FX of its currency; settled from the answer"
}

// invoicePay prices paying an invoice: what remains due on it.
type invoicePay struct{ m pricing.Minor }

func (p *invoicePay) Price(ctx context.Context, c *keybrake.PriceCall) (*keybrake.Quote, error) {
	inv, err := fetch(ctx, c, "invoices", c.Params[0], "invoice")
	if err != nil {
		return nil, err
	}
	usd, err := p.m.USD(inv.AmountRemaining, inv.Currency)
	if err != nil {
		return nil, err
	}
	return &keybrake.Quote{Amount: usd, ObjectID: inv.ID}, nil
}

func (p *invoicePay) Describe() string { return "the invoice's amount_remaining × FX of its currency" }

// reversalPricer prices a transfer reversal: amount, or what remains of the
// transfer.
type reversalPricer struct{ m pricing.Minor }

func (p *reversalPricer) Price(ctx context.Context, c *keybrake.PriceCall) (*keybrake.Quote, error) {
	form, err := needForm(c)
	if err != nil {
		return nil, err
	}
	minor, given, err := optionalAmount(form, "amount")
	if err != nil {
		return nil, err
	}
	tr, err := fetch(ctx, c, "transfers", c.Params[0], "transfer")
	if err != nil {
		return nil, err
	}
	if !given {
		minor = max(tr.Amount-tr.AmountReversed, 0)
	}
	usd, err := p.m.USD(minor, tr.Currency)
	if err != nil {
		return nil, err
	}
	return &keybrake.Quote{Amount: usd, Settle: p.m.SettleJSON("amount", tr.Currency)}, nil
}

func (p *reversalPricer) Describe() string {
	return "amount (or the rest of the transfer) × FX of its currency; settled from the answer"
}

// invoiceItem prices a pending invoice item, which the customer's next
// invoice charges: |amount|, or unit_amount × quantity. A Price object's
// amount (price, price_data) is not read: name the amount instead.
type invoiceItem struct{ m pricing.Minor }

// maxQuantity bounds an invoice item's quantity, keeping the product far
// from overflow.
const maxQuantity = 1_000_000

func (p *invoiceItem) Price(_ context.Context, c *keybrake.PriceCall) (*keybrake.Quote, error) {
	form, err := needForm(c)
	if err != nil {
		return nil, err
	}
	for k := range form {
		if k == "price" || k == "unit_amount_decimal" || strings.HasPrefix(k, "price_data[") || k == "pricing[price]" {
			return nil, unpriceable("%s: Keybrake prices invoice items from amount, or unit_amount and quantity; it does not read Price objects", k)
		}
	}
	cur, err := pricing.FormCurrency(form, "currency")
	if err != nil {
		return nil, err
	}
	var minor int64
	if _, ok, _ := pricing.FormValue(form, "amount"); ok {
		if len(form["unit_amount"])+len(form["quantity"]) > 0 {
			return nil, unpriceable("an invoice item names amount, or unit_amount and quantity, not both")
		}
		if minor, err = pricing.FormAmount(form, "amount", true); err != nil {
			return nil, err
		}
	} else {
		unit, err := pricing.FormAmount(form, "unit_amount", false)
		if err != nil {
			return nil, unpriceable("an invoice item names amount, or unit_amount and quantity, to be priced")
		}
		qty := int64(1)
		if s, ok, err := pricing.FormValue(form, "quantity"); err != nil {
			return nil, err
		} else if ok {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 0 || n > maxQuantity {
				return nil, unpriceable("quantity must be a whole number from 0 to %d", maxQuantity)
			}
			qty = n
		}
		if unit > 0 && qty > (1<<62)/unit {
			return nil, unpriceable("unit_amount × quantity is too large to price")
		}
		minor = unit * qty
	}
	usd, err := p.m.USD(minor, cur)
	if err != nil {
		return nil, err
	}
	return &keybrake.Quote{Amount: usd, Settle: p.m.SettleJSON("amount", cur)}, nil
}

func (p *invoiceItem) Describe() string {
	return "|amount| (or unit_amount × quantity) × FX of currency"
}

// customerGuard keeps customer writes free: a balance set there would be
// charged with the customer's next invoice, unpriced.
type customerGuard struct{}

func (customerGuard) Price(_ context.Context, c *keybrake.PriceCall) (*keybrake.Quote, error) {
	for k := range c.Form {
		if strings.EqualFold(k, "balance") {
			return nil, unpriceable("a customer's balance is changed with POST /v1/customers/{id}/balance_transactions, which Keybrake prices; it is refused here")
		}
	}
	return &keybrake.Quote{}, nil
}

func (customerGuard) Describe() string { return "0 (balance refused)" }

// invoiceGuard keeps invoice writes free: with auto_advance on, Stripe
// finalizes and collects an invoice by itself, which no call Keybrake sees
// would pay for.
type invoiceGuard struct{}

func (invoiceGuard) Price(_ context.Context, c *keybrake.PriceCall) (*keybrake.Quote, error) {
	v, ok, err := pricing.FormValue(c.Form, "auto_advance")
	if err != nil {
		return nil, err
	}
	if !ok || v != "false" {
		return nil, unpriceable("%s needs auto_advance=false: with automatic collection Stripe would charge the invoice by itself, outside Keybrake; pay it with POST /v1/invoices/{id}/pay", c.Op.Name)
	}
	for k := range c.Form {
		if strings.EqualFold(k, "automatically_finalizes_at") {
			return nil, unpriceable("automatically_finalizes_at schedules collection outside Keybrake; it is refused")
		}
	}
	return &keybrake.Quote{}, nil
}

func (invoiceGuard) Describe() string { return "0 (auto_advance=false required)" }
