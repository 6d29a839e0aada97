package lambdalocal_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keybrake/keybrake/integrations/internal/lambdalocal"
	"github.com/keybrake/keybrake/internal/kbtest"
)

func buildFn(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fn")
	out, err := exec.Command("go", "build", "-o", bin, "./testdata/fn").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type echo struct {
	Value       string `json:"value"`
	RequestID   string `json:"request_id"`
	ARN         string `json:"arn"`
	Function    string `json:"function"`
	PID         int    `json:"pid"`
	HasDeadline bool   `json:"has_deadline"`
	Env         string `json:"env"`
}

func start(t *testing.T, fns ...lambdalocal.Function) *lambdalocal.Service {
	t.Helper()
	logs := &kbtest.SyncBuffer{}
	svc, err := lambdalocal.Start(fns, logs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		svc.Close()
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	return svc
}

func invoke(t *testing.T, svc *lambdalocal.Service, fn, payload string) (echo, *lambdalocal.FunctionError) {
	t.Helper()
	out, fnErr, err := svc.Invoke(context.Background(), fn, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	var e echo
	if fnErr == nil {
		if err := json.Unmarshal(out, &e); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
	}
	return e, fnErr
}

func TestRuntimeAPI(t *testing.T) {
	bin := buildFn(t)
	svc := start(t,
		lambdalocal.Function{Name: "fn", Path: bin, Env: []string{"FN_ENV=configured"}, Instances: 2, Timeout: 30 * time.Second},
		lambdalocal.Function{Name: "slow", Path: bin, Timeout: 300 * time.Millisecond})

	e, fnErr := invoke(t, svc, lambdalocal.ARN("fn")+":$LATEST", `{"mode":"echo","value":"hi"}`)
	if fnErr != nil || e.Value != "hi" || e.RequestID == "" || e.ARN != lambdalocal.ARN("fn") || e.Function != "fn" || !e.HasDeadline || e.Env != "configured" {
		t.Fatalf("echo: %+v %v", e, fnErr)
	}
	// aws-lambda-go names the error after its Go type.
	if _, fnErr := invoke(t, svc, "fn", `{"mode":"error","value":"x"}`); fnErr == nil || fnErr.Type != "Boom" || fnErr.Message != "boom: x" {
		t.Fatalf("typed error: %+v", fnErr)
	}
	// A crash fails the invocation and the environment comes back.
	if _, fnErr := invoke(t, svc, "fn", `{"mode":"exit"}`); fnErr == nil || fnErr.Type != "Runtime.ExitError" {
		t.Fatalf("exit: %+v", fnErr)
	}
	if _, fnErr := invoke(t, svc, "fn", `{"mode":"panic"}`); fnErr == nil || !strings.Contains(fnErr.Message, "kaboom") {
		t.Fatalf("panic: %+v", fnErr)
	}
	if _, fnErr := invoke(t, svc, "slow", `{"mode":"sleep"}`); fnErr == nil || fnErr.Type != "Sandbox.Timedout" {
		t.Fatalf("overrun: %+v", fnErr)
	}
	// Concurrent invocations share the two environments.
	var wg sync.WaitGroup
	pids := sync.Map{}
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, fnErr, err := svc.Invoke(context.Background(), "fn", []byte(`{"mode":"echo"}`))
			if err != nil || fnErr != nil {
				errs <- errors.Join(err, fnErr)
				return
			}
			var e echo
			json.Unmarshal(out, &e) //nolint:errcheck
			pids.Store(e.PID, true)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	n := 0
	pids.Range(func(any, any) bool { n++; return true })
	if n < 1 || n > 2 {
		t.Errorf("invocations ran in %d processes, want at most the 2 environments", n)
	}
	if got := svc.Invocations("fn"); got != 24 {
		t.Errorf("%d invocations counted, want 24", got)
	}
	if got := svc.Errors("fn", "Boom"); got != 1 {
		t.Errorf("%d Boom errors counted, want 1", got)
	}
}

// TestInvokeAPI: the HTTP API the AWS SDKs call (what aws-local-stepfunctions
// uses through AWS_ENDPOINT_URL_LAMBDA).
func TestInvokeAPI(t *testing.T) {
	svc := start(t, lambdalocal.Function{Name: "inproc", Handler: func(_ context.Context, p []byte) ([]byte, error) {
		if bytes.Contains(p, []byte("fail")) {
			return nil, &lambdalocal.FunctionError{Type: "CapExhausted", Message: "spent"}
		}
		return p, nil
	}})
	post := func(name, body string) (*http.Response, string) {
		resp, err := http.Post(svc.URL+"/2015-03-31/functions/"+url.PathEscape(name)+"/invocations", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body) //nolint:errcheck
		return resp, b.String()
	}
	resp, body := post(lambdalocal.ARN("inproc"), `{"a":1}`)
	if resp.StatusCode != 200 || resp.Header.Get("X-Amz-Function-Error") != "" || body != `{"a":1}` {
		t.Fatalf("success: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	resp, body = post("inproc", `"fail"`)
	if resp.StatusCode != 200 || resp.Header.Get("X-Amz-Function-Error") != "Unhandled" || !strings.Contains(body, `"errorType":"CapExhausted"`) {
		t.Fatalf("function error: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	resp, _ = post("nope", `{}`)
	if resp.StatusCode != 404 || resp.Header.Get("X-Amzn-Errortype") != "ResourceNotFoundException" {
		t.Fatalf("unknown function: %d %v", resp.StatusCode, resp.Header)
	}
}
