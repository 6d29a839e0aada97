package canon

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// JSONKind is the type of a JSON value.
type JSONKind int

const (
	Null JSONKind = iota
	Bool
	Number
	String
	Object
	Array
)

// JSON is a parsed JSON value. Objects keep their keys in order, and no key
// twice: parsers disagree on which of two values a repeated key means (Go
// and JavaScript take the last, others the first).
type JSON struct {
	Kind JSONKind
	// Str is a string's value, a number's literal text, or "true"/"false".
	Str string
	// Keys are an object's keys; Vals its values in the same order, or an
	// array's items.
	Keys []string
	Vals []*JSON

	lim Limits
}

// Get returns an object's value for key.
func (v *JSON) Get(key string) (*JSON, bool) {
	if v == nil || v.Kind != Object {
		return nil, false
	}
	for i, k := range v.Keys {
		if k == key {
			return v.Vals[i], true
		}
	}
	return nil, false
}

// ParseJSON reads one JSON value, bounded by lim: nesting depth, number of
// values (counted as they stream in, so a huge array fails after MaxParams
// values, not after it is built), and a key given twice in an object is
// refused. Invalid UTF-8 and lone surrogates are read as U+FFFD, and that
// is what Encode writes: every parser then reads the same strings.
func ParseJSON(body []byte, lim Limits) (*JSON, error) {
	p := &jsonParser{dec: json.NewDecoder(bytes.NewReader(body)), lim: lim.orDefault()}
	p.dec.UseNumber()
	tok, err := p.token()
	if err != nil {
		return nil, err
	}
	v, err := p.value(tok, 1)
	if err != nil {
		return nil, err
	}
	if _, err := p.dec.Token(); !errors.Is(err, io.EOF) {
		return nil, unpriceable("body has data after the JSON value")
	}
	v.lim = p.lim
	return v, nil
}

type jsonParser struct {
	dec *json.Decoder
	lim Limits
	n   int
}

func (p *jsonParser) token() (json.Token, error) {
	tok, err := p.dec.Token()
	if err != nil {
		return nil, unpriceable("body is not valid JSON: %v", err)
	}
	return tok, nil
}

func (p *jsonParser) value(tok json.Token, depth int) (*JSON, error) {
	if p.n++; p.n > p.lim.MaxParams {
		return nil, tooLarge("JSON body has more than %d values", p.lim.MaxParams)
	}
	switch t := tok.(type) {
	case nil:
		return &JSON{Kind: Null}, nil
	case bool:
		s := "false"
		if t {
			s = "true"
		}
		return &JSON{Kind: Bool, Str: s}, nil
	case json.Number:
		return &JSON{Kind: Number, Str: t.String()}, nil
	case string:
		return &JSON{Kind: String, Str: t}, nil
	case json.Delim:
		if depth > p.lim.MaxDepth {
			return nil, unpriceable("JSON body nests deeper than %d levels", p.lim.MaxDepth)
		}
		if t == '[' {
			v := &JSON{Kind: Array}
			for p.dec.More() {
				tok, err := p.token()
				if err != nil {
					return nil, err
				}
				item, err := p.value(tok, depth+1)
				if err != nil {
					return nil, err
				}
				v.Vals = append(v.Vals, item)
			}
			_, err := p.token() // ']'
			return v, err
		}
		v := &JSON{Kind: Object}
		seen := map[string]bool{}
		for p.dec.More() {
			tok, err := p.token()
			if err != nil {
				return nil, err
			}
			key, _ := tok.(string)
			if seen[key] {
				return nil, unpriceable("JSON key %s is given twice in one object: parsers disagree on which value it means", quote(key))
			}
			seen[key] = true
			if tok, err = p.token(); err != nil {
				return nil, err
			}
			val, err := p.value(tok, depth+1)
			if err != nil {
				return nil, err
			}
			v.Keys, v.Vals = append(v.Keys, key), append(v.Vals, val)
		}
		_, err := p.token() // '}'
		return v, err
	}
	return nil, unpriceable("body is not valid JSON")
}

// Encode writes the value compactly, keys in their order, strings escaped
// the same way whatever the input used (no HTML escaping). It fails past
// the output limit of the parse that built the value.
func (v *JSON) Encode() ([]byte, error) {
	lim := v.lim.orDefault()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	str := func(s string) {
		enc.Encode(s)           //nolint:errcheck // a string always encodes
		b.Truncate(b.Len() - 1) // Encode's newline
	}
	var rec func(v *JSON) error
	rec = func(v *JSON) error {
		if b.Len() > lim.MaxOutput {
			return tooLarge("the JSON body Keybrake would forward is larger than %d bytes", lim.MaxOutput)
		}
		switch v.Kind {
		case Null:
			b.WriteString("null")
		case Bool, Number:
			b.WriteString(v.Str)
		case String:
			str(v.Str)
		case Array:
			b.WriteByte('[')
			for i, item := range v.Vals {
				if i > 0 {
					b.WriteByte(',')
				}
				if err := rec(item); err != nil {
					return err
				}
			}
			b.WriteByte(']')
		case Object:
			b.WriteByte('{')
			for i, item := range v.Vals {
				if i > 0 {
					b.WriteByte(',')
				}
				str(v.Keys[i])
				b.WriteByte(':')
				if err := rec(item); err != nil {
					return err
				}
			}
			b.WriteByte('}')
		}
		return nil
	}
	if err := rec(v); err != nil {
		return nil, err
	}
	if b.Len() > lim.MaxOutput {
		return nil, tooLarge("the JSON body Keybrake would forward is larger than %d bytes", lim.MaxOutput)
	}
	return b.Bytes(), nil
}
