package e2e

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keybrake/keybrake/internal/kbtest"
)

// quickstartMarker precedes the README's quick start block.
const quickstartMarker = "<!-- quickstart: e2e/quickstart_test.go runs this block as written -->"

// readmeBlock returns the ```sh block that follows marker in README.md.
func readmeBlock(t *testing.T, marker string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), marker+"\n```sh\n")
	if !ok {
		t.Fatalf("README.md has no ```sh block after %q", marker)
	}
	block, _, ok := strings.Cut(after, "\n```\n")
	if !ok {
		t.Fatal("the quick start block does not end")
	}
	return block + "\n"
}

// TestReadmeQuickStart runs the README's quick start, as written, with
// bash against a built keybrake in an empty directory: --sandbox, a key per
// vendor, the seed's JSON curl to Stripe, an SMS, an email, key show,
// calls, report, revoke, and the refused call after it. The one change is
// the port: 127.0.0.1:8080 becomes a free one, so the test never meets
// another process on 8080.
func TestReadmeQuickStart(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "openssl"} {
		kbtest.RequireTool(t, tool, "apt-get install -y "+tool)
	}
	script := readmeBlock(t, quickstartMarker)
	if n := strings.Count(script, "127.0.0.1:8080"); n < 2 {
		t.Fatalf("the quick start names 127.0.0.1:8080 %d times; the test rewrites the port it listens on", n)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().String()
	ln.Close()
	script = strings.ReplaceAll(script, "127.0.0.1:8080", port)

	dir := t.TempDir()
	if err := os.Symlink(kbtest.Binary(t), filepath.Join(dir, "keybrake")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the script and the server it starts
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	log, _ := os.ReadFile(filepath.Join(dir, "keybrake.log"))
	defer func() {
		if t.Failed() {
			t.Logf("stdout:\n%s\nstderr:\n%s\nkeybrake.log:\n%s", &stdout, &stderr, log)
		}
	}()
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }) //nolint:errcheck // gone already, if the script ended well
	if err != nil {
		t.Fatalf("the quick start failed: %v", err)
	}

	out := stdout.String()
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`"sandbox":true,"sandbox_vendors":\["stripe","twilio","resend"\],"status":"ok"`),
		regexp.MustCompile(`"id":"pi_sandbox_000001","object":"payment_intent","amount":100,.*"currency":"usd","customer":"cus_123"`),
		regexp.MustCompile(`"sid":"SM[0-9a-f]{32}",.*"to":"\+15005550006"`),
		regexp.MustCompile(`\{"id":"em_sandbox_000001"\}`),
		regexp.MustCompile(`spent_usd\s+\$1\.00\n`),
		regexp.MustCompile(`calls\s+1 \(1 allowed, 0 denied\)`),
		regexp.MustCompile(`(?m)^3 .* emails\.send\s+forwarded\s+200\s+\$0\.0009`),
		regexp.MustCompile(`(?m)^2 .* messages\.create\s+forwarded\s+201\s+\$0\.015`),
		regexp.MustCompile(`(?m)^1 .* payment_intents\.create\s+forwarded\s+200\s+\$1\.00\s+\$1\.00\s+pi_sandbox_000001`),
		regexp.MustCompile(`spent\s+\$1\.0159 \(reserved \$0\.00\)`),
		regexp.MustCompile(`calls\s+3 \(3 allowed, 0 denied;`),
		regexp.MustCompile(`vk_\w+ revoked at `),
		regexp.MustCompile(`"code":"key_revoked"`),
	} {
		if !want.MatchString(out) {
			t.Errorf("the quick start's output lacks %s", want)
		}
	}
	if strings.Count(out, "forwarded") != 3 {
		t.Errorf("calls lists %d forwarded calls, want 3", strings.Count(out, "forwarded"))
	}
	if !bytes.Contains(log, []byte("SANDBOX MODE")) || !bytes.Contains(log, []byte(`"vendors":"stripe(sandbox),twilio(sandbox),resend(sandbox)"`)) {
		t.Error("the start-up log does not say the vendors are sandboxed")
	}
	// kill %1, the block's last line, stops Keybrake cleanly.
	deadline := time.Now().Add(30 * time.Second)
	for !bytes.Contains(log, []byte(`"msg":"stopped"`)) {
		if time.Now().After(deadline) {
			t.Fatal("keybrake did not stop after the quick start's kill %1")
		}
		time.Sleep(100 * time.Millisecond)
		log, _ = os.ReadFile(filepath.Join(dir, "keybrake.log"))
	}
}
