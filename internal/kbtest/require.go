package kbtest

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under .ci/run, where a missing tool is
// a failure, not a reason to skip.
func InCI() bool { return os.Getenv("CI") != "" }

// RequireTool finds an executable on PATH. Outside CI a missing tool skips
// the test with the install hint; in CI it fails it.
func RequireTool(t testing.TB, name, installHint string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if InCI() {
			t.Fatalf("%s not found on PATH in CI (%s)", name, installHint)
		}
		t.Skipf("%s not found on PATH; install it with: %s", name, installHint)
	}
	return p
}

// PostgresURL returns KEYBRAKE_TEST_POSTGRES_URL. Outside CI an unset
// variable skips the test; in CI it fails it.
func PostgresURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("KEYBRAKE_TEST_POSTGRES_URL")
	if u == "" {
		if InCI() {
			t.Fatal("KEYBRAKE_TEST_POSTGRES_URL is not set in CI")
		}
		t.Skip("set KEYBRAKE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable to run the PostgreSQL tests")
	}
	return u
}
