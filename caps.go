package keybrake

// CapCheck is the result of checking one amount against a key's caps: the
// amount that may be reserved, or the cap it would break.
type CapCheck struct {
	// Amount is what the call reserves (after a flexible reservation shrank
	// it to fit). It is the asked amount when the check failed.
	Amount Micros
	// Cap names the cap that would be exceeded ("per_call", "daily",
	// "total"); empty when Amount fits.
	Cap   string
	Limit Micros // the cap's value, when Cap is set
	Used  Micros // what was already spent or reserved against it
}

// OK reports whether the amount fits every cap.
func (c CapCheck) OK() bool { return c.Cap == "" }

// Err is the cap_exhausted refusal for a failed check, nil when it passed.
func (c CapCheck) Err() *Error {
	if c.OK() {
		return nil
	}
	return Errorf(CodeCapExhausted,
		"%s cap of $%s would be exceeded: $%s already spent or reserved, this call needs $%s",
		c.Cap, c.Limit, c.Used, c.Amount)
}

// Headroom is the most the key may reserve for one call now: Remaining,
// bounded by the per-call cap.
func (k *Key) Headroom(u Usage) Micros {
	h := k.Remaining(u)
	if k.MaxPerCall > 0 {
		h = min(h, k.MaxPerCall)
	}
	return h
}

// CheckCaps decides whether a call asking want may reserve it on top of
// usage u. It is pure arithmetic on the key's policy and running totals, so
// a store may apply it to many calls in one transaction, in arrival order,
// each against the totals the ones before it left (see store/sqlstore's
// batcher). With step > 0 the reservation is flexible: want shrinks by whole
// steps to what the caps leave, but not below floor. Caps are checked
// per call, then daily, then lifetime, and sums saturate (AddCapped) so an
// overflow can never pass a cap.
func (k *Key) CheckCaps(u Usage, want, step, floor Micros) CapCheck {
	if want <= 0 {
		return CapCheck{}
	}
	if step > 0 {
		if head := k.Headroom(u); want > head {
			steps := (want - head + step - 1) / step
			want = max(want-steps*step, floor)
		}
	}
	c := CapCheck{Amount: want}
	switch {
	case k.MaxPerCall > 0 && want > k.MaxPerCall:
		c.Cap, c.Limit = "per_call", k.MaxPerCall
	case AddCapped(u.SpentToday+u.ReservedToday, want) > k.DailyCap:
		c.Cap, c.Limit, c.Used = "daily", k.DailyCap, u.SpentToday+u.ReservedToday
	case k.TotalCap > 0 && AddCapped(u.Spent+u.Reserved, want) > k.TotalCap:
		c.Cap, c.Limit, c.Used = "total", k.TotalCap, u.Spent+u.Reserved
	}
	return c
}

// Charge is what a settled call finally counts, given what it reserved:
// the single place the vendor's answer is turned into money, used by the
// proxy (for its reply headers and metrics) and by the store (for the
// ledger), so the two can never disagree. An unknown outcome keeps the
// reservation as spend (never under-count), a 2xx costs its Actual, any
// other definite answer releases the reservation.
func (st Settlement) Charge(reserved Micros) Micros {
	switch {
	case st.Outcome == OutcomeUnknown:
		return reserved
	case st.Status >= 200 && st.Status < 300:
		return st.Actual
	default:
		return 0
	}
}
