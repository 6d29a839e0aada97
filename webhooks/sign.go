// Package webhooks delivers Keybrake's events from the store's outbox to
// the receivers admins registered: signed like Stripe's webhooks, with a
// timeout, retried with exponential backoff for at least a day, each
// attempt recorded. The proxy never waits for it: events are rows written
// by the ledger's own transactions, and this worker polls for them.
package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader carries t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
// "<t>.<raw body>")>, Stripe's scheme, so existing verifier code works.
const SignatureHeader = "Keybrake-Signature"

// Sign returns the SignatureHeader value for body sent at t.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + mac(secret, ts, body)
}

func mac(secret, ts string, body []byte) string {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// Errors of Verify.
var (
	ErrNoSignature  = errors.New("no valid v1 signature")
	ErrTooOld       = errors.New("signature timestamp outside the tolerance")
	ErrBadSignature = errors.New("signature does not match the body")
)

// Verify checks a SignatureHeader value against the raw body as received,
// in constant time, and refuses a timestamp further than tolerance from now
// (replays of an old delivery). Receivers written in Go can use it as is;
// docs/operations.md shows the same check in a few lines of other languages.
func Verify(header string, body []byte, secret string, tolerance time.Duration, now time.Time) error {
	var ts string
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		switch {
		case !ok:
		case k == "t":
			ts = v
		case k == "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrNoSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: signed at %s", ErrTooOld, time.Unix(sec, 0).UTC().Format(time.RFC3339))
	}
	want := []byte(mac(secret, ts, body))
	for _, s := range sigs {
		if hmac.Equal([]byte(s), want) {
			return nil
		}
	}
	return ErrBadSignature
}
