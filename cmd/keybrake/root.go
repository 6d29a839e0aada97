package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
)

// globals are the flags every admin-API command shares.
type globals struct {
	url    string
	json   bool
	stdout io.Writer
	stderr io.Writer
}

// run builds the command tree and executes it; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	return runContext(context.Background(), args, stdout, stderr)
}

// runContext is run with a context: cancelling it stops a long-running
// command (serve, demo --ui) as a signal would.
func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	if cmd, err := root.ExecuteContextC(ctx); err != nil {
		g.printError(nameFlag(cmd, err))
		return 1
	}
	return 0
}

// newRoot builds the command tree.
func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "keybrake",
		Short:         "Spend-capped, revocable vault keys in front of Stripe for AI agents",
		Long:          "Keybrake stands between AI agents and money-moving APIs. An orchestrator issues a short-lived vault key\nwith a dollar cap, an endpoint allow-list and an expiry; agents call the vendor through Keybrake with it.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       readBuildInfo().String(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.PersistentFlags().StringVar(&g.url, "url", envOr("KEYBRAKE_URL", "http://127.0.0.1:8080"), "Keybrake admin API base URL (env KEYBRAKE_URL)")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print JSON instead of tables")

	root.AddCommand(serveCmd(g), demoCmd(g), keyCmd(g), callsCmd(g), reportCmd(g), tokenCmd(g), pricingCmd(g), versionCmd(g))
	root.AddCommand(webhookCmd(g))
	return root
}

// client builds an admin API client from --url and KEYBRAKE_ADMIN_TOKEN.
func (g *globals) client() (*client.Client, error) {
	token := os.Getenv("KEYBRAKE_ADMIN_TOKEN")
	if token == "" {
		return nil, errors.New("KEYBRAKE_ADMIN_TOKEN is not set: export the admin token the server was started with")
	}
	base, err := adminURL(g.url)
	if err != nil {
		return nil, err
	}
	return client.New(base, token), nil
}

// printError reports a failure on stderr, as JSON with --json.
func (g *globals) printError(err error) {
	var ce *client.Error
	var fe *flagError
	if g.json {
		body := map[string]string{"message": err.Error()}
		if errors.As(err, &ce) {
			body = map[string]string{"code": string(ce.Code), "message": ce.Message, "field": ce.Field}
		}
		if errors.As(err, &fe) {
			body["flag"] = fe.flag
		}
		json.NewEncoder(g.stderr).Encode(body) //nolint:errcheck
		return
	}
	fmt.Fprintln(g.stderr, "error:", err)
}

// printJSON writes v indented on stdout.
func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// call runs one admin-API request and prints its answer: indented JSON with
// --json, else what human writes (usually a table). Every admin-API command
// is built on it.
func call[T any](ctx context.Context, g *globals, do func(ctx context.Context, c *client.Client) (T, error), human func(w *tabwriter.Writer, v T)) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	v, err := do(ctx, c)
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(v)
	}
	w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	human(w, v)
	return w.Flush()
}

// pages fetches one page, or with all every page, of a listing. more is
// set when rows remain beyond what was fetched.
func pages[T any](ctx context.Context, c *client.Client, all bool, more *bool, fetch func(ctx context.Context, c *client.Client, cursor string) (*client.Page[T], error)) ([]T, error) {
	var out []T
	cursor := ""
	for {
		page, err := fetch(ctx, c, cursor)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Data...)
		if !all || !page.HasMore {
			*more = page.HasMore
			return out, nil
		}
		cursor = page.NextCursor
	}
}

// list runs a paginated listing through call: one page, or every page
// with all; after one page it hints when more rows exist.
func list[T any](ctx context.Context, g *globals, all bool, what string, fetch func(ctx context.Context, c *client.Client, cursor string) (*client.Page[T], error), human func(w *tabwriter.Writer, v []T)) error {
	var more bool
	shown := 0
	err := call(ctx, g, func(ctx context.Context, c *client.Client) ([]T, error) {
		rows, err := pages(ctx, c, all, &more, fetch)
		shown = len(rows)
		return rows, err
	}, human)
	if err == nil {
		g.hintMore(more, what, shown)
	}
	return err
}

// hintMore says on stderr, after a listing limited to one page, that more
// rows exist and how to see them (stdout stays the table or the JSON).
func (g *globals) hintMore(more bool, what string, shown int) {
	if more {
		fmt.Fprintf(g.stderr, "keybrake: showing the newest %d %s; more exist: --all follows every page, --limit sets the page size (up to %d)\n",
			shown, what, keybrake.MaxPageSize)
	}
}
