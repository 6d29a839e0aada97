// These tests check that the documentation (README.md, docs/) stays true
// to itself and to the code, so a page moved, renamed or split cannot leave
// a reader at a dead link. They are an external test package: package docs
// embeds the OpenAPI document the server imports, and the tests import the
// server's test harness.

package docs_test

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"
)

// repoRoot is the repository, seen from this package's directory.
const repoRoot = ".."

// selfURL is how Go code and pages link to this repository's files by
// absolute URL (the Twilio error body's more_info, say). Such links are
// checked like relative ones: the file and the anchor must exist here.
const selfURL = "https://github.com/keybrake/keybrake/blob/main/"

// pages are the Markdown files whose links are checked: the README,
// everything under docs/, and the integrations' READMEs the docs send
// readers to.
func pages(t *testing.T) []string {
	t.Helper()
	out := []string{"README.md"}
	for _, pattern := range []string{"docs/*.md", "integrations/*/README.md"} {
		m, err := filepath.Glob(filepath.Join(repoRoot, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range m {
			rel, _ := filepath.Rel(repoRoot, p)
			out = append(out, filepath.ToSlash(rel))
		}
	}
	sort.Strings(out)
	return out
}

// page is one Markdown file, read once: its text with code blanked out
// (links inside code are examples, not links) and its headings' anchors.
type page struct {
	path    string // relative to the repository root, with slashes
	prose   string // the text, code blocks and code spans replaced by spaces
	anchors map[string]bool
}

var pageCache = map[string]*page{}

func loadPage(t *testing.T, path string) *page {
	t.Helper()
	if p, ok := pageCache[path]; ok {
		return p
	}
	b, err := os.ReadFile(filepath.Join(repoRoot, filepath.FromSlash(path)))
	if err != nil {
		t.Fatal(err)
	}
	prose := blankCode(string(b))
	p := &page{path: path, prose: prose, anchors: anchors(prose)}
	pageCache[path] = p
	return p
}

// blankCode replaces fenced code blocks and inline code spans with spaces,
// keeping every newline, so what is left is prose (with its line numbers)
// and headings are not confused with shell comments in a ```sh block.
// Inline code inside headings is kept as text: GitHub's anchor includes it.
func blankCode(s string) string {
	lines := strings.SplitAfter(s, "\n")
	fence := ""
	for i, l := range lines {
		trimmed := strings.TrimLeft(l, " ")
		if fence == "" {
			if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
				fence = trimmed[:3]
				lines[i] = blank(l)
				continue
			}
			if strings.HasPrefix(trimmed, "#") {
				continue // a heading: its code spans are part of its anchor
			}
			lines[i] = blankSpans(l)
			continue
		}
		if strings.HasPrefix(trimmed, fence) {
			fence = ""
		}
		lines[i] = blank(l)
	}
	return strings.Join(lines, "")
}

// blankSpans blanks the `code spans` of one line (a run of n backticks
// closes at the next run of exactly n).
func blankSpans(l string) string {
	b := []byte(l)
	for i := 0; i < len(b); {
		if b[i] != '`' {
			i++
			continue
		}
		n := 0
		for i+n < len(b) && b[i+n] == '`' {
			n++
		}
		end := -1
		for j := i + n; j < len(b); {
			if b[j] != '`' {
				j++
				continue
			}
			m := 0
			for j+m < len(b) && b[j+m] == '`' {
				m++
			}
			if m == n {
				end = j + m
				break
			}
			j += m
		}
		if end < 0 {
			i += n
			continue
		}
		for k := i; k < end; k++ {
			b[k] = ' '
		}
		i = end
	}
	return string(b)
}

func blank(l string) string {
	if strings.HasSuffix(l, "\n") {
		return strings.Repeat(" ", len(l)-1) + "\n"
	}
	return strings.Repeat(" ", len(l))
}

var headingRE = regexp.MustCompile(`(?m)^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$`)

// anchors are the ids GitHub gives the headings of a page.
func anchors(prose string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	for _, m := range headingRE.FindAllStringSubmatch(prose, -1) {
		slug := Slug(m[2])
		if n := seen[slug]; n > 0 {
			out[fmt.Sprintf("%s-%d", slug, n)] = true
		} else {
			out[slug] = true
		}
		seen[slug]++
	}
	return out
}

var (
	inlineLinkRE = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
	emphasisRE   = regexp.MustCompile("[*`]")
)

// Slug is GitHub's anchor for a heading: the heading's text as rendered
// (link targets, backticks and emphasis markers gone), lower-cased, every
// character that is not a letter, digit, mark, space, '-' or '_' dropped,
// and each space made a '-'.
func Slug(heading string) string {
	text := inlineLinkRE.ReplaceAllString(heading, "$1")
	text = emphasisRE.ReplaceAllString(text, "")
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

var (
	// [text](target) and ![alt](target), with an optional "title".
	linkRE = regexp.MustCompile(`!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)`)
	// [label]: target
	refDefRE = regexp.MustCompile(`(?m)^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$`)
	// <https://…> autolinks and HTML href/src attributes.
	autolinkRE = regexp.MustCompile(`<(https?://[^>\s]+)>`)
	htmlAttrRE = regexp.MustCompile(`(?i)\b(?:href|src)\s*=\s*"([^"]*)"`)
	schemeRE   = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// link is one link found on a page.
type link struct {
	from   string // the page
	line   int
	target string
}

func (l link) String() string { return fmt.Sprintf("%s:%d: %s", l.from, l.line, l.target) }

func links(p *page) []link {
	var out []link
	add := func(idx []int, target string) {
		out = append(out, link{from: p.path, line: 1 + strings.Count(p.prose[:idx[0]], "\n"), target: target})
	}
	for _, re := range []*regexp.Regexp{linkRE, refDefRE, autolinkRE, htmlAttrRE} {
		for _, m := range re.FindAllStringSubmatchIndex(p.prose, -1) {
			add(m, p.prose[m[2]:m[3]])
		}
	}
	return out
}

// check reports what is wrong with one link, or "".
func check(t *testing.T, l link) string {
	t.Helper()
	target := l.target
	if target == "" {
		return "empty link target"
	}
	if schemeRE.MatchString(target) {
		return checkURL(t, l)
	}
	path, frag, _ := strings.Cut(target, "#")
	path, err := url.PathUnescape(path)
	if err != nil {
		return fmt.Sprintf("bad escape in the path: %v", err)
	}
	var file string
	switch {
	case path == "":
		file = l.from
	case strings.HasPrefix(path, "/"):
		file = strings.TrimPrefix(path, "/") // GitHub reads /x as the repository's x
	default:
		file = filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(l.from), path)))
	}
	if file == ".." || strings.HasPrefix(file, "../") {
		return "points outside the repository"
	}
	return checkFile(t, file, frag)
}

