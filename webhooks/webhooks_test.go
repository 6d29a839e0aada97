package webhooks

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// The signature matches an HMAC computed independently (Python's hmac):
// receivers in any language can verify it.
func TestSignKnownVector(t *testing.T) {
	body := []byte(`{"id":"evt_1"}`)
	got := Sign("whsec_test", time.Unix(1700000000, 0), body)
	want := "t=1700000000,v1=c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925"
	if got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
	now := time.Unix(1700000100, 0)
	if err := Verify(got, body, "whsec_test", 5*time.Minute, now); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	for _, tc := range []struct {
		name, header, secret string
		body                 []byte
		want                 error
	}{
		{"other secret", got, "whsec_other", body, ErrBadSignature},
		{"body changed", got, "whsec_test", []byte(`{"id":"evt_2"}`), ErrBadSignature},
		{"no signature", "t=1700000000", "whsec_test", body, ErrNoSignature},
		{"garbage", "nonsense", "whsec_test", body, ErrNoSignature},
		{"too old", Sign("whsec_test", now.Add(-time.Hour), body), "whsec_test", body, ErrTooOld},
	} {
		if err := Verify(tc.header, tc.body, tc.secret, 5*time.Minute, now); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A receiver rotating secrets may see several v1 values; one match is enough.
	multi := strings.Replace(got, ",v1=", ",v1=00,v1=", 1)
	if err := Verify(multi, body, "whsec_test", 5*time.Minute, now); err != nil {
		t.Errorf("several v1: %v", err)
	}
}

func TestSealer(t *testing.T) {
	key, err := ParseKey(strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Seal("wh_1", "whsec_secret")
	if err != nil || !strings.HasPrefix(sealed, "v1:") || strings.Contains(sealed, "whsec_secret") {
		t.Fatalf("Seal: %q %v", sealed, err)
	}
	if got, err := s.Open("wh_1", sealed); err != nil || got != "whsec_secret" {
		t.Fatalf("Open: %q %v", got, err)
	}
	if _, err := s.Open("wh_2", sealed); err == nil {
		t.Fatal("a sealed secret opened under another webhook id")
	}
	other, _ := ParseKey(strings.Repeat("cd", 32))
	s2, _ := NewSealer(other)
	if _, err := s2.Open("wh_1", sealed); err == nil {
		t.Fatal("opened with the wrong key")
	}
	plain, _ := NewSealer(nil)
	if _, err := plain.Open("wh_1", sealed); !errors.Is(err, ErrNoKey) {
		t.Fatalf("no key: %v", err)
	}
	p, _ := plain.Seal("wh_1", "whsec_x")
	if got, err := s.Open("wh_1", p); p != "plain:whsec_x" || err != nil || got != "whsec_x" {
		t.Fatalf("plain secrets open with a key set too: %q %q %v", p, got, err)
	}
	for _, bad := range []string{"short", strings.Repeat("a", 63), "zz" + strings.Repeat("a", 62)} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}

func TestPrivateAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1": true, "10.1.2.3": true, "172.16.0.1": true, "192.168.1.1": true, "169.254.169.254": true,
		"100.64.0.1": true, "0.0.0.0": true, "::1": true, "fe80::1": true, "fc00::1": true, "::ffff:127.0.0.1": true,
		"8.8.8.8": false, "1.1.1.1": false, "2606:4700::1111": false,
	} {
		if got := PrivateAddr(netip.MustParseAddr(addr)); got != want {
			t.Errorf("PrivateAddr(%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	w, err := New(Config{Outbox: nopOutbox{}, MinBackoff: 10 * time.Second, MaxBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for n, base := range map[int]time.Duration{1: 10 * time.Second, 2: 20 * time.Second, 3: 40 * time.Second, 10: time.Hour, 40: time.Hour} {
		for i := 0; i < 50; i++ {
			if d := w.backoff(n); d < base*8/10 || d > base*12/10 {
				t.Fatalf("backoff(%d) = %s, want %s ±20%%", n, d, base)
			}
		}
	}
}

type nopOutbox struct{ Outbox }
