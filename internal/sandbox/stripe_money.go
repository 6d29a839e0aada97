package sandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Move is one movement of money the sandbox Stripe made: what a test
// compares with what Keybrake recorded. Amounts are in the currency's
// minor units.
type Move struct {
	Kind     string // "payment", "capture", "charge", "refund", "transfer", "payout", "topup", "invoice", "balance", "reversal", "unbounded"
	Object   string
	Currency string
	Amount   int64
}

// Unbounded is the amount the sandbox records for a call whose money it
// cannot bound (a subscription, a payment link): more than any cap.
const Unbounded = int64(1) << 40

// Charge is the part of a Stripe charge the sandbox keeps.
type Charge struct {
	ID             string `json:"id"`
	Object         string `json:"object"`
	Amount         int64  `json:"amount"`
	AmountCaptured int64  `json:"amount_captured"`
	AmountRefunded int64  `json:"amount_refunded"`
	Captured       bool   `json:"captured"`
	Currency       string `json:"currency"`
	Status         string `json:"status"`
}

type transfer struct {
	ID             string `json:"id"`
	Object         string `json:"object"`
	Amount         int64  `json:"amount"`
	AmountReversed int64  `json:"amount_reversed"`
	Currency       string `json:"currency"`
}

type invoice struct {
	ID              string `json:"id"`
	Object          string `json:"object"`
	AmountDue       int64  `json:"amount_due"`
	AmountPaid      int64  `json:"amount_paid"`
	AmountRemaining int64  `json:"amount_remaining"`
	Currency        string `json:"currency"`
	Status          string `json:"status"`
	Customer        string `json:"customer"`
}

// money is the sandbox's state beyond payment intents, guarded by the
// Stripe sandbox's mu.
type money struct {
	charges   map[string]*Charge
	transfers map[string]*transfer
	invoices  map[string]*invoice
	items     map[string][]int64 // pending invoice items by customer
	moves     []Move
	n         int
}

func (m *money) id(prefix string) string {
	m.n++
	return fmt.Sprintf("%s_sandbox_%06d", prefix, m.n)
}

func (m *money) move(kind, object, currency string, amount int64) {
	if amount != 0 {
		m.moves = append(m.moves, Move{Kind: kind, Object: object, Currency: currency, Amount: amount})
	}
}

// Moves lists every movement of money, in order.
func (s *Stripe) Moves() []Move {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Move(nil), s.moves...)
}

// MovedMinor sums what moved, per currency.
func (s *Stripe) MovedMinor() map[string]int64 {
	out := map[string]int64{}
	for _, m := range s.Moves() {
		out[m.Currency] += m.Amount
	}
	return out
}

// AddPaymentIntent puts a PaymentIntent in the sandbox as if someone else
// (not the agent) had created it.
func (s *Stripe) AddPaymentIntent(amount int64, currency, captureMethod string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	pi := &PaymentIntent{ID: fmt.Sprintf("pi_other_%06d", s.seq), Object: "payment_intent", Amount: amount, Currency: currency,
		Status: "requires_confirmation", CaptureMethod: captureMethod, Metadata: map[string]string{}}
	if captureMethod == "" {
		pi.CaptureMethod = "automatic"
	}
	s.intents = append(s.intents, pi)
	return pi.ID
}

// AddCharge puts a captured charge in the sandbox, made by someone else.
func (s *Stripe) AddCharge(amount int64, currency string, captured bool) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	ch := &Charge{ID: s.id("ch_other"), Object: "charge", Amount: amount, Currency: currency, Captured: captured, Status: "succeeded"}
	if captured {
		ch.AmountCaptured = amount
	}
	s.charges[ch.ID] = ch
	return ch.ID
}

// AddInvoice puts an open invoice in the sandbox.
func (s *Stripe) AddInvoice(amount int64, currency string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	inv := &invoice{ID: s.id("in_other"), Object: "invoice", AmountDue: amount, AmountRemaining: amount, Currency: currency, Status: "open"}
	s.invoices[inv.ID] = inv
	return inv.ID
}

