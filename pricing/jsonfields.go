package pricing

import (
	"bytes"
	"encoding/json"
)

// topFields finds the values of two top-level members of a JSON object,
// as json.Unmarshal into a map[string]json.RawMessage would (keys compared
// after unescaping, case-sensitive; the last of duplicate keys wins), but
// without building the map: settlement reads two fields of every answer,
// and the map was most of what a call cost in allocations. ok is false
// when body is not valid JSON; a body that is valid JSON but not an object
// has no members (the map would be nil or the decode would fail: either
// way the fields read as absent).
func topFields(body []byte, a, b string) (va, vb []byte, ok bool) {
	if !json.Valid(body) {
		return nil, nil, false
	}
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return nil, nil, true
	}
	i = skipSpace(body, i+1)
	for i < len(body) && body[i] == '"' {
		end := skipString(body, i)
		key := body[i+1 : end-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			if key, ok = unescapeKey(body[i:end]); !ok {
				return nil, nil, false
			}
		}
		i = skipSpace(body, end)
		i = skipSpace(body, i+1) // past ':'
		vEnd := skipValue(body, i)
		switch string(key) {
		case a:
			va = body[i:vEnd]
		case b:
			vb = body[i:vEnd]
		}
		i = skipSpace(body, vEnd)
		if i < len(body) && body[i] == ',' {
			i = skipSpace(body, i+1)
		}
	}
	return va, vb, true
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
