package ui_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/keybrake/keybrake/internal/kbtest"
)

// operator is a browser-less client of the dashboard: a cookie jar, no
// redirects followed (the tests look at them), and the Origin header a
// browser sends on its forms.
type operator struct {
	t    *testing.T
	base string
	hc   *http.Client
	csrf string
}

func newOperator(t *testing.T, env *kbtest.Env) *operator {
	jar, _ := cookiejar.New(nil)
	return &operator{t: t, base: env.URL, hc: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

type answer struct {
	status int
	header http.Header
	body   string
}

func (o *operator) send(method, path string, form url.Values, header ...string) answer {
	o.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, o.base+path, body)
	if err != nil {
		o.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", o.base)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] == "" {
			req.Header.Del(header[i])
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	resp, err := o.hc.Do(req)
	if err != nil {
		o.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(b)}
}

func (o *operator) get(path string) answer { o.t.Helper(); return o.send("GET", path, nil) }

var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)">`)

// signIn signs in with the admin token and remembers the CSRF token.
func (o *operator) signIn() {
	o.t.Helper()
	a := o.send("POST", "/ui/signin", url.Values{"token": {kbtest.AdminToken}})
	if a.status != http.StatusSeeOther || a.header.Get("Location") != "/ui/" {
		o.t.Fatalf("sign-in: HTTP %d to %q: %s", a.status, a.header.Get("Location"), a.body)
	}
	page := o.get("/ui/keys")
	m := csrfMeta.FindStringSubmatch(page.body)
	if page.status != http.StatusOK || m == nil {
		o.t.Fatalf("after sign-in /ui/keys: HTTP %d, csrf %v: %s", page.status, m, page.body)
	}
	o.csrf = m[1]
}

// TestEveryPageRenders signs in and opens each page.
func TestEveryPageRenders(t *testing.T) {
	env := kbtest.Start(t)
	o := newOperator(t, env)
	o.signIn()
	for _, p := range []string{"/ui/", "/ui/keys", "/ui/runs", "/ui/audit", "/ui/reports", "/ui/webhooks", "/ui/fragments/audit"} {
		if a := o.get(p); a.status != http.StatusOK {
			t.Errorf("GET %s: HTTP %d: %s", p, a.status, a.body)
		}
	}
}