// checkFile says whether file exists in the repository and, for a
// Markdown file, whether frag is one of its headings' anchors.
func checkFile(t *testing.T, file, frag string) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(repoRoot, filepath.FromSlash(file))); err != nil {
		return fmt.Sprintf("%s does not exist", file)
	}
	if frag == "" || !strings.HasSuffix(file, ".md") {
		return ""
	}
	if !loadPage(t, file).anchors[frag] {
		return fmt.Sprintf("%s has no heading with the anchor #%s", file, frag)
	}
	return ""
}

// checkURL checks an absolute link without fetching it (the tests run
// without a network): http and https links must be well-formed with a
// host; links to this repository's files must resolve here.
func checkURL(t *testing.T, l link) string {
	t.Helper()
	if rest, ok := strings.CutPrefix(l.target, selfURL); ok {
		file, frag, _ := strings.Cut(rest, "#")
		return checkFile(t, file, frag)
	}
	u, err := url.Parse(l.target)
	if err != nil {
		return fmt.Sprintf("not a URL: %v", err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" || strings.ContainsAny(u.Host, " <>\"") {
			return "no host"
		}
	case "mailto":
		if !strings.Contains(u.Opaque, "@") {
			return "not an address"
		}
	default:
		return fmt.Sprintf("scheme %q: only http, https and mailto links are expected", u.Scheme)
	}
	return ""
}

