package keybrake

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"hash/crc32"
	"math/big"
	"strings"
)

// Vault keys look like "kbvk" + 43 base62 characters (256 random bits) + 6
// base62 characters of CRC32 checksum. Letters and digits only, because
// twilio-go refuses any other character in a credential; a fixed prefix and
// a checksum so secret scanners can recognise a leaked key without a
// database lookup, and so the proxy can reject typos without one either.
const (
	VaultKeyPrefix = "kbvk"
	vaultKeyBody   = 43
	vaultKeyCheck  = 6
	VaultKeyLength = len(VaultKeyPrefix) + vaultKeyBody + vaultKeyCheck
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// IssuerTokenPrefix starts scoped issuer tokens; same shape as vault keys.
const IssuerTokenPrefix = "kbit"

// NewVaultKey returns a fresh vault key secret.
func NewVaultKey() string { return newSecret(VaultKeyPrefix) }

// WellFormedVaultKey checks the shape and checksum of a presented key.
func WellFormedVaultKey(s string) bool { return wellFormed(VaultKeyPrefix, s) }

// NewIssuerToken returns a fresh issuer token secret.
func NewIssuerToken() string { return newSecret(IssuerTokenPrefix) }

// WellFormedIssuerToken checks the shape and checksum of an issuer token.
func WellFormedIssuerToken(s string) bool { return wellFormed(IssuerTokenPrefix, s) }

func newSecret(prefix string) string {
	body := randomBase62(32, vaultKeyBody)
	return prefix + body + checksum(prefix+body)
}

func wellFormed(prefix, s string) bool {
	if len(s) != VaultKeyLength || !strings.HasPrefix(s, prefix) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(base62, s[i]) < 0 {
			return false
		}
	}
	n := len(s) - vaultKeyCheck
	return subtle.ConstantTimeCompare([]byte(checksum(s[:n])), []byte(s[n:])) == 1
}

// HashSecret is how vault keys (and admin-issued tokens) are stored and
// looked up: SHA-256, hex. The secrets carry 256 random bits, so a fast hash
// is enough; a database dump yields nothing usable.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// SecretsEqual compares two secrets in constant time. Both are hashed first
// so that neither the content nor the length of the expected secret leaks
// through timing.
func SecretsEqual(presented, expected string) bool {
	a := sha256.Sum256([]byte(presented))
	b := sha256.Sum256([]byte(expected))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// NewID returns a public identifier: prefix + 20 base62 characters (~119
// random bits). IDs are not secrets; they name keys in URLs and logs.
func NewID(prefix string) string {
	return prefix + randomBase62(16, 20)
}

func checksum(s string) string {
	return encodeBase62(new(big.Int).SetUint64(uint64(crc32.ChecksumIEEE([]byte(s)))), vaultKeyCheck)
}

func randomBase62(nbytes, width int) string {
	b := make([]byte, nbytes)
	if _, err := rand.Read(b); err != nil {
		panic("keybrake: crypto/rand failed: " + err.Error()) // never returns an error on supported platforms
	}
	return encodeBase62(new(big.Int).SetBytes(b), width)
}

// encodeBase62 writes n in base62, left-padded with '0' to width.
func encodeBase62(n *big.Int, width int) string {
	out := make([]byte, width)
	base := big.NewInt(62)
	mod := new(big.Int)
	for i := width - 1; i >= 0; i-- {
		n.DivMod(n, base, mod)
		out[i] = base62[mod.Int64()]
	}
	return string(out)
}