// AddTransfer puts a transfer in the sandbox, made by someone else.
func (s *Stripe) AddTransfer(amount int64, currency string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	tr := &transfer{ID: s.id("tr_other"), Object: "transfer", Amount: amount, Currency: currency}
	s.transfers[tr.ID] = tr
	return tr.ID
}

func (s *Stripe) init() {
	if s.charges == nil {
		s.charges, s.transfers, s.invoices, s.items = map[string]*Charge{}, map[string]*transfer{}, map[string]*invoice{}, map[string][]int64{}
	}
}

// confirm completes a payment intent: an automatic one moves its amount, a
// manual one holds it for capture. Call with s.mu held.
func (s *Stripe) confirm(pi *PaymentIntent) {
	if pi.CaptureMethod == "manual" {
		pi.Status, pi.AmountCapturable = "requires_capture", pi.Amount
		return
	}
	pi.Status, pi.AmountReceived = "succeeded", pi.Amount
	s.move("payment", pi.ID, pi.Currency, pi.Amount)
}

func (s *Stripe) intent(id string) *PaymentIntent {
	for _, pi := range s.intents {
		if pi.ID == id {
			return pi
		}
	}
	return nil
}

func jsonOK(v any) (int, []byte, bool) {
	b, _ := json.Marshal(v)
	return http.StatusOK, b, true
}

func invalid(msg string) (int, []byte, bool) {
	return http.StatusBadRequest, stripeError("invalid_request_error", "parameter_invalid", msg), true
}

func missing(kind, id string) (int, []byte, bool) {
	return http.StatusNotFound, stripeError("invalid_request_error", "resource_missing", "No such "+kind+": '"+id+"'"), true
}

