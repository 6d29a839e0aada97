package sdktest

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// issue creates a vault key and returns its secret.
func issue(t *testing.T, env *kbtest.Env, vendor, dailyCap string, endpoints ...string) string {
	t.Helper()
	k := env.Issue(t, client.IssueParams{Vendor: vendor, DailyUSDCap: dailyCap, AllowedEndpoints: endpoints, AgentRunLabel: "sdktest"})
	return k.VaultKey
}

// mustContain fails unless err's text holds every want.
func mustContain(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("call succeeded; want an error containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not contain %q", err, w)
		}
	}
}

// noLeak fails if a vendor credential shows up in Keybrake's logs.
func noLeak(t *testing.T, env *kbtest.Env) {
	t.Helper()
	logs := env.Logs.String()
	for _, s := range []string{kbtest.StripeSecret, kbtest.TwilioAuthToken, kbtest.ResendAPIKey} {
		if strings.Contains(logs, s) {
			t.Fatalf("a vendor secret leaked into the logs")
		}
	}
}

// redirect is an http.RoundTripper that sends every request to base
// (scheme, host, and a path prefix), whatever host the SDK aimed at: how
// twilio-go, whose host is hard-coded, reaches Keybrake.
type redirect struct {
	base *url.URL
}

func newRedirect(t *testing.T, base string) *redirect {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return &redirect{base: u}
}

func (r *redirect) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	out.URL.Scheme = r.base.Scheme
	out.URL.Host = r.base.Host
	out.URL.Path = strings.TrimRight(r.base.Path, "/") + req.URL.Path
	out.URL.RawPath = ""
	out.Host = r.base.Host
	return http.DefaultTransport.RoundTrip(out)
}

// counter is a reverse proxy in front of an upstream (stripe-mock) that
// counts the requests reaching it.
type counter struct {
	n  atomic.Int64
	rp *httputil.ReverseProxy
}

func newCounter(t *testing.T, upstream string) (*counter, *httptest.Server) {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	c := &counter{rp: httputil.NewSingleHostReverseProxy(u)}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return c, srv
}

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.n.Add(1)
	c.rp.ServeHTTP(w, r)
}
