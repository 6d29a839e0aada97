package webhooks

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// A webhook's signing secret must be readable by every replica that
// delivers, so it is kept in the store, not hashed. With a key from the
// environment (KEYBRAKE_SECRETS_KEY, 32 random bytes) it is sealed with
// AES-256-GCM, the webhook id as associated data (a sealed secret copied to
// another row does not open); without one it is stored as is, marked
// "plain:", and the server says so at start.

// Sealer seals and opens webhook secrets.
type Sealer struct{ aead cipher.AEAD }

// ErrNoKey is returned when opening a sealed secret without a key.
var ErrNoKey = errors.New("the webhook secret is sealed and no KEYBRAKE_SECRETS_KEY is set")

// NewSealer builds a Sealer from a 32-byte key; nil stores secrets plain.
func NewSealer(key []byte) (*Sealer, error) {
	if key == nil {
		return &Sealer{}, nil
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("the secrets key must be 32 bytes, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// ParseKey reads KEYBRAKE_SECRETS_KEY: 64 hex characters (openssl rand -hex
// 32) or the base64 of 32 bytes. Empty means no key.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	return nil, errors.New("KEYBRAKE_SECRETS_KEY must be 32 bytes as 64 hex characters (openssl rand -hex 32) or base64")
}

// Sealed reports whether secrets are encrypted at rest.
func (s *Sealer) Sealed() bool { return s != nil && s.aead != nil }

// Seal returns the stored form of a webhook's secret.
func (s *Sealer) Seal(webhookID, secret string) (string, error) {
	if !s.Sealed() {
		return "plain:" + secret, nil
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	ct := s.aead.Seal(nonce, nonce, []byte(secret), []byte(webhookID))
	return "v1:" + base64.RawURLEncoding.EncodeToString(ct), nil
}

// Open returns the secret from its stored form. Secrets stored plain open
// with or without a key, so setting a key later keeps old webhooks working.
func (s *Sealer) Open(webhookID, stored string) (string, error) {
	if secret, ok := strings.CutPrefix(stored, "plain:"); ok {
		return secret, nil
	}
	b64, ok := strings.CutPrefix(stored, "v1:")
	if !ok {
		return "", errors.New("the stored webhook secret has an unknown format")
	}
	if !s.Sealed() {
		return "", ErrNoKey
	}
	ct, err := base64.RawURLEncoding.DecodeString(b64)
	n := s.aead.NonceSize()
	if err != nil || len(ct) < n {
		return "", errors.New("the stored webhook secret is corrupt")
	}
	pt, err := s.aead.Open(nil, ct[:n], ct[n:], []byte(webhookID))
	if err != nil {
		return "", errors.New("the webhook secret does not open with this KEYBRAKE_SECRETS_KEY (it was sealed with another key)")
	}
	return string(pt), nil
}
