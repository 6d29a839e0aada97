package docs_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// codeConstants reads errors.go: the name and value of every Code constant.
func codeConstants(t *testing.T) map[string]keybrake.Code {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot, "errors.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]keybrake.Code{}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Code" {
				continue
			}
			for i, name := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok {
					continue
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				out[name.Name] = keybrake.Code(v)
			}
		}
	}
	if len(out) < 20 {
		t.Fatalf("read only %d codes from errors.go", len(out))
	}
	return out
}

// answeredCodes are the Code constants that code outside errors.go and
// outcome.go (where every code is declared and listed) refers to: the
// codes a client can be answered with.
func answeredCodes(t *testing.T, consts map[string]keybrake.Code) map[keybrake.Code][]string {
	t.Helper()
	out := map[keybrake.Code][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != repoRoot && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(repoRoot, path)
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") ||
			rel == "errors.go" || rel == "outcome.go" {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		root := f.Name.Name == "keybrake" && filepath.Dir(rel) == "."
		ast.Inspect(f, func(n ast.Node) bool {
			var name string
			switch n := n.(type) {
			case *ast.SelectorExpr:
				if x, ok := n.X.(*ast.Ident); ok && x.Name == "keybrake" {
					name = n.Sel.Name
				}
			case *ast.Ident:
				if root {
					name = n.Name
				}
			}
			if c, ok := consts[name]; ok {
				out[c] = append(out[c], rel)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var codeRowRE = regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| (\\d{3}) \\|")

// The README's error table is what an agent branches on: every code in it
// exists with the status it says, and every code the code base answers
// with is in it.
func TestErrorTableMatchesCode(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Error codes\n")
	if !ok {
		t.Fatal("README.md has no \"## Error codes\" section")
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	consts := codeConstants(t)
	known := map[keybrake.Code]bool{}
	for _, c := range consts {
		known[c] = true
	}
	listed := map[keybrake.Code]bool{}
	for _, m := range codeRowRE.FindAllStringSubmatch(section, -1) {
		c := keybrake.Code(m[1])
		if listed[c] {
			t.Errorf("the error table lists %s twice", c)
		}
		listed[c] = true
		if !known[c] {
			t.Errorf("the error table lists %s, which errors.go does not define", c)
			continue
		}
		if got := strconv.Itoa(c.HTTPStatus()); got != m[2] {
			t.Errorf("the error table says %s is %s; Code.HTTPStatus says %s", c, m[2], got)
		}
	}
	if len(listed) < 20 {
		t.Fatalf("read only %d rows of the error table", len(listed))
	}
	for c, where := range answeredCodes(t, consts) {
		if !listed[c] {
			t.Errorf("%s is answered (%s) but missing from the README's error table", c, strings.Join(dedupe(where), ", "))
		}
	}
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

var (
	helpFlagRE = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`)
	helpEnvRE  = regexp.MustCompile(`\(env (KEYBRAKE_[A-Z0-9_]+)`)
	docFlagRE  = regexp.MustCompile("`--([a-z0-9-]+)")
)

// docs/configuration.md lists every flag `keybrake serve --help` shows,
// with its environment variable, and no flag serve does not have.
func TestConfigurationListsEveryServeFlag(t *testing.T) {
	if testing.Short() {
		t.Skip("builds keybrake")
	}
	out, err := exec.Command(kbtest.Binary(t), "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("keybrake serve --help: %v\n%s", err, out)
	}
	help, _, _ := strings.Cut(string(out), "Global Flags:")
	_, help, _ = strings.Cut(help, "Flags:")
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(doc), "\n## Flags\n")
	table, _, _ = strings.Cut(table, "\n## ")

	flags := map[string]bool{"help": true}
	for _, m := range helpFlagRE.FindAllStringSubmatch(help, -1) {
		flags[m[1]] = true
		if m[1] != "help" && !strings.Contains(table, "`--"+m[1]+"`") && !strings.Contains(table, "`--"+m[1]+" ") {
			t.Errorf("docs/configuration.md does not list --%s", m[1])
		}
	}
	if len(flags) < 20 {
		t.Fatalf("read only %d flags from serve --help:\n%s", len(flags), help)
	}
	for _, m := range helpEnvRE.FindAllStringSubmatch(help, -1) {
		env := m[1]
		// The table abbreviates families: KEYBRAKE_WEBHOOK_… stands for
		// the four webhook variables.
		named := strings.Contains(table, env)
		for i := len("KEYBRAKE_"); !named && i < len(env); i++ {
			named = env[i] == '_' && strings.Contains(table, env[:i+1]+"…")
		}
		if !named {
			t.Errorf("docs/configuration.md does not name %s", env)
		}
	}
	for _, m := range docFlagRE.FindAllStringSubmatch(table, -1) {
		if !flags[m[1]] {
			t.Errorf("docs/configuration.md lists --%s, which keybrake serve does not have", m[1])
		}
	}
}
