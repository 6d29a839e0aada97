package keybrake

import (
	"strings"
	"testing"
)

func TestVaultKey(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		k := NewVaultKey()
		if len(k) != VaultKeyLength || !strings.HasPrefix(k, VaultKeyPrefix) {
			t.Fatalf("key %q: want %d chars with prefix %s", k, VaultKeyLength, VaultKeyPrefix)
		}
		for _, c := range k {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
				t.Fatalf("key %q has %q: vault keys are letters and digits only (twilio-go)", k, c)
			}
		}
		if !WellFormedVaultKey(k) {
			t.Fatalf("fresh key %q is not well-formed", k)
		}
		if seen[k] {
			t.Fatal("duplicate vault key")
		}
		seen[k] = true
		// A one-character typo breaks the checksum.
		b := []byte(k)
		i := len(VaultKeyPrefix) + 5
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		if WellFormedVaultKey(string(b)) {
			t.Fatalf("corrupted key %q passed the checksum", b)
		}
	}
	for _, bad := range []string{"", "kbvk", "sk_test_123", strings.Repeat("a", VaultKeyLength), "kbvk" + strings.Repeat("0", VaultKeyLength-4)} {
		if WellFormedVaultKey(bad) {
			t.Errorf("WellFormedVaultKey(%q) = true", bad)
		}
	}
	if HashSecret("a") == HashSecret("b") || len(HashSecret("a")) != 64 {
		t.Error("HashSecret must be a 64-hex-digit SHA-256")
	}
	if !SecretsEqual("token", "token") || SecretsEqual("token", "token2") {
		t.Error("SecretsEqual")
	}
}
