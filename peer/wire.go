package peer

import (
	"context"
	"errors"
	"time"

	"github.com/keybrake/keybrake"
)

// The peer protocol: net/rpc with its gob codec, over a TCP connection
// that an authenticated HTTP CONNECT to rpcPath turns over. gob carries
// keybrake's ledger types whole (every field, tags or not), so a field
// added to Attempt or Settlement travels without a wire type to keep in
// step; it only refuses interface values, so an *keybrake.Error's cause
// (kept for logs, never shown to clients) stays on the replica that made
// it.
const (
	rpcPath     = "/_keybrake/peer/v1"
	decideCall  = "Ledger.Decide"
	settleCall  = "Ledger.Settle"
	connectedOK = "200 Connected to Keybrake peer"
)

// DecideArgs is one decision asked of a key's owner. Timeout is what is
// left of the asking replica's deadline (its decision timeout, bounded by
// its instance lease); the owner decides within it or not at all.
type DecideArgs struct {
	Attempt keybrake.Attempt
	Timeout time.Duration
}

// DecideReply is the owner's answer: its store's decision, or the error
// that stopped it.
type DecideReply struct {
	Decision keybrake.Decision
	Err      *wireError
}

// SettleArgs is one settlement sent to the owner of the call's key.
type SettleArgs struct {
	Settlement keybrake.Settlement
	Timeout    time.Duration
}

// SettleReply is the owner's answer to a settlement.
type SettleReply struct {
	Usage keybrake.Usage
	Err   *wireError
}

// wireError is an error of the owner's store as the asking replica must
// see it: the client-facing code and message if it was a *keybrake.Error,
// and the sentinels the proxy tests with errors.Is.
type wireError struct {
	Text        string
	KB          bool
	Code        keybrake.Code
	Message     string
	Field       string
	Unavailable bool
	NotFound    bool
	Deadline    bool
}

func toWire(err error) *wireError {
	if err == nil {
		return nil
	}
	w := &wireError{Text: err.Error(),
		Unavailable: errors.Is(err, keybrake.ErrStoreUnavailable),
		NotFound:    errors.Is(err, keybrake.ErrNotFound),
		Deadline:    errors.Is(err, context.DeadlineExceeded)}
	var ke *keybrake.Error
	if errors.As(err, &ke) {
		w.KB, w.Code, w.Message, w.Field = true, ke.Code, ke.Message, ke.Field
	}
	return w
}

// err rebuilds the owner's error on the asking replica.
func (w *wireError) err() error {
	if w == nil {
		return nil
	}
	r := &remoteError{text: w.Text}
	if w.Unavailable {
		r.is = append(r.is, keybrake.ErrStoreUnavailable)
	}
	if w.NotFound {
		r.is = append(r.is, keybrake.ErrNotFound)
	}
	if w.Deadline {
		r.is = append(r.is, context.DeadlineExceeded)
	}
	if w.KB {
		return &keybrake.Error{Code: w.Code, Message: w.Message, Field: w.Field, Err: r}
	}
	return r
}

// remoteError is an error that happened on the owner: its text, and the
// sentinels it wrapped there.
type remoteError struct {
	text string
	is   []error
}

func (e *remoteError) Error() string   { return "on the key's owner: " + e.text }
func (e *remoteError) Unwrap() []error { return e.is }

// bare drops an *keybrake.Error's cause, which gob cannot carry (an
// interface) and which is for the local log only.
func bare(e *keybrake.Error) *keybrake.Error {
	if e == nil || e.Err == nil {
		return e
	}
	c := *e
	c.Err = nil
	return &c
}
