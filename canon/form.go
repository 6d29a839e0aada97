package canon

import (
	"bytes"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// Form is a form-encoded body as a vendor reads it: a tree of parameters.
// Under the bracket grammar (Stripe's) a key is a name followed by [sub]
// parts, metadata[order]=42, items[0][price]=p; under the flat grammar
// (Twilio's) a key is one PascalCase name, and may repeat (MediaUrl).
type Form struct {
	flat       bool
	lim        Limits
	root       *node
	names      map[string]string // flat: lower-cased name → name, to refuse names that differ only in case
	repeatable func(name string) bool
}

type nodeKind int

const (
	leafNode nodeKind = iota
	objectNode
	listNode // name[]=a&name[]=b
)

type node struct {
	kind nodeKind
	vals []string // leaf values (several only in a flat form); list items
	kids map[string]*node
}

func newObject() *node { return &node{kind: objectNode, kids: map[string]*node{}} }

// ParseBracketForm reads a body under Stripe's grammar (Stripe's API is
// Ruby; Rack reads keys so): name, then zero or more [sub] parts. Anything a
// Rack-style parser would read as another key is refused, naming the key:
// a key with no name before its brackets ("[amount]", which Rack reads as
// amount), stray or unbalanced brackets ("amount]", "]amount", "a[b"),
// empty brackets anywhere but at the end ("a[][b]"), a key given twice, a
// key both a value and a parent ("a=1&a[b]=2"), and control characters.
// The raw body must be percent-encoded ASCII separated by '&' only: a
// literal ';' (a separator to some parsers) or space is refused.
func ParseBracketForm(body []byte, lim Limits) (*Form, error) {
	f := &Form{lim: lim.orDefault(), root: newObject()}
	return f, f.parse(body)
}

// ParseFlatForm reads a body under Twilio's grammar: every name is
// PascalCase letters and digits ("To", "MediaUrl"), only the names the
// vendor's API takes as lists may repeat (repeatable; nil: none), and two
// names that differ only in letter case are refused.
func ParseFlatForm(body []byte, lim Limits, repeatable func(name string) bool) (*Form, error) {
	if repeatable == nil {
		repeatable = func(string) bool { return false }
	}
	f := &Form{flat: true, lim: lim.orDefault(), root: newObject(), names: map[string]string{}, repeatable: repeatable}
	return f, f.parse(body)
}

func (f *Form) parse(body []byte) error {
	for i, c := range body {
		if c < 0x21 || c == 0x7f || c == ';' {
			return unpriceable("form body: byte %q at offset %d: a form body is percent-encoded and separated by '&' only (write a space as + or %%20, a ';' as %%3B)", c, i)
		}
	}
	n := 0
	for len(body) > 0 {
		var seg []byte
		seg, body, _ = bytes.Cut(body, []byte{'&'})
		if len(seg) == 0 {
			continue
		}
		if n++; n > f.lim.MaxParams {
			return tooLarge("form body has more than %d parameters", f.lim.MaxParams)
		}
		rawKey, rawVal, _ := bytes.Cut(seg, []byte{'='})
		key, err := url.QueryUnescape(string(rawKey))
		if err != nil {
			return unpriceable("form key %s is not valid percent-encoding", quote(string(rawKey)))
		}
		val, err := url.QueryUnescape(string(rawVal))
		if err != nil {
			return unpriceable("the value of form key %s is not valid percent-encoding", quote(key))
		}
		if f.flat {
			err = f.addFlat(key, val)
		} else {
			err = f.addBracket(key, val)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (f *Form) addFlat(key, val string) error {
	if !pascal(key) {
		return unpriceable("form key %s: parameter names are letters and digits starting with a capital (To, MediaUrl)", quote(key))
	}
	lower := strings.ToLower(key)
	if other, ok := f.names[lower]; ok && other != key {
		return unpriceable("form keys %s and %s differ only in letter case: write one of them", quote(other), quote(key))
	}
	f.names[lower] = key
	n := f.root.kids[key]
	if n == nil {
		n = &node{kind: leafNode}
		f.root.kids[key] = n
	} else if !f.repeatable(key) {
		return unpriceable("form key %s is given more than once: a parser downstream might read another of its values than Keybrake", quote(key))
	}
	n.vals = append(n.vals, val)
	return nil
}

func pascal(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// splitBracketKey reads "name[a][b]" into [name a b]; push is true for a
// final "[]" (append to a list).
func splitBracketKey(key string, maxDepth int) (parts []string, push bool, err error) {
	bad := func(why string) ([]string, bool, error) {
		return nil, false, unpriceable("form key %s: %s; Stripe's keys are a name followed by [sub] parts, such as metadata[order_id]", quote(key), why)
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] == 0x7f {
			return bad("it holds a control character")
		}
	}
	name, _, _ := strings.Cut(key, "[")
	rest := key[len(name):]
	switch {
	case name == "":
		return bad("it has no name before its brackets (a Rack-style parser reads it as another key)")
	case strings.Contains(name, "]"):
		return bad("a ']' without its '['")
	}
	parts = append(parts, name)
	for rest != "" {
		if rest[0] != '[' {
			return bad("text after a ']'")
		}
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return bad("a '[' without its ']'")
		}
		sub := rest[1:end]
		if strings.Contains(sub, "[") {
			return bad("brackets inside brackets")
		}
		rest = rest[end+1:]
		if sub == "" {
			if rest != "" {
				return bad("empty brackets are allowed only at the end (name[])")
			}
			push = true
			break
		}
		parts = append(parts, sub)
		if len(parts) > maxDepth {
			return bad("nested deeper than " + strconv.Itoa(maxDepth) + " levels")
		}
	}
	return parts, push, nil
}

func (f *Form) addBracket(key, val string) error {
	parts, push, err := splitBracketKey(key, f.lim.MaxDepth)
	if err != nil {
		return err
	}
	return f.insert(key, parts, push, val)
}

// insert puts a value at a path, refusing every way two keys could mean
// the same parameter.
func (f *Form) insert(key string, parts []string, push bool, val string) error {
	n := f.root
	for i, p := range parts {
		last := i == len(parts)-1
		child, ok := n.kids[p]
		switch {
		case !last && !ok:
			child = newObject()
			n.kids[p] = child
		case !last && child.kind != objectNode:
			return unpriceable("form key %s: %s is also given as a value", quote(key), quote(strings.Join(parts[:i+1], "][")))
		case last && push && !ok:
			n.kids[p] = &node{kind: listNode, vals: []string{val}}
		case last && push && child.kind == listNode:
			child.vals = append(child.vals, val)
		case last && push:
			return unpriceable("form key %s: the same parameter is also given without []", quote(key))
		case last && !ok:
			n.kids[p] = &node{kind: leafNode, vals: []string{val}}
		case last && child.kind == leafNode:
			return unpriceable("form key %s is given more than once: a parser downstream might read another of its values than Keybrake", quote(key))
		case last:
			return unpriceable("form key %s is given as a value and as a parent of other keys", quote(key))
		}
		n = child
	}
	return nil
}

// Values is the form as the pricers read it: every parameter under its
// encoded key (metadata[order_id], expand[0]), with the values in order.
func (f *Form) Values() url.Values {
	out := url.Values{}
	f.walk(func(key, val string) { out[key] = append(out[key], val) })
	return out
}

// walk visits every parameter in the order Encode writes them: names
// sorted, list items in order as indices.
func (f *Form) walk(visit func(key, val string)) {
	var rec func(prefix string, n *node)
	rec = func(prefix string, n *node) {
		switch n.kind {
		case leafNode:
			for _, v := range n.vals {
				visit(prefix, v)
			}
		case listNode:
			for i, v := range n.vals {
				visit(prefix+"["+strconv.Itoa(i)+"]", v)
			}
		case objectNode:
			keys := make([]string, 0, len(n.kids))
			for k := range n.kids {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				name := k
				if prefix != "" {
					name = prefix + "[" + k + "]"
				}
				rec(name, n.kids[k])
			}
		}
	}
	rec("", f.root)
}

// Encode writes the form back: keys sorted, list items as indices
// (name[0], as Stripe's SDKs send them), brackets literal, everything else
// percent-encoded, '&' between parameters. Parsing what it writes gives the
// same Values.
func (f *Form) Encode() ([]byte, error) {
	var b bytes.Buffer
	var err error
	f.walk(func(key, val string) {
		if err != nil {
			return
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		writeKey(&b, key)
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(val))
		if b.Len() > f.lim.MaxOutput {
			err = tooLarge("the form body Keybrake would forward is larger than %d bytes", f.lim.MaxOutput)
		}
	})
	return b.Bytes(), err
}

// writeKey escapes each part of a bracket key and keeps the brackets
// readable, as Stripe's SDKs do. A part never holds a bracket itself.
func writeKey(b *bytes.Buffer, key string) {
	for key != "" {
		i := strings.IndexAny(key, "[]")
		if i < 0 {
			b.WriteString(url.QueryEscape(key))
			return
		}
		b.WriteString(url.QueryEscape(key[:i]))
		b.WriteByte(key[i])
		key = key[i+1:]
	}
}

// FormFromJSON converts a JSON object into a bracket form, as Stripe's
// SDKs encode the same parameters: nested objects become a[b], arrays
// a[0], numbers keep their literal text, booleans true/false, and null or
// an empty object or array an empty value (which Stripe reads as "unset").
// A key that is empty, holds a bracket or a control character, is refused:
// it would inject nesting.
func FormFromJSON(v *JSON, lim Limits) (*Form, error) {
	if v.Kind != Object {
		return nil, unpriceable("body must be a JSON object")
	}
	f := &Form{lim: lim.orDefault(), root: newObject()}
	var rec func(parts []string, v *JSON) error
	rec = func(parts []string, v *JSON) error {
		switch v.Kind {
		case Object, Array:
			if len(v.Vals) == 0 && len(parts) > 0 {
				return f.insert(strings.Join(parts, "]["), parts, false, "")
			}
			for i, child := range v.Vals {
				k := strconv.Itoa(i)
				if v.Kind == Object {
					k = v.Keys[i]
					if k == "" || strings.ContainsAny(k, "[]") || hasControl(k) {
						return unpriceable("JSON key %s cannot be form-encoded (brackets, control characters or an empty key would change the nesting)", quote(k))
					}
				}
				if err := rec(append(parts[:len(parts):len(parts)], k), child); err != nil {
					return err
				}
			}
			return nil
		case Null:
			return f.insert(strings.Join(parts, "]["), parts, false, "")
		default:
			return f.insert(strings.Join(parts, "]["), parts, false, v.Str)
		}
	}
	if err := rec(nil, v); err != nil {
		return nil, err
	}
	return f, nil
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}
