package proxy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keybrake/keybrake"
)

// writeError sends a refusal in the vendor's error shape (Keybrake's own
// when the vendor is not known yet).
func (p *Proxy) writeError(w http.ResponseWriter, c *call, reply *keybrake.ErrorReply) {
	c.status, c.code = reply.Status(), reply.Code
	if c.outcome == "" {
		c.outcome = keybrake.DeniedOutcome(reply.Code)
	}
	var body any = reply
	h := w.Header()
	if c.vendor != nil {
		var extra http.Header
		extra, body = c.vendor.ErrorResponse(reply)
		for k, v := range extra {
			h[k] = v
		}
	}
	b, err := json.Marshal(body)
	if err != nil {
		b = []byte(`{"code":"internal_error","message":"error body could not be encoded"}`)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	p.setKeybrakeHeaders(h, c)
	w.WriteHeader(reply.Status())
	w.Write(b) //nolint:errcheck // the client may have gone
}

// setKeybrakeHeaders adds the key id, the call id and the key's spend and
// headroom after this call, and marks the answers of sandboxed vendors.
func (p *Proxy) setKeybrakeHeaders(h http.Header, c *call) {
	if c.vendor != nil && slices.Contains(p.cfg.Sandboxed, c.vendor.Name()) {
		h.Set("Keybrake-Sandbox", "true") // a local stand-in answered, not the vendor
	}
	if c.decision.CallID != 0 {
		h.Set("Keybrake-Call-Id", strconv.FormatInt(c.decision.CallID, 10))
	}
	if c.key == nil {
		return
	}
	h.Set("Keybrake-Key-Id", c.key.ID)
	if c.usage != nil {
		h.Set("Keybrake-Spent-Usd", c.usage.Spent.String())
		h.Set("Keybrake-Remaining-Usd", c.key.Remaining(*c.usage).String())
	}
}

// credential extracts the presented vault key: Bearer, or HTTP Basic with
// the key as user name (Stripe SDKs) or as password (twilio-go, which sends
// an account SID as user name).
func credential(r *http.Request) (string, bool) {
	auth := r.Header.Get("Authorization")
	scheme, value, ok := strings.Cut(auth, " ")
	if !ok {
		return "", false
	}
	switch strings.ToLower(scheme) {
	case "bearer":
		value = strings.TrimSpace(value)
		return value, keybrake.WellFormedVaultKey(value)
	case "basic":
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value))
		if err != nil {
			return "", false
		}
		user, pass, _ := strings.Cut(string(raw), ":")
		if keybrake.WellFormedVaultKey(user) {
			return user, true
		}
		if keybrake.WellFormedVaultKey(pass) {
			return pass, true
		}
	}
	return "", false
}

// lookupKey finds a key's policy, from the cache when possible. A key's
// policy never changes after issue; its status is not cached (the ledger
// re-reads it in every decision), so no cache outlives a revoke.
func (p *Proxy) lookupKey(ctx context.Context, secret string) (*keybrake.Key, error) {
	hash := keybrake.HashSecret(secret)
	if k := p.keys.get(hash); k != nil {
		return k, nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DecisionTimeout)
	defer cancel()
	k, err := p.cfg.Ledger.KeyByHash(ctx, hash)
	if errors.Is(err, keybrake.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	p.keys.put(hash, k)
	return k, nil
}

// keyCache holds immutable key policies by secret hash. When full it is
// simply emptied: correctness never depends on it.
type keyCache struct {
	mu  sync.RWMutex
	max int
	m   map[string]*keybrake.Key
}

func newKeyCache(max int) *keyCache { return &keyCache{max: max, m: map[string]*keybrake.Key{}} }

func (kc *keyCache) get(hash string) *keybrake.Key {
	kc.mu.RLock()
	defer kc.mu.RUnlock()
	return kc.m[hash]
}

func (kc *keyCache) put(hash string, k *keybrake.Key) {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if len(kc.m) >= kc.max {
		kc.m = map[string]*keybrake.Key{}
	}
	kc.m[hash] = k
}

// logCall writes the one log line of a proxied request. Its fields are an
// allow-list: no header values, no bodies, no query strings, no secrets.
func (p *Proxy) logCall(c *call) {
	p.observe(c)
	attrs := []slog.Attr{
		slog.String("method", c.method),
		slog.String("path", truncate(c.path, 256)),
		slog.Int("status", c.status),
		slog.String("outcome", string(c.outcome)),
		slog.Int64("latency_ms", time.Since(c.start).Milliseconds()),
	}
	if c.key != nil {
		attrs = append(attrs, slog.String("key_id", c.key.ID), slog.String("vendor", c.key.Vendor))
	}
	if c.decision.CallID != 0 {
		attrs = append(attrs, slog.Int64("call_id", c.decision.CallID))
	}
	if c.op != nil {
		attrs = append(attrs, slog.String("operation", c.op.Name))
	}
	if c.rule != "" {
		attrs = append(attrs, slog.String("rule", c.rule))
	}
	if c.code != "" {
		attrs = append(attrs, slog.String("code", string(c.code)))
	}
	if c.quote != nil {
		attrs = append(attrs, slog.String("estimated_usd", c.decision.Reserved.String()), slog.String("actual_usd", c.actual.String()))
	}
	if c.objectID != "" {
		attrs = append(attrs, slog.String("object_id", c.objectID))
	}
	if c.item != "" {
		attrs = append(attrs, slog.String("item", c.item))
	}
	p.log.LogAttrs(context.Background(), slog.LevelInfo, "proxied request", attrs...)
}