func amountOf(form url.Values, field string) (int64, bool, bool) {
	s := form.Get(field)
	if s == "" {
		return 0, false, true
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, true, err == nil && n >= 0
}

// applyMoney serves the money-moving objects beyond creating payment
// intents, as Stripe would apply them. ok=false: not one of these routes.
func (s *Stripe) applyMoney(r *http.Request, form url.Values) (int, []byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	seg := strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/"), "/")
	post := r.Method == http.MethodPost
	at := func(n int, parts ...string) bool {
		if len(seg) != n {
			return false
		}
		for i, p := range parts {
			if p != "*" && seg[i] != p {
				return false
			}
		}
		return true
	}
	cur := strings.ToLower(form.Get("currency"))
	switch {
	case post && at(2, "payment_intents", "*"):
		pi := s.intent(seg[1])
		if pi == nil {
			return missing("payment_intent", seg[1])
		}
		if a, ok, valid := amountOf(form, "amount"); ok {
			if !valid || pi.Status == "succeeded" || pi.Status == "requires_capture" {
				return invalid("This PaymentIntent's amount could not be updated")
			}
			pi.Amount = a
		}
		if cur != "" {
			pi.Currency = cur
		}
		return jsonOK(pi)
	case post && at(3, "payment_intents", "*", "confirm"), post && at(3, "payment_intents", "*", "apply_customer_balance"):
		pi := s.intent(seg[1])
		if pi == nil {
			return missing("payment_intent", seg[1])
		}
		if pi.Status == "succeeded" || pi.Status == "requires_capture" || pi.Status == "canceled" {
			return invalid("This PaymentIntent's status is " + pi.Status)
		}
		s.confirm(pi)
		return jsonOK(pi)
	case post && at(3, "payment_intents", "*", "capture"):
		pi := s.intent(seg[1])
		if pi == nil {
			return missing("payment_intent", seg[1])
		}
		a, given, valid := amountOf(form, "amount_to_capture")
		if !given {
			a = pi.AmountCapturable
		}
		if pi.Status != "requires_capture" || !valid || a > pi.AmountCapturable {
			return invalid("This PaymentIntent could not be captured")
		}
		pi.AmountReceived += a
		pi.AmountCapturable -= a
		if form.Get("final_capture") != "false" || pi.AmountCapturable == 0 {
			pi.Status, pi.AmountCapturable = "succeeded", 0
		}
		s.move("capture", pi.ID, pi.Currency, a)
		return jsonOK(pi)
	case post && at(3, "payment_intents", "*", "increment_authorization"):
		pi := s.intent(seg[1])
		if pi == nil {
			return missing("payment_intent", seg[1])
		}
		a, _, valid := amountOf(form, "amount")
		if pi.Status != "requires_capture" || !valid || a < pi.Amount {
			return invalid("This PaymentIntent's authorization could not be incremented")
		}
		pi.Amount, pi.AmountCapturable = a, a
		return jsonOK(pi)
	case post && at(3, "payment_intents", "*", "cancel"):
		pi := s.intent(seg[1])
		if pi == nil {
			return missing("payment_intent", seg[1])
		}
		pi.Status, pi.AmountCapturable = "canceled", 0
		return jsonOK(pi)

	case post && at(1, "charges"):
		a, _, valid := amountOf(form, "amount")
		if !valid || a < 1 || len(cur) != 3 {
			return invalid("Invalid amount or currency")
		}
		ch := &Charge{ID: s.id("ch"), Object: "charge", Amount: a, Currency: cur, Status: "succeeded", Captured: form.Get("capture") != "false"}
		if ch.Captured {
			ch.AmountCaptured = a
			s.move("charge", ch.ID, cur, a)
		}
		s.charges[ch.ID] = ch
		return jsonOK(ch)
	case !post && at(2, "charges", "*"):
		if ch := s.charges[seg[1]]; ch != nil {
			return jsonOK(ch)
		}
		return missing("charge", seg[1])
	case post && at(3, "charges", "*", "capture"):
		ch := s.charges[seg[1]]
		if ch == nil {
			return missing("charge", seg[1])
		}
		a, given, valid := amountOf(form, "amount")
		if !given {
			a = ch.Amount
		}
		if ch.Captured || !valid || a > ch.Amount {
			return invalid("This charge could not be captured")
		}
		ch.Captured, ch.AmountCaptured = true, a
		s.move("capture", ch.ID, ch.Currency, a)
		return jsonOK(ch)
	case post && (at(1, "refunds") || at(3, "charges", "*", "refunds") || at(3, "charges", "*", "refund")):
		chargeID, piID := form.Get("charge"), form.Get("payment_intent")
		if len(seg) == 3 {
			chargeID = seg[1]
		}
		a, given, valid := amountOf(form, "amount")
		if !valid {
			return invalid("Invalid integer: amount")
		}
		var currency string
		var rest int64
		var add func(int64)
		switch {
		case chargeID != "" && s.charges[chargeID] != nil:
			ch := s.charges[chargeID]
			currency, rest = ch.Currency, ch.AmountCaptured-ch.AmountRefunded
			add = func(n int64) { ch.AmountRefunded += n }
		case piID != "" && s.intent(piID) != nil:
			pi := s.intent(piID)
			currency, rest = pi.Currency, pi.AmountReceived-pi.refunded
			add = func(n int64) { pi.refunded += n }
		default:
			return missing("charge", chargeID+piID)
		}
		if !given {
			a = rest
		}
		if a < 1 || a > rest {
			return invalid("Refund amount is greater than the unrefunded amount")
		}
		add(a)
		id := s.id("re")
		s.move("refund", id, currency, a)
		return jsonOK(map[string]any{"id": id, "object": "refund", "amount": a, "currency": currency, "status": "succeeded"})

	case post && (at(1, "transfers") || at(1, "payouts") || at(1, "topups") ||
		at(2, "treasury", "outbound_payments") || at(2, "treasury", "outbound_transfers")):
		a, _, valid := amountOf(form, "amount")
		if !valid || a < 1 || len(cur) != 3 {
			return invalid("Invalid amount or currency")
		}
		kind := strings.TrimSuffix(seg[len(seg)-1], "s")
		prefix := map[string]string{"transfer": "tr", "payout": "po", "topup": "tu", "outbound_payment": "obp", "outbound_transfer": "obt"}[kind]
		id := s.id(prefix)
		if kind == "transfer" {
			s.transfers[id] = &transfer{ID: id, Object: "transfer", Amount: a, Currency: cur}
		}
		s.move(kind, id, cur, a)
		return jsonOK(map[string]any{"id": id, "object": kind, "amount": a, "currency": cur})
	case !post && at(2, "transfers", "*"):
		if tr := s.transfers[seg[1]]; tr != nil {
			return jsonOK(tr)
		}
		return missing("transfer", seg[1])
	case post && at(3, "transfers", "*", "reversals"):
		tr := s.transfers[seg[1]]
		if tr == nil {
			return missing("transfer", seg[1])
		}
		a, given, valid := amountOf(form, "amount")
		if !given {
			a = tr.Amount - tr.AmountReversed
		}
		if !valid || a < 1 || a > tr.Amount-tr.AmountReversed {
			return invalid("Invalid reversal amount")
		}
		tr.AmountReversed += a
		id := s.id("trr")
		s.move("reversal", id, tr.Currency, a)
		return jsonOK(map[string]any{"id": id, "object": "transfer_reversal", "amount": a, "currency": tr.Currency})

	case post && at(3, "customers", "*", "balance_transactions"):
		a, err := strconv.ParseInt(form.Get("amount"), 10, 64)
		if err != nil || len(cur) != 3 {
			return invalid("Invalid amount or currency")
		}
		id := s.id("cbtxn")
		s.move("balance", id, cur, max(a, -a))
		return jsonOK(map[string]any{"id": id, "object": "customer_balance_transaction", "amount": a, "currency": cur})
	case post && at(1, "customers"):
		return jsonOK(map[string]any{"id": s.id("cus"), "object": "customer", "email": form.Get("email")})
	case post && at(1, "invoiceitems"):
		a, err := strconv.ParseInt(form.Get("amount"), 10, 64)
		if err != nil {
			unit, _ := strconv.ParseInt(form.Get("unit_amount"), 10, 64)
			qty, qerr := strconv.ParseInt(form.Get("quantity"), 10, 64)
			if qerr != nil {
				qty = 1
			}
			a = unit * qty
		}
		s.items[form.Get("customer")] = append(s.items[form.Get("customer")], a)
		return jsonOK(map[string]any{"id": s.id("ii"), "object": "invoiceitem", "amount": a, "currency": cur, "customer": form.Get("customer")})
	case post && at(1, "invoices"):
		inv := &invoice{ID: s.id("in"), Object: "invoice", Currency: "usd", Status: "draft", Customer: form.Get("customer")}
		for _, a := range s.items[inv.Customer] {
			inv.AmountDue += a
		}
		delete(s.items, inv.Customer)
		inv.AmountRemaining = inv.AmountDue
		s.invoices[inv.ID] = inv
		return jsonOK(inv)
	case !post && at(2, "invoices", "*"):
		if inv := s.invoices[seg[1]]; inv != nil {
			return jsonOK(inv)
		}
		return missing("invoice", seg[1])
	case post && at(3, "invoices", "*", "pay"):
		inv := s.invoices[seg[1]]
		if inv == nil {
			return missing("invoice", seg[1])
		}
		if inv.Status == "paid" {
			return invalid("Invoice is already paid")
		}
		s.move("invoice", inv.ID, inv.Currency, inv.AmountRemaining)
		inv.AmountPaid, inv.AmountRemaining, inv.Status = inv.AmountPaid+inv.AmountRemaining, 0, "paid"
		return jsonOK(inv)

	// What Keybrake must never forward: credentials and unbounded money.
	case post && at(1, "ephemeral_keys"):
		return jsonOK(map[string]any{"id": s.id("ephkey"), "object": "ephemeral_key", "secret": "ek_test_SANDBOXsecret"})
	case post && (at(1, "subscriptions") || at(1, "payment_links") || at(2, "checkout", "sessions")):
		id := s.id(strings.ReplaceAll(seg[len(seg)-1], "_", ""))
		s.move("unbounded", id, "usd", Unbounded)
		return jsonOK(map[string]any{"id": id, "object": seg[len(seg)-1]})
	}
	return 0, nil, false
}

// Authorize confirms a manual PaymentIntent as its creator would, outside
// any key: it can then be captured.
func (s *Stripe) Authorize(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pi := s.intent(id); pi != nil {
		s.confirm(pi)
	}
}
