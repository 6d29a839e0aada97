package keybrake

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"testing"
)

// Every Code constant of the package is in codes, so ParseOutcome accepts
// denied_<code> for each (a code added without it would make its denials
// unlistable).
func TestEveryCodeIsKnown(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	known := map[Code]bool{}
	for _, c := range codes {
		known[c] = true
	}
	n := 0
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(node ast.Node) bool {
			vs, ok := node.(*ast.ValueSpec)
			if !ok || vs.Type == nil || len(vs.Values) != len(vs.Names) {
				return true
			}
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Code" {
				return true
			}
			for i, v := range vs.Values {
				lit, ok := v.(*ast.BasicLit)
				if !ok {
					continue
				}
				s, _ := strconv.Unquote(lit.Value)
				n++
				if !known[Code(s)] {
					t.Errorf("%s: code %s (%q) is missing from codes in outcome.go", name, vs.Names[i].Name, s)
				}
				if _, e := ParseOutcome("denied_" + s); e != nil {
					t.Errorf("denied_%s refused: %v", s, e)
				}
			}
			return true
		})
	}
	if n != len(codes) {
		t.Errorf("%d Code constants, %d in codes", n, len(codes))
	}
}

func TestParseOutcome(t *testing.T) {
	for _, s := range []string{"pending", "forwarded", "unknown", "unknown_retried", "replayed", "denied_cap_exhausted"} {
		if o, e := ParseOutcome(s); e != nil || string(o) != s {
			t.Errorf("%q: %v %v", s, o, e)
		}
	}
	for _, s := range []string{"", "bogus", "denied_", "denied_bogus", "Forwarded", "cap_exhausted"} {
		if _, e := ParseOutcome(s); e == nil || e.Field != "outcome" || e.Code != CodeInvalidRequest {
			t.Errorf("%q accepted: %v", s, e)
		}
	}
}
