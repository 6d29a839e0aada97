// Command kbbench runs the parts of scripts/bench that are not the
// keybrake binary itself:
//
//	kbbench run [-d 5s] [-pg URL] [-only …]
//	                                    the whole benchmark: starts everything
//	                                    below and keybrake serve, loads each
//	                                    with wrk, checks spend, prints the table
//	kbbench upstream -addr A            the Stripe-like upstream (internal/bench)
//	kbbench plain -addr A -upstream U   a plain httputil.ReverseProxy to U
//	kbbench memproxy -addr A -upstream U -keys N -keyfile F
//	                                    Keybrake's proxy with an in-memory
//	                                    ledger: the proxy path, no store
//
// memproxy writes its vault keys to F, one a line, logs one JSON line per
// request to stderr as `keybrake serve` does, and answers
// GET /__bench/totals with the spend it recorded, for the exactness check.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/internal/bench"
	"github.com/keybrake/keybrake/pricing"
	"github.com/keybrake/keybrake/proxy"
	"github.com/keybrake/keybrake/vendors/stripe"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kbbench upstream|plain|memproxy [flags]")
		os.Exit(2)
	}
	if os.Args[1] == "run" {
		if err := runCmd(os.Args[2:]); err != nil {
			fail(err)
		}
		return
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	upstream := fs.String("upstream", "", "upstream base URL (plain, memproxy)")
	nkeys := fs.Int("keys", 1, "vault keys to issue (memproxy)")
	keyfile := fs.String("keyfile", "", "file to write the vault keys to (memproxy)")
	fs.Parse(os.Args[2:]) //nolint:errcheck // ExitOnError
	var h http.Handler
	switch os.Args[1] {
	case "upstream":
		h = &bench.Upstream{}
	case "plain":
		u, err := url.Parse(*upstream)
		if err != nil {
			fail(err)
		}
		h = bench.NewReverseProxy(u, bench.NewTransport())
	case "memproxy":
		var err error
		if h, err = memProxy(*upstream, *nkeys, *keyfile); err != nil {
			fail(err)
		}
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fail(err)
	}
	// The same server settings as server.Start.
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 60 * time.Second,
		IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10}
	fail(srv.Serve(ln))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kbbench:", err)
	os.Exit(1)
}

func memProxy(upstream string, nkeys int, keyfile string) (http.Handler, error) {
	sv, err := stripe.New(upstream, "sk_test_bench", pricing.DefaultFX())
	if err != nil {
		return nil, err
	}
	ledger := bench.NewMemLedger()
	rules, err := keybrake.ParseRules([]string{"payment_intents.create"})
	if err != nil {
		return nil, err
	}
	var secrets []string
	for range nkeys {
		secrets = append(secrets, ledger.Add(&keybrake.Key{ID: keybrake.NewID("vk_"), Vendor: "stripe",
			DailyCap: 1_000_000 * keybrake.MicrosPerUSD, Rules: rules, AgentRunLabel: "bench",
			CreatedAt: time.Now(), ExpiresAt: time.Now().Add(24 * time.Hour)}))
	}
	if err := os.WriteFile(keyfile, []byte(strings.Join(secrets, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	p, err := proxy.New(proxy.Config{Ledger: ledger, Vendors: []keybrake.Vendor{sv},
		Logger: slog.New(slog.NewJSONHandler(os.Stderr, nil)), Instance: "bench"})
	if err != nil {
		return nil, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.RequestURI == "/__bench/totals" {
			spent, reserved := ledger.Totals()
			json.NewEncoder(w).Encode(map[string]keybrake.Micros{"spent_usd": spent, "reserved_usd": reserved}) //nolint:errcheck
			return
		}
		p.ServeHTTP(w, r)
	}), nil
}
