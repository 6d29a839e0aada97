package kbtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	plainOnce sync.Once
	plainPath string
	plainErr  error
)

// PlainBinary builds cmd/keybrake once per test process without -race,
// whatever the tests run with: what memory drills measure is the server,
// not the race detector's shadow memory (5 to 10 times the heap).
func PlainBinary(t testing.TB) string {
	t.Helper()
	plainOnce.Do(func() {
		dir, err := os.MkdirTemp("", "keybrake-plain-")
		if err != nil {
			plainErr = err
			return
		}
		plainPath = filepath.Join(dir, "keybrake")
		cmd := exec.Command("go", "build", "-o", plainPath, "github.com/keybrake/keybrake/cmd/keybrake")
		cmd.Dir = moduleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			plainErr = &buildError{out: string(out), err: err}
		}
	})
	if plainErr != nil {
		t.Fatalf("building keybrake: %v", plainErr)
	}
	return plainPath
}
