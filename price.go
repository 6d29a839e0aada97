package keybrake

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// Pricer prices one call of an operation before it is forwarded. The generic
// models live in package pricing, the vendor-specific ones next to each
// vendor's catalogue. A call whose price cannot be worked out is refused
// (unpriceable_request, currency_not_priced, lookup_failed): never
// forwarded unpriced.
type Pricer interface {
	Price(ctx context.Context, c *PriceCall) (*Quote, error)
	// Describe says in a few words what a call costs ("amount × FX of
	// currency"), for `keybrake pricing`.
	Describe() string
}

// PriceCall is what a Pricer sees of a call.
type PriceCall struct {
	Op     *Operation
	Method string
	Path   string   // the client's vendor path
	Params []string // the path's values for the pattern's "*" segments, in order
	Query  string
	Header http.Header
	// Body is what will be forwarded (after the vendor's re-encoding: Stripe
	// JSON becomes form encoding), and Form its parameters when it is
	// form-encoded.
	Body []byte
	Form url.Values
	// Fetch reads an object from the vendor with the real credential, for
	// lookup pricing.
	Fetch Fetcher
}

// Fetcher reads a vendor object before a call is priced (a PaymentIntent's
// amount before it is confirmed). It is declared here and implemented by the
// proxy, over the same transport, bounded in time and size.
type Fetcher interface {
	// Fetch GETs a vendor path and returns a 2xx answer's body, or a
	// *FetchError for another status, or the transport's error.
	Fetch(ctx context.Context, path string) ([]byte, error)
}

// FetchError is a lookup the vendor answered with a non-2xx status.
type FetchError struct {
	Path   string
	Status int
	Body   []byte
}

func (e *FetchError) Error() string {
	return fmt.Sprintf("GET %s answered %d", e.Path, e.Status)
}

// Quote is a priced call: what to reserve, and how to settle it.
type Quote struct {
	// Amount is the most the call can move: what it reserves.
	Amount Micros
	// Step, when greater than zero, makes the reservation flexible: the
	// ledger may reserve Amount − k·Step for the smallest k ≥ 0 that fits the
	// key's caps, but not less than Floor (a bounded call then runs for what
	// was reserved, see Finalize).
	Step  Micros
	Floor Micros
	// ObjectID names the existing vendor object the call acts on. With
	// Exposure, Amount is the most that object can move after the call, and
	// the call reserves only what this key has not counted on it yet:
	// max(0, Amount − counted), where counted sums the key's calls on the
	// object that were not released. (Create small, update up, confirm:
	// the update reserves the difference, the confirm nothing more.)
	ObjectID string
	Exposure bool
	// Finalize returns the body to forward, given what the ledger reserved
	// (a bounded call's TimeLimit); nil forwards the body as priced.
	Finalize func(reserved Micros) ([]byte, error)
	// Settle reads what a 2xx answer says was moved; nil, or ok=false for
	// an unreadable answer, leaves the reservation standing as the cost.
	Settle func(resp *VendorResponse) (actual Micros, ok bool)
}

// Quote prices a call of the operation: the operation's pricer, plus its
// fixed price from the pricing file. Forbidden operations and fixed ones
// without a price are refused here, whatever a caller did before.
func (o *Operation) Quote(ctx context.Context, c *PriceCall) (*Quote, error) {
	switch {
	case o.Model == ModelForbidden:
		return nil, Errorf(CodeOperationForbidden, "%s (%s %s) is never forwarded by Keybrake: %s", o.Name, o.Method, o.Path(), o.Note)
	case o.Model == ModelFixed && !o.HasFixed:
		return nil, Errorf(CodeUnpriceableRequest, "%s (%s %s) has no price: %s; set operations.%s.fixed in the pricing file to allow it",
			o.Name, o.Method, o.Path(), o.Note, o.FullName())
	}
	c.Op = o
	q := &Quote{}
	if o.Pricer != nil {
		var err error
		if q, err = o.Pricer.Price(ctx, c); err != nil {
			return nil, err
		}
	}
	if o.HasFixed && o.Fixed > 0 {
		fixed := o.Fixed
		q.Amount = AddCapped(q.Amount, fixed)
		if q.Step > 0 {
			q.Floor = AddCapped(q.Floor, fixed)
		}
		if settle := q.Settle; settle != nil {
			q.Settle = func(resp *VendorResponse) (Micros, bool) {
				m, ok := settle(resp)
				return AddCapped(m, fixed), ok
			}
		}
		if finalize := q.Finalize; finalize != nil {
			q.Finalize = func(reserved Micros) ([]byte, error) { return finalize(reserved - fixed) }
		}
	}
	if q.Step > 0 && (q.Floor < q.Step || q.Floor > q.Amount) {
		return nil, fmt.Errorf("%s: a flexible quote reserves between one step and its amount", o.FullName())
	}
	return q, nil
}
