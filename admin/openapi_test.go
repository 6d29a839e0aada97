package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/keybrake/keybrake/admin"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/server"
)

// serverPaths are the spec's paths the server serves itself, beside admin.
var serverPaths = map[string]bool{"/healthz": true}

// Every route admin registers is an operation of docs/openapi.yaml, with
// that method, and every operation of the spec is a route admin registers:
// a handler added without the spec, or a spec path with no handler, fails.
func TestEveryRouteIsInTheSpec(t *testing.T) {
	api, err := admin.New(admin.Config{Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := kbtest.LoadContract("t")
	if err != nil {
		t.Fatal(err)
	}
	spec := map[string]bool{}
	for path, item := range c.Doc.Paths.Map() {
		pattern := path
		if p, ok := item.Extensions["x-keybrake-pattern"].(string); ok {
			pattern = p
		}
		if !strings.HasPrefix(path, "/vault/") {
			// The server, not admin, serves these (TestHealthzInTheSpec).
			if !serverPaths[path] {
				t.Errorf("spec path %s is outside /vault/, which admin serves", path)
			}
			continue
		}
		for method := range item.Operations() {
			spec[method+" "+pattern] = true
		}
	}
	routes := api.Routes()
	if len(routes) == 0 {
		t.Fatalf("admin registers only %d routes: %v", len(routes), routes)
	}
	registered := map[string]bool{}
	for _, r := range routes {
		registered[r] = true
		if !spec[r] {
			t.Errorf("admin serves %s, which docs/openapi.yaml does not describe", r)
		}
	}
	var missing []string
	for op := range spec {
		if !registered[op] {
			missing = append(missing, op)
		}
	}
	sort.Strings(missing)
	for _, op := range missing {
		t.Errorf("docs/openapi.yaml describes %s, which admin does not serve", op)
	}
}

// The spec says per operation which tokens it accepts; the server must
// agree. Every operation is called on a real server with an issuer token:
// where the spec lists only the admin token the answer is 403 forbidden,
// and where it lists issuer tokens too the token gets through (whatever the
// route then answers, never 401 or forbidden). The contract middleware
// checks each of these answers against the spec as well.
func TestIssuerTokenSecurityMatchesTheSpec(t *testing.T) {
	env := kbtest.Start(t)
	ctx := context.Background()
	tok, err := env.Admin.CreateToken(ctx, client.TokenParams{Name: "sec", MaxDailyUSD: "10", Vendors: []string{"stripe"},
		Endpoints: []string{"POST /v1/payment_intents"}, MaxExpiresIn: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := kbtest.LoadContract(kbtest.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for path, item := range c.Doc.Paths.Map() {
		for method, op := range item.Operations() {
			sec := c.Doc.Security
			if op.Security != nil {
				sec = *op.Security
			}
			if len(sec) == 0 {
				continue // public, such as /healthz
			}
			issuerOK := false
			for _, req := range sec {
				_, ok := req["issuerToken"]
				issuerOK = issuerOK || ok
			}
			target := strings.NewReplacer("{key_id}", "vk_nope", "{token_id}", "tok_nope", "{webhook_id}", "wh_nope", "{label}", "run-1").Replace(path)
			var body io.Reader
			if method == http.MethodPost {
				body = strings.NewReader("{}")
			}
			req, _ := http.NewRequest(method, "http://"+env.Server.AdminAddr()+target, body)
			req.Header.Set("Authorization", "Bearer "+tok.Token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var e struct{ Code string }
			json.NewDecoder(resp.Body).Decode(&e) //nolint:errcheck // not every answer is an error
			resp.Body.Close()
			forbidden := resp.StatusCode == http.StatusForbidden && e.Code == "forbidden"
			switch {
			case issuerOK && (forbidden || resp.StatusCode == http.StatusUnauthorized):
				t.Errorf("%s %s: the spec accepts issuer tokens, the server answered %d %s", method, path, resp.StatusCode, e.Code)
			case !issuerOK && !forbidden:
				t.Errorf("%s %s: the spec accepts only the admin token, the server answered an issuer token %d %s", method, path, resp.StatusCode, e.Code)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("no operation was tried")
	}
}

// /healthz is in the spec (it is on the admin listener) though admin does
// not serve it: its answers, plain and in sandbox mode, on the proxy's
// listener and on the admin listener, are checked against the spec here.
func TestHealthzInTheSpec(t *testing.T) {
	c, err := kbtest.LoadContract(kbtest.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []struct {
		name      string
		configure func(*server.Config)
		sandbox   bool
	}{
		{"plain", nil, false},
		{"sandbox, own admin listener", func(cfg *server.Config) { cfg.Sandbox = true; cfg.AdminAddr = "127.0.0.1:0" }, true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			env := kbtest.Start(t, kbtest.Options{Configure: mode.configure})
			for _, base := range []string{env.URL, "http://" + env.Server.AdminAddr()} {
				resp, err := http.Get(base + "/healthz")
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				req, _ := http.NewRequest(http.MethodGet, base+"/healthz", nil)
				if err := c.Check(req, nil, resp.StatusCode, resp.Header, body); err != nil {
					t.Errorf("GET %s/healthz → %d: %v", base, resp.StatusCode, err)
				}
				var h struct{ Sandbox bool }
				if json.Unmarshal(body, &h) != nil || resp.StatusCode != 200 || h.Sandbox != mode.sandbox {
					t.Errorf("GET %s/healthz → %d %s", base, resp.StatusCode, body)
				}
			}
		})
	}
}
