package canon

import (
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// rackParse is a reference port of Rack 2.2's Utils.parse_nested_query
// (rack/query_parser.rb), the parser Ruby web servers such as Stripe's read
// form bodies with. It is written to be read against the original, not to
// be fast: every divergence between what it reads and what Keybrake priced
// is a way to move money the cap did not see.
//
//	parse_nested_query: split on /[&;] */, each part split at the first '=',
//	  both sides unescaped (+ is a space); a part without '=' has value nil.
//	normalize_params(params, name, v): name =~ /\A[\[\]]*([^\[\]]+)\]*/
//	  k = $1, after = $'; leading brackets are stripped and trailing ']'
//	  are swallowed, so "[amount]", "amount]" and "]amount" all name amount.
//	  after == ""   → params[k] = v (the last value of a repeated key wins)
//	  after == "["  → params[name] = v
//	  after == "[]" → params[k] << v
//	  after =~ /^\[\]\[([^\[\]]+)\]$/ or /^\[\](.+)$/ → array of hashes
//	  otherwise     → params[k] = normalize_params(params[k] || {}, after, v)
//
// It returns nil when Rack would answer 400 (a type clash, bad escapes).
func rackParse(body string) map[string]any {
	params := map[string]any{}
	for _, part := range rackSep.Split(body, -1) {
		if part == "" {
			continue
		}
		rawK, rawV, hasEq := strings.Cut(part, "=")
		k, err := url.QueryUnescape(rawK)
		if err != nil {
			return nil
		}
		var v any // nil without '='
		if hasEq {
			s, err := url.QueryUnescape(rawV)
			if err != nil {
				return nil
			}
			v = s
		}
		var ok bool
		if params, ok = rackNormalize(params, k, v, 100); !ok {
			return nil
		}
	}
	return params
}

var (
	rackSep      = regexp.MustCompile(`[&;] *`)
	rackName     = regexp.MustCompile(`\A[\[\]]*([^\[\]]+)\]*`)
	rackArrHash1 = regexp.MustCompile(`^\[\]\[([^\[\]]+)\]$`)
	rackArrHash2 = regexp.MustCompile(`^\[\](.+)$`)
)

func rackNormalize(params map[string]any, name string, v any, depth int) (map[string]any, bool) {
	if depth <= 0 {
		return nil, false
	}
	m := rackName.FindStringSubmatchIndex(name)
	k, after := "", ""
	if m != nil {
		k, after = name[m[2]:m[3]], name[m[1]:]
	}
	if k == "" {
		return params, true // Rack ignores it (or, for "[]", returns an array: not a hash)
	}
	switch {
	case after == "":
		params[k] = v
	case after == "[":
		params[name] = v
	case after == "[]":
		arr, ok := params[k].([]any)
		if params[k] != nil && !ok {
			return nil, false
		}
		params[k] = append(arr, v)
	case rackArrHash1.MatchString(after) || rackArrHash2.MatchString(after):
		md := rackArrHash1.FindStringSubmatch(after)
		if md == nil {
			md = rackArrHash2.FindStringSubmatch(after)
		}
		child := md[1]
		arr, ok := params[k].([]any)
		if params[k] != nil && !ok {
			return nil, false
		}
		if n := len(arr); n > 0 {
			if last, isHash := arr[n-1].(map[string]any); isHash {
				if _, has := last[child]; !has {
					if _, ok := rackNormalize(last, child, v, depth-1); !ok {
						return nil, false
					}
					params[k] = arr
					return params, true
				}
			}
		}
		h, ok := rackNormalize(map[string]any{}, child, v, depth-1)
		if !ok {
			return nil, false
		}
		params[k] = append(arr, h)
	default:
		h, isHash := params[k].(map[string]any)
		if params[k] != nil && !isHash {
			return nil, false
		}
		if h == nil {
			h = map[string]any{}
		}
		h, ok := rackNormalize(h, after, v, depth-1)
		if !ok {
			return nil, false
		}
		params[k] = h
	}
	return params, true
}

// rackFlatten writes Rack's nested parameters back as bracket keys, arrays
// by index, nil as "": the shape Form.Values has, for comparison.
func rackFlatten(params map[string]any) url.Values {
	out := url.Values{}
	var rec func(prefix string, v any)
	rec = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				name := k
				if prefix != "" {
					name = prefix + "[" + k + "]"
				}
				rec(name, x[k])
			}
		case []any:
			for i, item := range x {
				rec(prefix+"["+strconv.Itoa(i)+"]", item)
			}
		case string:
			out[prefix] = append(out[prefix], x)
		case nil:
			out[prefix] = append(out[prefix], "")
		}
	}
	rec("", params)
	return out
}
