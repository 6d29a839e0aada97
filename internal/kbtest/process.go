package kbtest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/keybrake once per test process (with -race when the
// tests run with it) and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "keybrake-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "keybrake")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/keybrake/keybrake/cmd/keybrake")
		cmd := exec.Command("go", args...)
		cmd.Dir = moduleRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = &buildError{out: string(out), err: err}
		}
	})
	if buildErr != nil {
		t.Fatalf("building keybrake: %v", buildErr)
	}
	return binPath
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Proc is a `keybrake serve` child process.
type Proc struct {
	Cmd       *exec.Cmd
	Addr      string // proxy address, from the "keybrake listening" log line
	AdminAddr string
	adminURL  string // the contract-checking proxy in front of AdminAddr
	logs      *SyncBuffer
	exited    chan struct{}
	exitErr   error
}

// Serve starts `keybrake serve --addr 127.0.0.1:0` with env added to a
// minimal environment, waits until it listens, and kills it when the test
// ends (if still running).
func Serve(t testing.TB, env []string, args ...string) *Proc {
	t.Helper()
	p, err := TryServe(t, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TryServe is Serve for a process that may refuse to start: it returns an
// error, with everything the process logged, if it exits before listening.
func TryServe(t testing.TB, env []string, args ...string) (*Proc, error) {
	t.Helper()
	return TryServeBinary(t, Binary(t), env, args...)
}

// TryServeBinary is TryServe with a given keybrake binary (PlainBinary, to
// measure the process without the race detector's overhead).
func TryServeBinary(t testing.TB, bin string, env []string, args ...string) (*Proc, error) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &Proc{Cmd: cmd, logs: &SyncBuffer{}, exited: make(chan struct{})}
	contract, err := LoadContract(AdminToken)
	if err != nil {
		t.Fatalf("the admin API's contract: %v", err)
	}
	fail := reporter(t)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	drained := make(chan struct{}) // stderr read to its end
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(io.TeeReader(stderr, io.Discard))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			p.logs.Write([]byte(line + "\n")) //nolint:errcheck
			var rec struct {
				Msg       string `json:"msg"`
				Addr      string `json:"addr"`
				AdminAddr string `json:"admin_addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "keybrake listening" {
				p.Addr, p.AdminAddr = rec.Addr, rec.AdminAddr
				once.Do(func() { close(ready) })
			}
		}
		io.Copy(io.Discard, stderr) //nolint:errcheck // past an over-long line: keep the pipe flowing
	}()
	go func() {
		<-drained // Wait closes the pipe: read everything first
		p.exitErr = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Kill() //nolint:errcheck
			<-p.exited
		}
	})
	select {
	case <-ready:
	case <-p.exited:
		return nil, &buildError{out: p.logs.String(), err: fmt.Errorf("keybrake serve exited before listening: %w", p.exitErr)}
	case <-time.After(60 * time.Second):
		return nil, &buildError{out: p.logs.String(), err: errors.New("keybrake serve did not listen within 60s")}
	}
	// Admin calls to the process go through a proxy that checks each
	// against docs/openapi.yaml, as Start's middleware does in process.
	checked := httptest.NewServer(contract.Proxy(fail, &url.URL{Scheme: "http", Host: p.AdminAddr}))
	t.Cleanup(checked.Close)
	p.adminURL = checked.URL
	return p, nil
}

// URL is the proxy's base URL.
func (p *Proc) URL() string { return "http://" + p.Addr }

// AdminURL is the admin API's base URL, through a proxy that checks every
// admin call against docs/openapi.yaml (AdminAddr is the process's own).
func (p *Proc) AdminURL() string { return p.adminURL }

// Logs returns everything the process wrote to stderr so far.
func (p *Proc) Logs() string { return p.logs.String() }

// Kill sends SIGKILL and waits for the process to die.
func (p *Proc) Kill() {
	p.Cmd.Process.Signal(syscall.SIGKILL) //nolint:errcheck
	<-p.exited
}

// Stop sends SIGTERM and returns the process's exit error (nil for exit 0).
func (p *Proc) Stop(timeout time.Duration) error {
	p.Cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck
	select {
	case <-p.exited:
		return p.exitErr
	case <-time.After(timeout):
		p.Cmd.Process.Kill() //nolint:errcheck
		<-p.exited
		return &buildError{out: p.Logs(), err: os.ErrDeadlineExceeded}
	}
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// EnvVars builds KEY=value pairs.
func EnvVars(kv ...string) []string {
	var out []string
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, kv[i]+"="+kv[i+1])
	}
	return out
}
