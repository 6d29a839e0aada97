package pricing

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/keybrake/keybrake"
)

// MaxFileSize bounds a pricing file.
const MaxFileSize = 1 << 20

// FileError is a malformed pricing file: where, which field, and what is
// wrong with it.
type FileError struct {
	File   string
	Line   int
	Column int
	Field  string // dotted path: operations.twilio.messages.create.sms.countries.US
	Msg    string
}

func (e *FileError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Column)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads a pricing file (YAML or JSON: JSON is read as YAML's flow
// style). Its operations are checked against the catalogues by ApplyTo.
func Load(path string) (*Table, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pricing file: %w", err)
	}
	t := Default()
	if err := t.Apply(path, data); err != nil {
		return nil, err
	}
	return t, nil
}

// Apply overrides the table with a pricing file's content; name is used in
// error messages. On error the table may be partly updated: discard it.
//
// Money is read from the literal text of each value, whether a string
// ("0.0083") or a number (0.0083), and never through a float: a value with
// more than six decimals, an exponent or a sign is refused.
func (t *Table) Apply(name string, data []byte) error {
	if len(data) > MaxFileSize {
		return &FileError{File: name, Msg: fmt.Sprintf("file is larger than %d bytes", MaxFileSize)}
	}
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		fe := &FileError{File: name, Msg: "not valid YAML or JSON: " + err.Error()}
		var ye yaml.Error
		if errors.As(err, &ye) {
			fe.Msg = "not valid YAML or JSON: " + ye.GetMessage()
			if tk := ye.GetToken(); tk != nil && tk.Position != nil {
				fe.Line, fe.Column = tk.Position.Line, tk.Position.Column
			}
		}
		return fe
	}
	var body ast.Node
	for _, doc := range f.Docs {
		if doc == nil || doc.Body == nil {
			continue
		}
		if _, isComment := doc.Body.(*ast.CommentGroupNode); isComment {
			continue
		}
		if body != nil {
			return errAt(name, doc.Body, "", "a pricing file holds one document")
		}
		body = doc.Body
	}
	t.Source = name
	if body == nil {
		return nil // an empty file overrides nothing
	}
	p := &fileParser{name: name, t: t}
	t.file = p
	return p.top(body)
}

type fileParser struct {
	name string
	t    *Table
}

func errAt(name string, n ast.Node, field, msg string) *FileError {
	e := &FileError{File: name, Field: field, Msg: msg}
	if n != nil {
		if tk := n.GetToken(); tk != nil && tk.Position != nil {
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
		}
	}
	return e
}

func (p *fileParser) err(n ast.Node, field, format string, args ...any) error {
	return errAt(p.name, n, field, fmt.Sprintf(format, args...))
}

// entry is one key of a mapping with its value.
type entry struct {
	key     string
	keyNode ast.Node
	value   ast.Node
}

// mapping reads a mapping's entries in order, refusing duplicate keys,
// anchors, aliases, merge keys and tags: a price file stays literal.
func (p *fileParser) mapping(n ast.Node, field string) ([]entry, error) {
	n = unwrapComment(n)
	if n == nil || n.Type() == ast.NullType {
		return nil, nil
	}
	var values []*ast.MappingValueNode
	switch m := n.(type) {
	case *ast.MappingNode:
		values = m.Values
	case *ast.MappingValueNode:
		values = []*ast.MappingValueNode{m}
	default:
		return nil, p.err(n, field, "want a mapping of keys to values, got %s", describe(n))
	}
	seen := map[string]bool{}
	out := make([]entry, 0, len(values))
	for _, mv := range values {
		if mv.Key == nil {
			return nil, p.err(mv, field, "mapping entry without a key")
		}
		if mv.Key.IsMergeKey() {
			return nil, p.err(mv.Key, field, "merge keys (<<) are not supported")
		}
		key, ok := scalarText(mv.Key)
		if !ok {
			return nil, p.err(mv.Key, field, "keys must be plain strings")
		}
		if seen[key] {
			return nil, p.err(mv.Key, join(field, key), "given twice")
		}
		seen[key] = true
		if err := p.literal(mv.Value, join(field, key)); err != nil {
			return nil, err
		}
		out = append(out, entry{key: key, keyNode: mv.Key, value: unwrapComment(mv.Value)})
	}
	return out, nil
}

// literal refuses YAML features that make a value something other than what
// it reads as.
func (p *fileParser) literal(n ast.Node, field string) error {
	switch n.(type) {
	case *ast.AnchorNode, *ast.AliasNode:
		return p.err(n, field, "anchors and aliases are not supported")
	case *ast.TagNode:
		return p.err(n, field, "tags (!!…) are not supported")
	}
	return nil
}

