// Package e2e tests Keybrake through its real surface: HTTP to the whole
// server assembly (in-process or as a child process) in front of counting
// vendor fakes.
package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/server"
)

// errBody is the Keybrake error shape every refusal carries.
type errBody struct {
	Code         string `json:"code"`
	Message      string `json:"message"`
	KeyID        string `json:"key_id"`
	CallID       int64  `json:"call_id"`
	Cap          string `json:"cap"`
	CapUSD       string `json:"cap_usd"`
	SpentUSD     string `json:"spent_usd"`
	ReservedUSD  string `json:"reserved_usd"`
	RequestedUSD string `json:"requested_usd"`
	Error        *struct {
		Type    string `json:"type"`
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func decodeErr(t testing.TB, r *kbtest.Response) errBody {
	t.Helper()
	var e errBody
	if err := json.Unmarshal(r.Body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.Body, err)
	}
	return e
}

// expectDenied asserts a refusal: status, code, and that the vendor
// received nothing for it (its request count is still before).
func expectDenied(t testing.TB, vendor interface{ Requests() int }, before int, r *kbtest.Response, status int, code string) errBody {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body %s", r.Status, status, r.Body)
	}
	e := decodeErr(t, r)
	if e.Code != code {
		t.Fatalf("code %q, want %q; body %s", e.Code, code, r.Body)
	}
	if n := vendor.Requests(); n != before {
		t.Fatalf("the vendor received %d request(s) for a denied call", n-before)
	}
	return e
}

func getKey(t testing.TB, env *kbtest.Env, id string) *client.Key {
	t.Helper()
	k, err := env.Admin.GetKey(context.Background(), id)
	if err != nil {
		t.Fatalf("get key %s: %v", id, err)
	}
	return k
}

func calls(t testing.TB, env *kbtest.Env, p client.ListCallsParams) []client.Call {
	t.Helper()
	var out []client.Call
	for {
		page, err := env.Admin.ListCalls(context.Background(), p)
		if err != nil {
			t.Fatalf("list calls: %v", err)
		}
		out = append(out, page.Data...)
		if !page.HasMore {
			return out
		}
		p.Cursor = page.NextCursor
	}
}

// offsetClock is a store clock tests can move forward.
type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

func (c *offsetClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// withClock starts an environment whose store clock the test controls.
func withClock(t testing.TB) (*kbtest.Env, *offsetClock) {
	c := &offsetClock{}
	env := kbtest.Start(t, kbtest.Options{Configure: func(cfg *server.Config) { cfg.Clock = c.now }})
	return env, c
}

var httpClient = &http.Client{Timeout: 60 * time.Second}

// startUpstream serves a vendor fake on a random local port.
func startUpstream(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// atomicCounter hands out distinct decimal strings.
type atomicCounter struct{ n atomic.Int64 }

func (c *atomicCounter) next() string { return strconv.FormatInt(c.n.Add(1), 10) }

// mistype changes a key's last character to a different one: a typo the
// checksum must catch (a fixed replacement would sometimes be no change).
func mistype(key string) string {
	last := key[len(key)-1]
	repl := byte('x')
	if last == repl {
		repl = 'y'
	}
	return key[:len(key)-1] + string(repl)
}

// chargeUntilGone drives a keybrake serve process the way a fan-out does:
// workers send $1 charges, each with a fresh Idempotency-Key (prefix-N),
// until the process stops answering. It returns a wait for the workers and
// the count of answers received.
func chargeUntilGone(baseURL, vaultKey, prefix string, workers int) (wait func(), answered *atomic.Int64) {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * workers}, Timeout: 30 * time.Second}
	answered = new(atomic.Int64)
	var seq atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				req, _ := http.NewRequest("POST", baseURL+"/v1/payment_intents", strings.NewReader("amount=100&currency=usd"))
				req.Header.Set("Authorization", "Bearer "+vaultKey)
				req.Header.Set("Content-Type", formCT)
				req.Header.Set("Idempotency-Key", prefix+strconv.FormatInt(seq.Add(1), 10))
				resp, err := hc.Do(req)
				if err != nil {
					return // the process is gone
				}
				resp.Body.Close()
				answered.Add(1)
				if resp.StatusCode == http.StatusTooManyRequests {
					time.Sleep(10 * time.Millisecond) // at the cap: keep the pressure, not a spin
				}
			}
		}()
	}
	return func() { wg.Wait(); hc.CloseIdleConnections() }, answered
}
