package sdktest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/keybrake/keybrake/internal/kbtest"
)

// TestStripeNode runs stripe-node (npm "stripe", pinned in
// sdktest/node/package-lock.json) under `node --test` against a live
// Keybrake, so the README's single test command covers the seed's Node
// Lambdas too. node_modules comes from .ci/setup.d/30-node-sdk.sh (npm ci).
func TestStripeNode(t *testing.T) {
	node := kbtest.RequireTool(t, "node", "install Node.js 20 or later")
	dir, err := filepath.Abs("node")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "stripe", "package.json")); err != nil {
		if kbtest.InCI() {
			t.Fatalf("sdktest/node/node_modules is missing in CI: .ci/setup.d/30-node-sdk.sh should have run npm ci")
		}
		t.Skip("stripe-node is not installed: run `npm ci` in sdktest/node (or .ci/setup.d/30-node-sdk.sh)")
	}
	env := kbtest.Start(t)
	key := issue(t, env, "stripe", "10", "POST /v1/payment_intents")
	host, port, err := net.SplitHostPort(env.URL[len("http://"):])
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, "--test", "--test-reporter=spec", "stripe.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"KEYBRAKE_HOST="+host, "KEYBRAKE_PORT="+port, "KEYBRAKE_PROTOCOL=http", "KEYBRAKE_VAULT_KEY="+key,
		"NODE_OPTIONS=", // no inherited preloads
	)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("stripe-node test failed: %v", err)
	}
	// Only the call within the cap reached the vendor.
	if n := env.Stripe.Requests(); n != 1 {
		t.Fatalf("the Stripe sandbox received %d requests, want 1", n)
	}
	noLeak(t, env)
}
