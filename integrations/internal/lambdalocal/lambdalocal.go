// Package lambdalocal is a local stand-in for the AWS Lambda service, for
// tests that must run real Lambda function binaries the way Lambda does.
//
// It serves two APIs on 127.0.0.1:
//
//   - the Invoke API (POST /2015-03-31/functions/{name}/invocations), the
//     one the AWS SDKs call. Point an SDK at it with AWS_ENDPOINT_URL_LAMBDA;
//     aws-local-stepfunctions then runs a definition's Task states against
//     it unchanged. A function error is answered as Lambda does: 200 with
//     X-Amz-Function-Error: Unhandled and {"errorType","errorMessage"}.
//   - the Lambda Runtime API (/2018-06-01/runtime/...), one endpoint per
//     execution environment. Each environment is a child process of the
//     function's binary started with AWS_LAMBDA_RUNTIME_API, so an unmodified
//     main calling aws-lambda-go's lambda.Start polls it, and the errorType
//     is whatever aws-lambda-go itself reports.
//
// A function has a fixed number of environments (processes), each running
// one invocation at a time; invocations queue for a free one, as under a
// reserved concurrency. An environment whose process exits fails its
// invocation with Runtime.ExitError and is started again; one that overruns
// the timeout fails it with Sandbox.Timedout and is killed and restarted.
package lambdalocal

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Region and Account appear in the ARNs the service reports.
const (
	Region  = "us-east-1"
	Account = "123456789012"
)

// Function is one Lambda function.
type Function struct {
	// Name is the function name; ARNs arn:aws:lambda:*:*:function:Name
	// (with or without a qualifier) resolve to it.
	Name string
	// Path is the function's binary: a main that calls lambda.Start.
	Path string
	// Env is the function's environment configuration (KEY=value).
	Env []string
	// Instances is the number of execution environments (default 1).
	Instances int
	// Timeout bounds one invocation (default 60s).
	Timeout time.Duration
	// Handler, instead of Path, runs in this process: for stand-ins of a
	// user's own functions that are not under test. An error that is a
	// *FunctionError is reported as is; any other as errorType "Error".
	Handler func(ctx context.Context, payload []byte) ([]byte, error)
}

// FunctionError is a function's error as Lambda reports it.
type FunctionError struct {
	Type    string `json:"errorType"`
	Message string `json:"errorMessage"`
}

func (e *FunctionError) Error() string { return e.Type + ": " + e.Message }

// Service is a running local Lambda.
type Service struct {
	// URL is the Invoke API endpoint (for AWS_ENDPOINT_URL_LAMBDA).
	URL string

	fns    map[string]*function
	srv    *http.Server
	ln     net.Listener
	logs   io.Writer
	logMu  sync.Mutex
	closed chan struct{}
	wg     sync.WaitGroup
}

type function struct {
	cfg         Function
	svc         *Service
	queue       chan *invocation
	envs        []*environment
	invocations atomic.Int64
	errorsByTyp sync.Map // errorType -> *atomic.Int64
}

type invocation struct {
	id       string
	arn      string
	payload  []byte
	deadline time.Time
	done     chan struct{}
	once     sync.Once
	result   []byte
	fnErr    bool
}

func (inv *invocation) complete(result []byte, fnErr bool) bool {
	ok := false
	inv.once.Do(func() {
		inv.result, inv.fnErr, ok = result, fnErr, true
		close(inv.done)
	})
	return ok
}

func (inv *invocation) finished() bool {
	select {
	case <-inv.done:
		return true
	default:
		return false
	}
}

