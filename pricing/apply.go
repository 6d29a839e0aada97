package pricing

import (
	"fmt"
	"strings"

	"github.com/goccy/go-yaml/ast"

	"github.com/keybrake/keybrake"
)

// Target is a vendor whose catalogue a pricing file overrides.
type Target interface {
	Name() string
	Owns(path string) bool
	Catalog() *keybrake.Catalog
}

// ApplyTo lays the file's operations over the vendors' catalogues:
//
//	operations:
//	  stripe.customers.create:            # a catalogued operation, by name
//	    fixed: "0.01"                     # a fixed price per call, added to its own
//	  twilio.messages.create:
//	    sms: {countries: {GB: "0.0524"}}  # the operation's own settings
//	  stripe.credit_notes.create:         # an operation the catalogue lacks:
//	    method: POST                      # added, at a fixed price
//	    path: /v1/credit_notes
//	    fixed: "2.00"
//
// Forbidden operations cannot be priced, and an added operation may not
// share a path with a catalogued one (price that one by name instead). Errors
// name the file, line, column and field. Call it once, before serving.
func (t *Table) ApplyTo(vendors ...Target) error {
	if t.file == nil {
		return nil
	}
	byName := map[string]Target{}
	var names []string
	for _, v := range vendors {
		byName[v.Name()] = v
		names = append(names, v.Name())
	}
	p := t.file
	for _, e := range t.ops {
		field := "operations." + e.key
		vendor, name, _ := strings.Cut(e.key, ".")
		if !keybrake.ValidOperationName(e.key) || !keybrake.ValidOperationName(name) {
			return p.err(e.keyNode, field, "want an operation name qualified by its vendor, such as stripe.customers.create")
		}
		v, ok := byName[vendor]
		if !ok {
			return p.err(e.keyNode, field, "unknown vendor %q (want %s)", vendor, strings.Join(names, ", "))
		}
		entries, err := p.mapping(e.value, field)
		if err != nil {
			return err
		}
		if op := v.Catalog().Lookup(name); op != nil {
			err = p.override(op, e, field, entries)
		} else {
			err = p.add(v, name, e, field, entries)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// override applies a catalogued operation's fixed price and settings.
func (p *fileParser) override(op *keybrake.Operation, e entry, field string, entries []entry) error {
	if op.Model == keybrake.ModelForbidden {
		return p.err(e.keyNode, field, "%s (%s %s) is forbidden and cannot be priced: %s", op.FullName(), op.Method, op.Path(), op.Note)
	}
	var ps Params
	if c, ok := op.Pricer.(Configurable); ok {
		ps = c.Params()
	}
	want := strings.TrimSuffix("fixed, "+ps.names(), ", ")
	for _, s := range entries {
		switch s.key {
		case "fixed":
			m, err := p.money(s.value, join(field, s.key))
			if err != nil {
				return err
			}
			op.Fixed, op.HasFixed = m, true
		case "method", "path":
			return p.err(s.keyNode, join(field, s.key), "%s is already %s %s in the catalogue; method and path are only for an operation it lacks", op.FullName(), op.Method, op.Path())
		default:
			if err := p.setting(s, field, ps, want); err != nil {
				return err
			}
		}
	}
	return nil
}

// add adds an operation the catalogue lacks, at a fixed price.
func (p *fileParser) add(v Target, name string, e entry, field string, entries []entry) error {
	var method, path string
	var pathNode, methodNode ast.Node
	op := &keybrake.Operation{Vendor: v.Name(), Name: name, Model: keybrake.ModelFixed, Added: true,
		Note: "added by the pricing file"}
	for _, s := range entries {
		f := join(field, s.key)
		switch s.key {
		case "method":
			method, _ = scalarText(s.value)
			methodNode = s.value
		case "path":
			path, _ = scalarText(s.value)
			pathNode = s.value
		case "fixed":
			m, err := p.money(s.value, f)
			if err != nil {
				return err
			}
			op.Fixed, op.HasFixed = m, true
		default:
			return p.err(s.keyNode, f, "unknown field: %s is not in the %s catalogue, so it can only be added with method, path and fixed", e.key, v.Name())
		}
	}
	if method == "" || path == "" || !op.HasFixed {
		return p.err(e.keyNode, field, "%s is not in the %s catalogue: to add it, give method, path and fixed (run `keybrake pricing` for the catalogue)", e.key, v.Name())
	}
	rule, err := keybrake.ParseRule(method + " " + path)
	if err != nil || rule.IsOperation() {
		return p.err(methodNode, join(field, "method"), "%s %s: %v", method, path, err)
	}
	if !v.Owns(rule.Path()) {
		return p.err(pathNode, join(field, "path"), "%s is not a path of the %s API", path, v.Name())
	}
	cat := v.Catalog()
	op.Method = rule.Method
	op.Pattern = keybrake.MustParsePattern(cat.Normalize(rule.Path()))
	if clash := cat.Overlapping(op.Method, op.Pattern); len(clash) > 0 {
		return p.err(pathNode, join(field, "path"), "%s %s shares paths with %s (%s %s): price that operation by name instead",
			op.Method, op.Path(), clash[0].FullName(), clash[0].Method, clash[0].Path())
	}
	if err := cat.Add(op); err != nil {
		return p.err(e.keyNode, field, "%v", err)
	}
	return nil
}

// Describe says what a call of op costs, for `keybrake pricing`.
func Describe(op *keybrake.Operation) string {
	var parts []string
	switch op.Model {
	case keybrake.ModelForbidden:
		return "never forwarded: " + op.Note
	case keybrake.ModelFixed:
		if !op.HasFixed {
			return fmt.Sprintf("refused until priced (operations.%s.fixed)", op.FullName())
		}
	}
	if op.Pricer != nil {
		parts = append(parts, op.Pricer.Describe())
	}
	if op.HasFixed && (op.Fixed > 0 || op.Model == keybrake.ModelFixed) {
		parts = append(parts, op.Fixed.String()+" per call")
	}
	if len(parts) == 0 {
		return "0"
	}
	return strings.Join(parts, " + ")
}
