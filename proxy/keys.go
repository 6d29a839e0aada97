package proxy

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/keybrake/keybrake"
)

// credential extracts the presented vault key: Bearer, or HTTP Basic with
// the key as user name (Stripe SDKs) or as password (twilio-go, which sends
// an account SID as user name).
func credential(r interface{ Get(string) string }) (string, bool) {
	auth := r.Get("Authorization")
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

// lookupKey finds a key's policy by secret hash, from the cache when
// possible. A key's policy never changes after issue; its status is not
// cached as live (the ledger re-reads it in every decision), so no cache
// outlives a revoke.
func (p *Proxy) lookupKey(ctx context.Context, hash string) (*keybrake.Key, error) {
	if k := p.keys.get(hash); k != nil {
		return k, nil
	}
	if p.keys.isUnknown(hash) {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DecisionTimeout)
	defer cancel()
	k, err := p.cfg.Ledger.KeyByHash(ctx, hash)
	if errors.Is(err, keybrake.ErrNotFound) {
		p.keys.markUnknown(hash)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	p.keys.put(hash, k)
	return k, nil
}

// keyCache holds immutable key policies by secret hash, and remembers the
// keys the ledger called revoked (a revocation is final), so that their
// next requests are refused before their bodies are read. It also
// remembers hashes the ledger did not know, so a flood of one unknown key
// costs no store read each: that is safe because a vault key's secret is
// random and first shown by the answer to the committed issue, so no one
// can present it before its key exists, on any replica. When full a map is
// simply emptied: correctness never depends on it.
type keyCache struct {
	mu      sync.RWMutex
	max     int
	m       map[string]*cachedKey
	unknown map[string]struct{}
}

type cachedKey struct {
	key     *keybrake.Key
	revoked atomic.Bool
}

func newKeyCache(max int) *keyCache {
	return &keyCache{max: max, m: map[string]*cachedKey{}, unknown: map[string]struct{}{}}
}

func (kc *keyCache) isUnknown(hash string) bool {
	kc.mu.RLock()
	defer kc.mu.RUnlock()
	_, ok := kc.unknown[hash]
	return ok
}

func (kc *keyCache) markUnknown(hash string) {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if len(kc.unknown) >= kc.max {
		kc.unknown = map[string]struct{}{}
	}
	kc.unknown[hash] = struct{}{}
}

func (kc *keyCache) get(hash string) *keybrake.Key {
	kc.mu.RLock()
	defer kc.mu.RUnlock()
	if e := kc.m[hash]; e != nil {
		return e.key
	}
	return nil
}

func (kc *keyCache) put(hash string, k *keybrake.Key) {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if len(kc.m) >= kc.max {
		kc.m = map[string]*cachedKey{}
	}
	if _, ok := kc.m[hash]; !ok {
		kc.m[hash] = &cachedKey{key: k}
	}
}

// revoked reports whether the ledger already called the key revoked.
func (kc *keyCache) revoked(hash string) bool {
	kc.mu.RLock()
	defer kc.mu.RUnlock()
	e := kc.m[hash]
	return e != nil && e.revoked.Load()
}

func (kc *keyCache) markRevoked(hash string) {
	kc.mu.RLock()
	defer kc.mu.RUnlock()
	if e := kc.m[hash]; e != nil {
		e.revoked.Store(true)
	}
}
