package stepfunctions_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/integrations/internal/lambdalocal"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
)

// The three handler binaries, built once per test process from cmd/ (with
// -race when the tests run with it), exactly as they are deployed.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func handlerBinaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "keybrake-sfn-handlers-")
		if buildErr != nil {
			return
		}
		args := []string{"build", "-o", binDir + string(filepath.Separator)}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "./cmd/issue-vault-key", "./cmd/charge-customer", "./cmd/revoke-vault-key")
		cmd := exec.Command("go", args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// nodeDir is local/, where npm ci installed aws-local-stepfunctions and
// asl-validator. Outside CI a missing install skips; in CI it fails.
func nodeDir(t *testing.T) string {
	t.Helper()
	kbtest.RequireTool(t, "node", "Node.js 20+: apt-get install nodejs npm")
	dir, err := filepath.Abs("local")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"aws-local-stepfunctions", "asl-validator"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", p, "package.json")); err != nil {
			msg := fmt.Sprintf("%s is not installed in %s: run bash .ci/setup.d/40-stepfunctions.sh (npm ci)", p, dir)
			if kbtest.InCI() {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	return dir
}

// stack is a live `keybrake serve` in front of a counting sandbox Stripe,
// and a local Lambda service running the real handler binaries.
type stack struct {
	kb     *kbtest.Proc
	stripe *sandbox.Stripe
	admin  *client.Client
	lambda *lambdalocal.Service
	logs   *kbtest.SyncBuffer
}

type stackOptions struct {
	// fault injects vendor faults (sandbox.Stripe.Fault).
	fault func(r *http.Request, n int) sandbox.Fault
	// customers is what the fetch-customers stand-in returns for plan_gold.
	customers []map[string]any
	// chargeInstances is charge-customer's number of environments.
	chargeInstances int
	// extra functions (same binaries, other environments).
	extra []lambdalocal.Function
	// adminFront, when set, stands between the issue and revoke functions
	// and the admin API (a load balancer that loses answers, say): it is
	// given the admin API's handler to call.
	adminFront func(admin http.Handler) http.Handler
}

func startStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	bins := handlerBinaries(t)
	s := &stack{stripe: sandbox.NewStripe(kbtest.StripeSecret), logs: &kbtest.SyncBuffer{}}
	s.stripe.Fault = o.fault
	up := httptest.NewServer(s.stripe)
	t.Cleanup(up.Close)
	s.kb = kbtest.Serve(t, kbtest.EnvVars(
		"KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken,
		"KEYBRAKE_DB", filepath.Join(t.TempDir(), "keybrake.db"),
		"KEYBRAKE_STRIPE_SECRET_KEY", kbtest.StripeSecret,
		"KEYBRAKE_STRIPE_BASE_URL", up.URL,
		"KEYBRAKE_SECRETS_KEY", kbtest.SecretsKey,
	))
	s.admin = client.New(s.kb.AdminURL(), kbtest.AdminToken)

	// The issue and revoke functions hold a scoped issuer token, as the
	// README recommends, not the admin token.
	tok, err := s.admin.CreateToken(context.Background(), client.TokenParams{
		Name: "sfn-billing", MaxDailyUSD: "10000", Vendors: []string{"stripe"},
		Endpoints: []string{"POST /v1/payment_intents"}, MaxExpiresIn: "6h",
	})
	if err != nil {
		t.Fatalf("creating the issuer token: %v", err)
	}
	env := []string{"KEYBRAKE_URL=" + s.kb.URL(), "KEYBRAKE_ADMIN_URL=" + s.kb.AdminURL()}
	adminEnv := []string{"KEYBRAKE_URL=" + s.kb.URL(), "KEYBRAKE_ADMIN_URL=" + s.kb.AdminURL(), "KEYBRAKE_ISSUER_TOKEN=" + tok.Token}
	if o.adminFront != nil {
		target, _ := url.Parse(s.kb.AdminURL())
		front := httptest.NewServer(o.adminFront(httputil.NewSingleHostReverseProxy(target)))
		t.Cleanup(front.Close)
		adminEnv[1] = "KEYBRAKE_ADMIN_URL=" + front.URL
	}
	if o.chargeInstances == 0 {
		o.chargeInstances = 2
	}
	customers, _ := json.Marshal(o.customers)
	fns := []lambdalocal.Function{
		{Name: "issue-vault-key", Path: filepath.Join(bins, "issue-vault-key"), Env: adminEnv},
		{Name: "charge-customer", Path: filepath.Join(bins, "charge-customer"), Env: env, Instances: o.chargeInstances},
		{Name: "revoke-vault-key", Path: filepath.Join(bins, "revoke-vault-key"), Env: adminEnv},
		// The user's own Lambda, not Keybrake's: a stand-in that returns
		// the plan's customers.
		{Name: "fetch-customers", Handler: func(_ context.Context, payload []byte) ([]byte, error) {
			var in struct {
				PlanID string `json:"plan_id"`
			}
			if err := json.Unmarshal(payload, &in); err != nil || in.PlanID != "plan_gold" {
				return nil, &lambdalocal.FunctionError{Type: "UnknownPlan", Message: "no such plan: " + string(payload)}
			}
			return customers, nil
		}},
	}
	fns = append(fns, o.extra...)
	svc, err := lambdalocal.Start(fns, s.logs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		svc.Close()
		if t.Failed() {
			t.Logf("Lambda logs:\n%s", tail(s.logs.String(), 40))
			t.Logf("keybrake logs:\n%s", tail(s.kb.Logs(), 20))
		}
	})
	s.lambda = svc
	return s
}

// report is what local/run-execution.mjs prints.
type report struct {
	Status string          `json:"status"`
	Output json.RawMessage `json:"output"`
	Error  string          `json:"error"`
	Cause  string          `json:"cause"`
	States []string        `json:"states"`
	Items  map[string]struct {
		States  []string        `json:"states"`
		Output  json.RawMessage `json:"output"`
		Retries int             `json:"retries"`
		Caught  []string        `json:"caught"`
		Errors  []string        `json:"errors"`
	} `json:"items"`
}

// execute runs definition (a file in statemachine/) on aws-local-stepfunctions,
// its Task states invoking s.lambda through the AWS SDK.
func (s *stack) execute(t *testing.T, definition, executionARN string, input any, retryOverrides map[string]int) *report {
	t.Helper()
	dir := nodeDir(t)
	def, err := filepath.Abs(filepath.Join("statemachine", definition))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(map[string]any{
		"definitionFile": def, "input": input, "executionArn": executionARN,
		"retryIntervalOverrides": retryOverrides,
	})
	tmp := t.TempDir()
	cfgPath := filepath.Join(tmp, "execution.json")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "run-execution.mjs", cfgPath)
	cmd.Dir = dir
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + tmp, // no ~/.aws: credentials and endpoint come from here
		"AWS_ENDPOINT_URL_LAMBDA=" + s.lambda.URL,
		"AWS_REGION=" + lambdalocal.Region,
		"AWS_ACCESS_KEY_ID=AKIDLOCALTEST",
		"AWS_SECRET_ACCESS_KEY=local-test-secret",
		"AWS_EC2_METADATA_DISABLED=true",
		"NODE_NO_WARNINGS=1",
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node run-execution.mjs: %v\nstderr:\n%s", err, tail(stderr.String(), 40))
	}
	var r report
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("unreadable report: %v\n%s\nstderr:\n%s", err, tail(stdout.String(), 10), tail(stderr.String(), 40))
	}
	return &r
}

func tail(s string, lines int) string {
	n := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			n++
			if n > lines {
				return s[i+1:]
			}
		}
	}
	return s
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