// unwrapComment reads a value that is only a comment as no value.
func unwrapComment(n ast.Node) ast.Node {
	if _, ok := n.(*ast.CommentGroupNode); ok {
		return nil
	}
	return n
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

// scalarText is the literal text of a scalar: a string's value, or a
// number's text exactly as written.
func scalarText(n ast.Node) (string, bool) {
	switch v := n.(type) {
	case *ast.StringNode:
		return v.Value, true
	case *ast.IntegerNode, *ast.FloatNode:
		tk := n.GetToken()
		if tk == nil {
			return "", false
		}
		return tk.Value, true
	case *ast.LiteralNode:
		return "", false
	}
	return "", false
}

func describe(n ast.Node) string {
	if n == nil {
		return "nothing"
	}
	switch n.Type() {
	case ast.MappingType, ast.MappingValueType:
		return "a mapping"
	case ast.SequenceType:
		return "a list"
	case ast.NullType:
		return "null"
	case ast.BoolType:
		return "a boolean"
	case ast.StringType:
		return "a string"
	case ast.IntegerType, ast.FloatType:
		return "a number"
	}
	return strings.ToLower(n.Type().String())
}

// money reads a dollar amount: "0.0083" or 0.0083, exact, at most six
// decimals, not negative.
func (p *fileParser) money(n ast.Node, field string) (keybrake.Micros, error) {
	s, ok := scalarText(n)
	if !ok {
		return 0, p.err(n, field, "want a dollar amount such as \"0.0083\", got %s", describe(n))
	}
	m, err := keybrake.ParseUSD(strings.TrimSpace(s))
	if err != nil {
		return 0, p.err(n, field, "%q is not a dollar amount (want a non-negative decimal with at most 6 decimals, such as \"0.0083\")", s)
	}
	return m, nil
}

func isNull(n ast.Node) bool { return n == nil || n.Type() == ast.NullType }

func (p *fileParser) top(n ast.Node) error {
	entries, err := p.mapping(n, "")
	if err != nil {
		return err
	}
	for _, e := range entries {
		switch e.key {
		case "version":
			if s, _ := scalarText(e.value); s != "1" {
				return p.err(e.value, "version", "only version 1 is supported")
			}
		case "fx":
			err = p.fx(e.value)
		case "operations":
			p.t.ops, err = p.mapping(e.value, "operations")
		case "stripe", "twilio", "resend":
			return p.err(e.keyNode, e.key, "per-vendor sections were replaced by operations, priced by name: "+
				"operations: {%s: {fixed: \"0.01\"}} (run `keybrake pricing` for every operation and its settings)", example[e.key])
		default:
			return p.err(e.keyNode, e.key, "unknown section (want version, fx or operations)")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

var example = map[string]string{"stripe": "stripe.customers.create", "twilio": "twilio.incoming_phone_numbers.create", "resend": "resend.broadcasts.send"}

// fx reads "EUR: 1.08" entries: USD per major unit, exact.
func (p *fileParser) fx(n ast.Node) error {
	entries, err := p.mapping(n, "fx")
	if err != nil {
		return err
	}
	for _, e := range entries {
		field := "fx." + e.key
		s, ok := scalarText(e.value)
		if !ok {
			return p.err(e.value, field, "want the USD price of one unit, such as \"1.08\", got %s", describe(e.value))
		}
		if err := p.t.FX.Set(e.key, s); err != nil {
			return p.err(e.value, field, "%v", err)
		}
	}
	return nil
}

// countries reads {default: "0.10", countries: {US: "0.0083", "+1876": …}}.
// A null default or country removes it (refusing those destinations).
func (p *fileParser) countries(n ast.Node, field string, cp *CountryPrices) error {
	entries, err := p.mapping(n, field)
	if err != nil {
		return err
	}
	for _, e := range entries {
		f := field + "." + e.key
		switch e.key {
		case "default":
			if isNull(e.value) {
				cp.Default, cp.HasDefault = 0, false
				continue
			}
			m, err := p.money(e.value, f)
			if err != nil {
				return err
			}
			cp.Default, cp.HasDefault = m, true
		case "countries":
			list, err := p.mapping(e.value, f)
			if err != nil {
				return err
			}
			for _, c := range list {
				cf := f + "." + c.key
				key, msg := countryKey(c.key)
				if msg != "" {
					return p.err(c.keyNode, cf, "%s", msg)
				}
				if isNull(c.value) {
					delete(cp.ByKey, key)
					continue
				}
				m, err := p.money(c.value, cf)
				if err != nil {
					return err
				}
				if cp.ByKey == nil {
					cp.ByKey = map[string]keybrake.Micros{}
				}
				cp.ByKey[key] = m
			}
		default:
			return p.err(e.keyNode, f, "unknown field (want default or countries)")
		}
	}
	return nil
}

// countryKey checks a destination key: an ISO 3166-1 alpha-2 code the
// calling-code table knows, or "+" and 1 to 7 digits.
func countryKey(k string) (string, string) {
	if strings.HasPrefix(k, "+") {
		d := k[1:]
		if len(d) < 1 || len(d) > 7 || strings.Trim(d, "0123456789") != "" || d[0] == '0' {
			return "", fmt.Sprintf("destination %q: an E.164 prefix is + and 1 to 7 digits, such as \"+1876\"", k)
		}
		return k, ""
	}
	up := strings.ToUpper(k)
	if !KnownCountry(up) {
		return "", fmt.Sprintf("unknown country code %q (want an ISO 3166-1 alpha-2 code such as \"US\", or an E.164 prefix such as \"+1876\")", k)
	}
	return up, ""
}
