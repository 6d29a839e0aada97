package ui_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/dom"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/keybrake/keybrake/internal/kbtest"
)

// The browser tests drive Debian's headless Chromium through chromedp (the
// DevTools protocol from Go): no Node, no driver binary, no browser
// download; the test starts Keybrake and the browser itself, like any other
// go test. .ci/setup.d/20-chromium.sh installs the chromium package.

// chromiumPath finds the browser: KEYBRAKE_CHROMIUM, else /usr/bin/chromium
// (Debian's package), else chromium on PATH. Outside CI a missing browser
// skips the test; under CI it fails it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("KEYBRAKE_CHROMIUM"); p != "" {
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	return kbtest.RequireTool(t, "chromium", "apt-get install -y chromium (or .ci/setup.d/20-chromium.sh)")
}

// tab is one browser tab with what it saw: every JavaScript dialog that
// opened (a hostile label that ran would open one) and every console error
// or uncaught exception (a CSP violation by our own pages shows there).
type tab struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	dialogs  []string
	problems []string
}

func newBrowser(t *testing.T) *tab {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.WindowSize(1280, 1000),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &tab{t: t, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil { // start the browser
		t.Fatalf("start chromium: %v", err)
	}
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.dialogs = append(b.dialogs, ev.Type.String()+": "+ev.Message)
			b.mu.Unlock()
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false}) //nolint:errcheck // the test fails on the dialog anyway
		}
	}()
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			// A refused sign-in answers 401 on purpose; the browser logs
			// every 4xx page load, and that one is expected.
			if strings.HasPrefix(m.Text, "Failed to load resource: the server responded with a status of 401") && strings.Contains(m.URL, "/ui/signin") {
				continue
			}
			if m.IsException() || m.Type == "error" || m.Type == "assert" {
				b.mu.Lock()
				b.problems = append(b.problems, m.String()+" at "+m.URL)
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// noDialogs fails the test if any page opened a dialog, and noProblems if
// any logged an error.
func (b *tab) noDialogs() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.dialogs) > 0 {
		b.t.Fatalf("a page opened JavaScript dialogs (hostile input ran): %q", b.dialogs)
	}
}

func (b *tab) noProblems() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.problems) > 0 {
		b.t.Errorf("the pages logged errors: %q", b.problems)
	}
}

// timeout bounds one step; the browser lives on the parent context.
func (b *tab) step() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, 20*time.Second)
}

func (b *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func run[T any](b *tab, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// open navigates and waits for the page's main element.
func (b *tab) open(url string) {
	b.t.Helper()
	b.do("open "+url, chromedp.Navigate(url), chromedp.WaitReady(chromedp.CSS("body")))
}

func (b *tab) location() string { b.t.Helper(); return run(b, "location", chromedp.Location()) }

func (b *tab) text(sel string) string {
	b.t.Helper()
	return strings.Join(strings.Fields(run(b, "text of "+sel, chromedp.TextContent(chromedp.CSS(sel)))), " ")
}

func (b *tab) html() string {
	b.t.Helper()
	return run(b, "page HTML", chromedp.OuterHTML(chromedp.CSS("html")))
}

func (b *tab) eval(js string) bool {
	b.t.Helper()
	return run(b, js, chromedp.Evaluate[bool](js))
}

// signIn types token into the field labelled "Admin token" and presses the
// button named "Sign in", as a person would.
func (b *tab) signIn(token string) {
	b.t.Helper()
	field := b.byName("textbox", "Admin token")
	button := b.byName("button", "Sign in")
	// Focus then type: what chromedp.SendKeys does, without its unlocked
	// read of the node's attributes, which races with the DOM events that
	// update them (chromedp v0.23.0, query.go: `attrs := n.Attributes`
	// before n.RLock; -race caught it in CI).
	b.do("sign in",
		chromedp.Clear(chromedp.CSS(field)),
		chromedp.WaitVisible(chromedp.CSS(field)),
		chromedp.Focus(chromedp.CSS(field)),
		chromedp.KeyEvent(token),
	)
	b.clickAndWait("press Sign in", chromedp.Click(chromedp.CSS(button)))
}

// byName finds the one element with the accessible role and name (what a
// screen reader announces) and returns a CSS selector for it: its id, or
// failing that a selector the test tags it with.
func (b *tab) byName(role, name string) string {
	b.t.Helper()
	return b.byNameIn("body", role, name)
}

// byNameIn is byName within the element scope selects (a dialog, a row).
func (b *tab) byNameIn(scope, role, name string) string {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	sel, err := chromedp.Run(ctx, func(ctx context.Context, t *chromedp.Target) (string, error) {
		doc, err := chromedp.Nodes(chromedp.CSS(scope))(ctx, t)
		if err != nil {
			return "", err
		}
		res, err := chromedp.Call(ctx, accessibility.QueryAXTree, accessibility.QueryAXTreeParams{
			BackendNodeID: doc[0].BackendNodeID, AccessibleName: name, Role: role})
		if err != nil {
			return "", err
		}
		var found []*accessibility.Node
		for _, n := range res.Nodes {
			if !n.Ignored {
				found = append(found, n)
			}
		}
		if len(found) != 1 {
			return "", errors.New("want exactly one " + role + " named " + name + ", found " + itoa(len(found)))
		}
		return tagBackendNode(ctx, found[0].BackendDOMNodeID, role+"-"+name)
	})
	if err != nil {
		b.t.Fatalf("find the %s named %q: %v", role, name, err)
	}
	return sel
}

var tags atomic.Int64

// tagBackendNode marks a DOM node with an attribute the test can select.
func tagBackendNode(ctx context.Context, id cdp.BackendNodeID, what string) (string, error) {
	pushed, err := chromedp.Call(ctx, dom.PushNodesByBackendIDsToFrontend, dom.PushNodesByBackendIDsToFrontendParams{BackendNodeIDs: []cdp.BackendNodeID{id}})
	if err != nil {
		return "", err
	}
	if len(pushed.NodeIDs) != 1 || pushed.NodeIDs[0] == 0 {
		return "", errors.New(what + ": the node is not in the document")
	}
	tag := strconv.FormatInt(tags.Add(1), 10)
	if _, err := chromedp.Call(ctx, dom.SetAttributeValue, dom.SetAttributeValueParams{NodeID: pushed.NodeIDs[0], Name: "data-test-found", Value: tag}); err != nil {
		return "", err
	}
	return `[data-test-found="` + tag + `"]`, nil
}

func itoa(n int) string { return strconv.Itoa(n) }

// clickAndWait runs an action that navigates and waits for the new page.
func (b *tab) clickAndWait(what string, click chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.WaitEvent(page.LoadEventFired, nil, click)); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// waitText waits until the element's text contains want.
func waitText(sel, want string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Poll[bool](`(document.querySelector(`+strconv.Quote(sel)+`)?.textContent || '').includes(`+strconv.Quote(want)+`)`)(ctx, t)
		return chromedp.Void{}, err
	}
}