// Start runs the functions. Process output (the functions' logs) goes to
// logs, one line per write, prefixed with the function name.
func Start(fns []Function, logs io.Writer) (*Service, error) {
	if logs == nil {
		logs = io.Discard
	}
	s := &Service{fns: map[string]*function{}, logs: logs, closed: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.ln = ln
	s.URL = "http://" + ln.Addr().String()
	for _, cfg := range fns {
		if cfg.Name == "" || (cfg.Path == "") == (cfg.Handler == nil) {
			s.Close()
			return nil, fmt.Errorf("lambdalocal: function %q needs a name and exactly one of Path or Handler", cfg.Name)
		}
		if _, dup := s.fns[cfg.Name]; dup {
			s.Close()
			return nil, fmt.Errorf("lambdalocal: function %q defined twice", cfg.Name)
		}
		if cfg.Instances <= 0 {
			cfg.Instances = 1
		}
		if cfg.Timeout <= 0 {
			cfg.Timeout = 60 * time.Second
		}
		f := &function{cfg: cfg, svc: s, queue: make(chan *invocation)}
		s.fns[cfg.Name] = f
		if cfg.Path != "" {
			for i := 0; i < cfg.Instances; i++ {
				env, err := f.startEnvironment(i)
				if err != nil {
					s.Close()
					return nil, err
				}
				f.envs = append(f.envs, env)
			}
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /2015-03-31/functions/{name}/invocations", s.invokeAPI)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.srv.Serve(ln) //nolint:errcheck // ends with Close
	}()
	return s, nil
}

// ARN is the function ARN of name.
func ARN(name string) string {
	return "arn:aws:lambda:" + Region + ":" + Account + ":function:" + name
}

// functionName resolves a name, a partial or full ARN, with or without a
// version qualifier.
func (s *Service) function(nameOrARN string) *function {
	name := nameOrARN
	if strings.HasPrefix(name, "arn:") {
		parts := strings.Split(name, ":")
		if len(parts) >= 7 && parts[5] == "function" {
			name = parts[6]
		}
	} else if before, _, ok := strings.Cut(name, ":"); ok {
		name = before
	}
	return s.fns[name]
}

// Invoke runs one synchronous invocation. fnErr is the function's error
// (errorType and errorMessage), err a failure to invoke at all.
func (s *Service) Invoke(ctx context.Context, nameOrARN string, payload []byte) (result []byte, fnErr *FunctionError, err error) {
	f := s.function(nameOrARN)
	if f == nil {
		return nil, nil, fmt.Errorf("lambdalocal: function not found: %s", nameOrARN)
	}
	out, isErr, err := f.invoke(ctx, payload)
	if err != nil {
		return nil, nil, err
	}
	if isErr {
		var fe FunctionError
		if json.Unmarshal(out, &fe) != nil || fe.Type == "" {
			fe = FunctionError{Type: "Unhandled", Message: string(out)}
		}
		return nil, &fe, nil
	}
	return out, nil, nil
}

// Invocations is how many invocations function name received.
func (s *Service) Invocations(name string) int {
	if f := s.fns[name]; f != nil {
		return int(f.invocations.Load())
	}
	return 0
}

// Errors is how many invocations of function name ended in errorType.
func (s *Service) Errors(name, errorType string) int {
	if f := s.fns[name]; f != nil {
		if v, ok := f.errorsByTyp.Load(errorType); ok {
			return int(v.(*atomic.Int64).Load())
		}
	}
	return 0
}

func (s *Service) invokeAPI(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	f := s.function(name)
	if f == nil {
		w.Header().Set("X-Amzn-Errortype", "ResourceNotFoundException")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"Type":"User","message":%q}`, "Function not found: "+name)
		return
	}
	if t := r.Header.Get("X-Amz-Invocation-Type"); t != "" && t != "RequestResponse" {
		w.Header().Set("X-Amzn-Errortype", "InvalidParameterValueException")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"Type":"User","message":"lambdalocal serves RequestResponse invocations only, not %s"}`, t)
		return
	}
	payload, err := io.ReadAll(io.LimitReader(r.Body, 6<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if len(payload) == 0 {
		payload = []byte("{}")
	}
	out, isErr, err := f.invoke(r.Context(), payload)
	if err != nil {
		w.Header().Set("X-Amzn-Errortype", "ServiceException")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `{"Type":"Service","message":%q}`, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amz-Executed-Version", "$LATEST")
	if isErr {
		w.Header().Set("X-Amz-Function-Error", "Unhandled")
	}
	w.WriteHeader(http.StatusOK)
	w.Write(out) //nolint:errcheck
}

func newID() string {
	var b [16]byte
	rand.Read(b[:]) //nolint:errcheck
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (f *function) invoke(ctx context.Context, payload []byte) ([]byte, bool, error) {
	f.invocations.Add(1)
	inv := &invocation{
		id: newID(), arn: ARN(f.cfg.Name), payload: payload,
		deadline: time.Now().Add(f.cfg.Timeout), done: make(chan struct{}),
	}
	timer := time.NewTimer(f.cfg.Timeout)
	defer timer.Stop()
	if f.cfg.Handler != nil {
		hctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), inv.deadline)
		defer cancel()
		go func() {
			out, err := f.cfg.Handler(hctx, payload)
			if err != nil {
				var fe *FunctionError
				if !errors.As(err, &fe) {
					fe = &FunctionError{Type: "Error", Message: err.Error()}
				}
				b, _ := json.Marshal(fe)
				inv.complete(b, true)
				return
			}
			inv.complete(out, false)
		}()
	} else {
		select {
		case f.queue <- inv:
		case <-timer.C:
			inv.complete(timedOut(inv, f.cfg.Timeout), true)
		case <-f.svc.closed:
			return nil, false, errClosed
		}
	}
	select {
	case <-inv.done:
	case <-timer.C:
		if inv.complete(timedOut(inv, f.cfg.Timeout), true) {
			f.killHolder(inv)
		}
	case <-f.svc.closed:
		return nil, false, errors.New("lambdalocal: service closed")
	}
	if inv.fnErr {
		var fe FunctionError
		if json.Unmarshal(inv.result, &fe) == nil && fe.Type != "" {
			v, _ := f.errorsByTyp.LoadOrStore(fe.Type, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
		}
	}
	return inv.result, inv.fnErr, nil
}

func timedOut(inv *invocation, d time.Duration) []byte {
	b, _ := json.Marshal(FunctionError{Type: "Sandbox.Timedout", Message: fmt.Sprintf("RequestId: %s Error: Task timed out after %.2f seconds", inv.id, d.Seconds())})
	return b
}

func (f *function) killHolder(inv *invocation) {
	for _, e := range f.envs {
		e.mu.Lock()
		cur, cmd := e.current, e.cmd
		e.mu.Unlock()
		if cur == inv && cmd != nil && cmd.Process != nil {
			cmd.Process.Kill() //nolint:errcheck // restarted by its watcher
		}
	}
}

// environment is one execution environment: a runtime API endpoint and the
// process polling it.
type environment struct {
	f   *function
	idx int
	ln  net.Listener
	srv *http.Server

	mu      sync.Mutex
	cmd     *exec.Cmd
	current *invocation
}

func (f *function) startEnvironment(idx int) (*environment, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &environment{f: f, idx: idx, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /2018-06-01/runtime/invocation/next", e.next)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/response", e.respond(false))
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/error", e.respond(true))
	mux.HandleFunc("POST /2018-06-01/runtime/init/error", e.initError)
	e.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s := f.svc
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		e.srv.Serve(ln) //nolint:errcheck
	}()
	if err := e.spawn(); err != nil {
		s.wg.Done()
		e.srv.Close()
		return nil, err
	}
	go func() {
		defer s.wg.Done()
		e.supervise()
	}()
	return e, nil
}

func (e *environment) spawn() error {
	cfg := e.f.cfg
	cmd := exec.Command(cfg.Path)
	cmd.Env = append([]string{
		"AWS_LAMBDA_RUNTIME_API=" + e.ln.Addr().String(),
		"AWS_LAMBDA_FUNCTION_NAME=" + cfg.Name,
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128",
		"AWS_REGION=" + Region,
		"AWS_DEFAULT_REGION=" + Region,
		"TZ=:UTC",
	}, cfg.Env...)
	w := &lineWriter{s: e.f.svc, prefix: fmt.Sprintf("[%s#%d] ", cfg.Name, e.idx)}
	cmd.Stdout, cmd.Stderr = w, w
	// Close kills the process under e.mu after closing s.closed, so a
	// process is either never started or killed by Close.
	e.mu.Lock()
	defer e.mu.Unlock()
	select {
	case <-e.f.svc.closed:
		return errClosed
	default:
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("lambdalocal: starting %s: %w", cfg.Name, err)
	}
	e.cmd = cmd
	return nil
}

var errClosed = errors.New("lambdalocal: service closed")

// supervise waits for the process; if it dies while the service runs, its
// invocation fails with Runtime.ExitError and a new process takes its place.
func (e *environment) supervise() {
	for {
		e.mu.Lock()
		cmd := e.cmd
		e.mu.Unlock()
		err := cmd.Wait()
		e.mu.Lock()
		cur := e.current
		e.current = nil
		e.mu.Unlock()
		if cur != nil {
			b, _ := json.Marshal(FunctionError{Type: "Runtime.ExitError", Message: fmt.Sprintf("RequestId: %s Error: Runtime exited: %v", cur.id, err)})
			cur.complete(b, true)
		}
		select {
		case <-e.f.svc.closed:
			return
		case <-time.After(50 * time.Millisecond):
		}
		if err := e.spawn(); err != nil {
			if !errors.Is(err, errClosed) {
				e.f.svc.logf("%v", err)
			}
			return
		}
	}
}

func (e *environment) next(w http.ResponseWriter, r *http.Request) {
	for {
		select {
		case inv := <-e.f.queue:
			if inv.finished() { // timed out while queued
				continue
			}
			e.mu.Lock()
			e.current = inv
			e.mu.Unlock()
			h := w.Header()
			h.Set("Lambda-Runtime-Aws-Request-Id", inv.id)
			h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(inv.deadline.UnixMilli(), 10))
			h.Set("Lambda-Runtime-Invoked-Function-Arn", inv.arn)
			h.Set("Lambda-Runtime-Trace-Id", "Root=1-"+strings.ReplaceAll(inv.id, "-", "")[:8]+"-"+strings.ReplaceAll(inv.id, "-", "")[8:]+";Sampled=0")
			h.Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			w.Write(inv.payload) //nolint:errcheck
			return
		case <-r.Context().Done():
			return
		case <-e.f.svc.closed:
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
	}
}

func (e *environment) respond(errorPath bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		isErr := errorPath
		body, err := io.ReadAll(io.LimitReader(r.Body, 6<<20))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		// aws-lambda-go reports an error met while streaming a response
		// in trailers.
		if t := r.Trailer.Get("Lambda-Runtime-Function-Error-Type"); t != "" {
			isErr = true
			if b, derr := base64.StdEncoding.DecodeString(r.Trailer.Get("Lambda-Runtime-Function-Error-Body")); derr == nil {
				body = b
			}
		}
		id := r.PathValue("id")
		e.mu.Lock()
		cur := e.current
		if cur != nil && cur.id == id {
			e.current = nil
		}
		e.mu.Unlock()
		if cur == nil || cur.id != id {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"errorType":"InvalidRequestID","errorMessage":"no such invocation in progress"}`) //nolint:errcheck
			return
		}
		if isErr && !json.Valid(body) {
			body, _ = json.Marshal(FunctionError{Type: r.Header.Get("Lambda-Runtime-Function-Error-Type"), Message: string(body)})
		}
		cur.complete(body, isErr)
		w.WriteHeader(http.StatusAccepted)
	}
}

func (e *environment) initError(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	e.f.svc.logf("[%s#%d] init error: %s", e.f.cfg.Name, e.idx, body)
	w.WriteHeader(http.StatusAccepted)
}

// Close stops the service and its processes.
func (s *Service) Close() error {
	select {
	case <-s.closed:
		return nil
	default:
	}
	close(s.closed)
	for _, f := range s.fns {
		for _, e := range f.envs {
			e.mu.Lock()
			if e.cmd != nil && e.cmd.Process != nil {
				e.cmd.Process.Kill() //nolint:errcheck
			}
			e.mu.Unlock()
			e.srv.Close()
		}
	}
	if s.srv != nil {
		s.srv.Close()
	} else if s.ln != nil {
		s.ln.Close()
	}
	s.wg.Wait()
	return nil
}

func (s *Service) logf(format string, args ...any) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	fmt.Fprintf(s.logs, format+"\n", args...)
}

type lineWriter struct {
	s      *Service
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.s.logf("%s%s", w.prefix, w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}
