package keybrake

import (
	"bytes"
	"encoding/json"
	"testing"
)

// JSONField finds what a decode into a map of raw values finds, on every
// input; JSONString what decoding that value into a string gives.
func FuzzJSONFieldMatchesMap(f *testing.F) {
	for _, s := range []string{
		`{"id":"pi_1","amount":150}`, `{"id":"a","id":"b"}`, `{"\u0069d":"x"}`, `{"ID":"x"}`, `{"id":5}`,
		`{"id":null}`, `{"id":"a\"b"}`, `{"id":"\u00e9"}`, `{"x":{"id":"inner"},"id":"outer"}`, `[{"id":"x"}]`,
		`null`, `{}`, `{"id":"x"`, ` {"id" : "x" } `, `{"a":["]",{"id":1}],"id":"y"}`, `{"id":"x",}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r := &VendorResponse{Body: []byte(body)}
		raw, ok := r.JSONField("id")
		var m map[string]json.RawMessage
		mapErr := json.Unmarshal([]byte(body), &m)
		if json.Valid([]byte(body)) != ok {
			t.Fatalf("%q: ok=%v, valid=%v", body, ok, json.Valid([]byte(body)))
		}
		if mapErr == nil && !bytes.Equal(raw, m["id"]) {
			t.Fatalf("%q: field %q, map %q", body, raw, m["id"])
		}
		if mapErr != nil && raw != nil {
			t.Fatalf("%q: field %q from a body the map decode refuses (%v)", body, raw, mapErr)
		}
		got, gotOK := r.JSONString("id")
		var want string
		wantOK := mapErr == nil && m["id"] != nil && len(m["id"]) > 0 && m["id"][0] == '"' && json.Unmarshal(m["id"], &want) == nil
		if got != want || gotOK != wantOK {
			t.Fatalf("%q: string %q,%v; map %q,%v", body, got, gotOK, want, wantOK)
		}
	})
}
