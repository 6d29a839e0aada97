package sandbox

import (
	"crypto/sha256"
	"io"
	"net/http"
	"sync"
)

// recorder keeps what reached a sandbox; each sandbox embeds one, and tests
// read Requests and Received to assert what "the vendor" saw.
type recorder struct {
	rmu      sync.Mutex
	n        int
	received []Received
	limit    int // 0: keep every request
}

// KeepAtMost bounds how many requests Received keeps (the first n; the
// count goes on): a sandbox serving `keybrake serve --sandbox` for days
// must not grow without end.
func (rc *recorder) KeepAtMost(n int) {
	rc.rmu.Lock()
	defer rc.rmu.Unlock()
	rc.limit = n
}

// record reads the body (bounded) and logs the request; n counts from 1.
func (rc *recorder) record(r *http.Request) (n int, body []byte) {
	if r.Body != nil {
		body, _ = io.ReadAll(io.LimitReader(r.Body, 1<<20))
	}
	rc.rmu.Lock()
	defer rc.rmu.Unlock()
	rc.n++
	if rc.limit > 0 && len(rc.received) >= rc.limit {
		return rc.n, body
	}
	rc.received = append(rc.received, Received{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: string(body)})
	return rc.n, body
}

// Requests is how many requests reached the sandbox.
func (rc *recorder) Requests() int {
	rc.rmu.Lock()
	defer rc.rmu.Unlock()
	return rc.n
}

// Received returns copies of every request seen.
func (rc *recorder) Received() []Received {
	rc.rmu.Lock()
	defer rc.rmu.Unlock()
	return append([]Received(nil), rc.received...)
}

// answer is a sandbox's reply to one request.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// serveWithFault applies a request under an injected fault: a fault before
// applying answers (or stalls) without calling apply; a fault after applying
// calls apply and then fails or cuts the connection; otherwise apply's answer
// is written. fail writes the vendor's own 500.
func serveWithFault(w http.ResponseWriter, r *http.Request, fault Fault, apply func() answer, fail func(w http.ResponseWriter, msg string)) {
	switch fault {
	case FailBeforeApply:
		fail(w, "sandbox: injected failure before applying")
		return
	case Stall:
		<-r.Context().Done()
		return
	}
	a := apply()
	switch fault {
	case FailAfterApply:
		fail(w, "sandbox: injected failure after applying")
		return
	case DropAfterApply:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	for k, v := range a.header {
		w.Header()[k] = v
	}
	w.WriteHeader(a.status)
	w.Write(a.body) //nolint:errcheck // the client may have gone
}

// idemOutcome is how an idempotency cache answered.
type idemOutcome int

const (
	idemFresh    idemOutcome = iota // applied now
	idemReplayed                    // the first answer, replayed
	idemInFlight                    // the first request is still running
	idemMismatch                    // the key was first used for another request
)

// idemCache gives a sandbox its vendor's Idempotency-Key semantics (Stripe
// and Resend alike): the first request with a key is applied, a repeat with
// the same request replays its answer, a repeat with another request or
// while the first runs is refused.
type idemCache struct {
	mu sync.Mutex
	m  map[string]*stored
}

type stored struct {
	fingerprint [32]byte
	status      int
	body        []byte
	done        chan struct{}
}

func (c *idemCache) do(r *http.Request, body []byte, apply func() (int, []byte)) (int, []byte, idemOutcome) {
	key := r.Header.Get("Idempotency-Key")
	if key == "" || r.Method != http.MethodPost {
		status, b := apply()
		return status, b, idemFresh
	}
	fp := sha256.Sum256(append([]byte(r.Method+" "+r.URL.Path+"\n"), body...))
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]*stored{}
	}
	if st, ok := c.m[key]; ok {
		c.mu.Unlock()
		select {
		case <-st.done:
		default:
			return 0, nil, idemInFlight
		}
		if st.fingerprint != fp {
			return 0, nil, idemMismatch
		}
		return st.status, st.body, idemReplayed
	}
	st := &stored{fingerprint: fp, done: make(chan struct{})}
	c.m[key] = st
	c.mu.Unlock()
	st.status, st.body = apply()
	close(st.done)
	return st.status, st.body, idemFresh
}