// Every relative link in the README and docs/ resolves to a file of the
// repository, and every #anchor to a heading of the page it names.
func TestLinksResolve(t *testing.T) {
	n := 0
	for _, path := range pages(t) {
		for _, l := range links(loadPage(t, path)) {
			n++
			if problem := check(t, l); problem != "" {
				t.Errorf("%v: %s", l, problem)
			}
		}
	}
	if n < 50 {
		t.Fatalf("found only %d links: is the link pattern still right?", n)
	}
}

// Links to this repository by absolute URL from Go code (an error body's
// more_info, say) resolve too: a renamed page or heading would otherwise
// send a client to a 404.
func TestGoCodeLinksResolve(t *testing.T) {
	re := regexp.MustCompile(regexp.QuoteMeta(selfURL) + `[^"'\s)]+`)
	n := 0
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && path != repoRoot {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, path)
		for _, m := range re.FindAllStringIndex(string(b), -1) {
			n++
			l := link{from: filepath.ToSlash(rel), line: 1 + strings.Count(string(b[:m[0]]), "\n"), target: string(b[m[0]:m[1]])}
			if problem := checkURL(t, l); problem != "" {
				t.Errorf("%v: %s", l, problem)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("no Go file links to %s: is the pattern still right?", selfURL)
	}
}

// The anchor rules are GitHub's, on the headings these pages have.
func TestSlug(t *testing.T) {
	for heading, want := range map[string]string{
		"Quick start, with no vendor account":                "quick-start-with-no-vendor-account",
		"Verifying `Keybrake-Signature`":                     "verifying-keybrake-signature",
		"`Connection` cannot remove what Keybrake relies on": "connection-cannot-remove-what-keybrake-relies-on",
		"Lambda + SQS":              "lambda--sqs",
		"Keybrake's security model": "keybrakes-security-model",
		"Deploying Keybrake: one process on SQLite, or more": "deploying-keybrake-one-process-on-sqlite-or-more",
		"Configuring `keybrake serve`":                       "configuring-keybrake-serve",
		"store_unavailable and **bold** and [a link](x.md)":  "store_unavailable-and-bold-and-a-link",
		"Money in Keybrake: integer micro-dollars — exactly": "money-in-keybrake-integer-micro-dollars--exactly",
		"Prices × 1.08": "prices--108",
	} {
		if got := Slug(heading); got != want {
			t.Errorf("Slug(%q) = %q, want %q", heading, got, want)
		}
	}
	a := anchors(blankCode("# A\n\n## Errors\n\n```sh\n# not a heading\n```\n\n## Errors\n"))
	for _, want := range []string{"a", "errors", "errors-1"} {
		if !a[want] {
			t.Errorf("anchors: no %q in %v", want, a)
		}
	}
	if a["not-a-heading"] {
		t.Error("a shell comment in a code block was read as a heading")
	}
}

// The checker finds what it must find, and refuses what it must refuse.
func TestCheckerCatchesBrokenLinks(t *testing.T) {
	p := &page{path: "docs/x.md"}
	p.prose = blankCode("See [ok](vendors.md#errors), [gone](nope.md), `[code](nope.md)`,\n" +
		"[bad anchor](vendors.md#no-such-heading), ![img](ui/overview.png) and <https://example.com/x>.\n" +
		"```\n[in a block](nope.md)\n```\n[ref]: ../README.md#error-codes\n[mail](mailto:x) [ftp](ftp://example.com/f) [nohost](https:///x)\n")
	got := map[string]string{}
	for _, l := range links(p) {
		got[l.target] = check(t, l)
	}
	want := map[string]bool{ // target → should pass
		"vendors.md#errors":          true,
		"nope.md":                    false,
		"vendors.md#no-such-heading": false,
		"ui/overview.png":            true,
		"https://example.com/x":      true,
		"../README.md#error-codes":   true,
		"mailto:x":                   false,
		"ftp://example.com/f":        false,
		"https:///x":                 false,
	}
	for target, ok := range want {
		problem, found := got[target]
		switch {
		case !found:
			t.Errorf("link %q not found (found %v)", target, got)
		case ok && problem != "":
			t.Errorf("link %q refused: %s", target, problem)
		case !ok && problem == "":
			t.Errorf("link %q accepted", target)
		}
	}
	if len(got) != len(want) {
		t.Errorf("found links %v; the ones in code should not count", got)
	}
}
