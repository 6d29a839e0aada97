package stripe

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// maxJSONDepth bounds nesting in a converted JSON body.
const maxJSONDepth = 32

// JSONToForm converts a JSON object body into Stripe's form encoding:
// nested objects become a[b]=v, arrays a[0]=v, numbers keep their literal
// text, booleans become true/false and null becomes an empty value (which
// Stripe reads as "unset"). Keys are sorted, so the output is deterministic.
// Keys containing brackets are refused: they would inject nesting and make
// the conversion ambiguous.
func JSONToForm(body []byte) (url.Values, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("body is not valid JSON: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("body has data after the JSON object")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("body must be a JSON object")
	}
	form := url.Values{}
	if err := flatten(form, "", obj, 0); err != nil {
		return nil, err
	}
	return form, nil
}

func flatten(form url.Values, prefix string, v any, depth int) error {
	if depth > maxJSONDepth {
		return fmt.Errorf("body nests deeper than %d levels", maxJSONDepth)
	}
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			if k == "" || strings.ContainsAny(k, "[]") {
				return fmt.Errorf("JSON key %q cannot be form-encoded", k)
			}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if len(keys) == 0 && prefix != "" {
			form.Add(prefix, "")
		}
		for _, k := range keys {
			name := k
			if prefix != "" {
				name = prefix + "[" + k + "]"
			}
			if err := flatten(form, name, x[k], depth+1); err != nil {
				return err
			}
		}
	case []any:
		if len(x) == 0 {
			form.Add(prefix, "")
		}
		for i, e := range x {
			if err := flatten(form, prefix+"["+strconv.Itoa(i)+"]", e, depth+1); err != nil {
				return err
			}
		}
	case string:
		form.Add(prefix, x)
	case json.Number:
		form.Add(prefix, x.String())
	case bool:
		form.Add(prefix, strconv.FormatBool(x))
	case nil:
		form.Add(prefix, "")
	default:
		return fmt.Errorf("unsupported JSON value %T", v)
	}
	return nil
}

// EncodeForm writes form values with keys sorted and brackets left
// readable, as Stripe's own SDKs do.
func EncodeForm(form url.Values) []byte {
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		ek := strings.NewReplacer("%5B", "[", "%5D", "]").Replace(url.QueryEscape(k))
		for _, v := range form[k] {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(ek)
			b.WriteByte('=')
			b.WriteString(url.QueryEscape(v))
		}
	}
	return b.Bytes()
}
