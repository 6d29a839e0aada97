package keybrake

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// JSONField returns the raw value of a top-level member of the answer, a
// JSON object, as json.Unmarshal into a map[string]json.RawMessage would
// find it: the key compared after unescaping, case-sensitively, the last of
// duplicate keys winning. ok is false when the body is not valid JSON (a
// valid body that is not an object has no members: nil, true).
//
// Settlement reads a few fields of every answer (the amount, the
// currency, the object id): the body is validated once, on the first
// call, and each call is then one pass over the top level that builds
// nothing. Decoding it into a map for each reader was most of what a call
// cost in allocations.
func (r *VendorResponse) JSONField(name string) (raw []byte, ok bool) {
	if r.jsonChecked == 0 {
		r.jsonChecked = -1
		if json.Valid(r.Body) {
			r.jsonChecked = 1
		}
	}
	if r.jsonChecked < 0 {
		return nil, false
	}
	return topField(r.Body, name)
}

// JSONString reads a top-level member that is a JSON string; ok is false
// if it is absent, not a string, or the body is not valid JSON.
func (r *VendorResponse) JSONString(name string) (string, bool) {
	raw, ok := r.JSONField(name)
	if !ok || len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if s := raw[1 : len(raw)-1]; bytes.IndexByte(s, '\\') < 0 && utf8.Valid(s) {
		return string(s), true // as written: nothing for the decoder to replace
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// topField scans body, valid JSON, for a top-level member.
func topField(body []byte, want string) (v []byte, ok bool) {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return nil, true
	}
	i = skipSpace(body, i+1)
	for i < len(body) && body[i] == '"' {
		end := skipString(body, i)
		key := body[i+1 : end-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			if key, ok = unescapeKey(body[i:end]); !ok {
				return nil, false
			}
		}
		i = skipSpace(body, end)
		i = skipSpace(body, i+1) // past ':'
		vEnd := skipValue(body, i)
		if string(key) == want {
			v = body[i:vEnd]
		}
		i = skipSpace(body, vEnd)
		if i < len(body) && body[i] == ',' {
			i = skipSpace(body, i+1)
		}
	}
	return v, true
}

// unescapeKey decodes a key with escapes (rare: kept off the common path,
// where its variable would escape to the heap on every member).
func unescapeKey(quoted []byte) ([]byte, bool) {
	var name string
	if json.Unmarshal(quoted, &name) != nil {
		return nil, false
	}
	return []byte(name), true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at b[i]
// (b is valid JSON).
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// skipValue returns the index just past the value starting at b[i] (b is
// valid JSON).
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}
