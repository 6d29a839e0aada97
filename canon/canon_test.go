package canon

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/keybrake/keybrake"
)

func code(err error) keybrake.Code {
	var e *keybrake.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// The keys the issue found priced as one thing and read by Rack as another,
// and their kin: each is refused, naming the key.
func TestBracketFormRefusesAmbiguousKeys(t *testing.T) {
	for _, body := range []string{
		"amount=100&currency=usd&[amount]=900000", // Rack strips the leading brackets
		"amount=100&amount]=900000",               // Rack swallows the trailing ']'
		"amount=100&]amount=900000",
		"amount=100&amount[]=900000", // a scalar given as a list too
		"amount[]=9&amount=100",
		"amount=100&amount=900000", // Rack keeps the last
		"%5Bamount%5D=900000",      // the same, percent-encoded
		"amount=100&currency=usd&metadata[a][=1",
		"a[b]c=1", "a[b]]=1", "a[[b]]=1", "a[][b]=1", "[]=1", "=1",
		"a=1&a[b]=2", "a[b]=2&a=1", "a[b]=1&a[b][c]=2", "a[0]=1&a[]=2",
		"amount=100;amount=900000",  // ';' separates parameters for some parsers
		"amount=100& amount=900000", // so does "& " for Rack
		"amo%00unt=1", "a=%zz", "%zz=1",
	} {
		_, err := ParseBracketForm([]byte(body), Limits{})
		if code(err) != keybrake.CodeUnpriceableRequest {
			t.Errorf("%q: err %v, want unpriceable_request", body, err)
		}
	}
	_, err := ParseBracketForm([]byte("amount=100&[amount]=900000"), Limits{})
	if err == nil || !strings.Contains(err.Error(), `"[amount]"`) {
		t.Errorf("the refusal does not name the key: %v", err)
	}
}

func TestBracketFormCanonical(t *testing.T) {
	for _, tc := range []struct{ in, out string }{
		{"currency=usd&amount=100", "amount=100&currency=usd"},
		{"metadata[order+id]=a+b&metadata%5Bx%5D=%41", "metadata[order+id]=a+b&metadata[x]=A"},
		{"expand[]=customer&expand[]=invoice", "expand[0]=customer&expand[1]=invoice"},
		{"items[0][price]=p&items[1][price]=q&&confirm", "confirm=&items[0][price]=p&items[1][price]=q"},
		{"description=%3B%26%3D", "description=%3B%26%3D"},
	} {
		f, err := ParseBracketForm([]byte(tc.in), Limits{})
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		got, err := f.Encode()
		if err != nil || string(got) != tc.out {
			t.Errorf("%q encodes as %q (%v), want %q", tc.in, got, err, tc.out)
		}
	}
}

func TestFlatForm(t *testing.T) {
	repeatable := func(n string) bool { return n == "MediaUrl" }
	f, err := ParseFlatForm([]byte("To=%2B1555&MediaUrl=a&MediaUrl=b&Body=hi+there"), Limits{}, repeatable)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := f.Encode(); string(got) != "Body=hi+there&MediaUrl=a&MediaUrl=b&To=%2B1555" {
		t.Errorf("encoded %q", got)
	}
	for _, body := range []string{"To=1&To=2", "To=1&TO=2", "to=1", "[To]=1", "To[]=1", "T-o=1", "To=1;From=2"} {
		if _, err := ParseFlatForm([]byte(body), Limits{}, repeatable); code(err) != keybrake.CodeUnpriceableRequest {
			t.Errorf("%q: err %v, want unpriceable_request", body, err)
		}
	}
}

func TestJSON(t *testing.T) {
	v, err := ParseJSON([]byte(` {"b": [1, 2.50, "x<y"], "a": {"c": null, "d": true}, "e": "\u00e9\ud800"} `), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Encode()
	if err != nil || string(got) != `{"b":[1,2.50,"x<y"],"a":{"c":null,"d":true},"e":"é`+"\ufffd"+`"}` {
		t.Errorf("encoded %s %v", got, err)
	}
	for _, body := range []string{`{"to":"a@x","to":"b@y"}`, `[{"a":1,"a":1}]`, `{} {}`, `{"a":`, ``} {
		if _, err := ParseJSON([]byte(body), Limits{}); code(err) != keybrake.CodeUnpriceableRequest {
			t.Errorf("%s: err %v, want unpriceable_request", body, err)
		}
	}
	f, err := FormFromJSON(mustJSON(t, `{"amount":100,"metadata":{"k":"v"},"expand":["a","b"],"empty":{},"none":null}`), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := f.Encode(); string(got) != "amount=100&empty=&expand[0]=a&expand[1]=b&metadata[k]=v&none=" {
		t.Errorf("form %q", got)
	}
	for _, body := range []string{`{"a[b]":1}`, `{"":1}`, `{"a":{"b]":1}}`, `[1]`} {
		if _, err := FormFromJSON(mustJSON(t, body), Limits{}); code(err) != keybrake.CodeUnpriceableRequest {
			t.Errorf("%s: err %v, want unpriceable_request", body, err)
		}
	}
}

func mustJSON(t *testing.T, s string) *JSON {
	t.Helper()
	v, err := ParseJSON([]byte(s), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Hostile bodies fail on a limit, not after expanding: a 1 MiB array of
// zeros, deep nesting, a million parameters.
func TestLimits(t *testing.T) {
	zeros := `{"a":[` + strings.Repeat("0,", 512<<10) + `0]}`
	if _, err := ParseJSON([]byte(zeros), Limits{}); code(err) != keybrake.CodeRequestTooLarge {
		t.Errorf("1 MiB array of zeros: %v", err)
	}
	deep := strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100)
	if _, err := ParseJSON([]byte(deep), Limits{}); code(err) != keybrake.CodeUnpriceableRequest {
		t.Errorf("deep JSON: %v", err)
	}
	if _, err := ParseBracketForm([]byte(strings.Repeat("a[]=&", 200_000)), Limits{}); code(err) != keybrake.CodeRequestTooLarge {
		t.Errorf("200,000 parameters: %v", err)
	}
	if _, err := ParseBracketForm([]byte("a"+strings.Repeat("[a]", 40)+"=1"), Limits{}); code(err) != keybrake.CodeUnpriceableRequest {
		t.Errorf("40 levels of brackets: %v", err)
	}
	// Output: many short values whose encoding grows.
	big := `{"a":"` + strings.Repeat("\u00e9", 600_000) + `"}`
	f, err := FormFromJSON(mustJSON(t, big), Limits{})
	if err == nil {
		_, err = f.Encode()
	}
	if code(err) != keybrake.CodeRequestTooLarge {
		t.Errorf("an encoding over the output limit: %v", err)
	}
}

// checkForm is the fuzzers' invariant: what Keybrake forwards parses, under
// Go's parser, under a Rack-style one and under its own, to exactly the
// values it priced; and so did the client's original body, under Rack.
func checkForm(t *testing.T, original []byte, f *Form) {
	t.Helper()
	priced := f.Values()
	out, err := f.Encode()
	if err != nil {
		return // over the output limit: refused, nothing forwarded
	}
	goVals, err := url.ParseQuery(string(out))
	if err != nil || !equalValues(goVals, priced) {
		t.Fatalf("Go reads the forwarded %q as %v (%v); priced %v", out, goVals, err, priced)
	}
	// A flat form's list parameters (MediaUrl) are not Rack's business:
	// Twilio reads them as lists, Rack would keep the last. Every other
	// parameter must read the same.
	single := func(v url.Values) url.Values {
		if !f.flat {
			return v
		}
		out := url.Values{}
		for k, vals := range v {
			if !f.repeatable(k) {
				out[k] = vals
			}
		}
		return out
	}
	if rack := rackParse(string(out)); rack == nil || !equalValues(single(rackFlatten(rack)), single(priced)) {
		t.Fatalf("Rack reads the forwarded %q as %v; priced %v", out, rack, priced)
	}
	if original != nil {
		if rack := rackParse(string(original)); rack == nil || !equalValues(single(rackFlatten(rack)), single(priced)) {
			t.Fatalf("Rack reads the client's %q as %v; priced %v", original, rack, priced)
		}
	}
	again, err := ParseBracketForm(out, Limits{})
	if f.flat {
		again, err = ParseFlatForm(out, Limits{}, f.repeatable)
	}
	if err != nil || !equalValues(again.Values(), priced) {
		t.Fatalf("the forwarded %q does not parse back: %v", out, err)
	}
}

func equalValues(a, b url.Values) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

func FuzzBracketForm(f *testing.F) {
	for _, s := range []string{
		"amount=100&currency=usd", "amount=100&currency=usd&[amount]=900000", "a[b][c]=1&a[b][d]=2",
		"expand[]=x&expand[]=y", "metadata[%5B]=1", "a=1&a=2", "]a=1", "a]=1", "a[=1", "a[]b=1", "a+b=c+d",
		"x=%3B&y=%26", "a", "&&", "a[0][b]=1&a[1][b]=2", "a[][b]=1&a[][c]=2", "k=v;k=w", "k=v& k=w",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		form, err := ParseBracketForm(body, Limits{})
		if err != nil {
			return
		}
		checkForm(t, body, form)
	})
}

func FuzzFlatForm(f *testing.F) {
	for _, s := range []string{"To=%2B1555&Body=hi", "To=1&To=2", "MediaUrl=a&MediaUrl=b", "to=1", "Body=a+b%26c=d"} {
		f.Add([]byte(s))
	}
	repeatable := func(n string) bool { return n == "MediaUrl" }
	f.Fuzz(func(t *testing.T, body []byte) {
		form, err := ParseFlatForm(body, Limits{}, repeatable)
		if err != nil {
			return
		}
		checkForm(t, body, form)
	})
}

// FuzzJSONForm: a JSON body converted to Stripe's form encoding parses back,
// under every parser, to the values priced; and every JSON key reached the
// form under its own name.
func FuzzJSONForm(f *testing.F) {
	for _, s := range []string{`{"amount":100,"currency":"usd"}`, `{"a":{"b":[1,{"c":null}]}}`, `{"a[b]":1}`,
		`{"a":1,"a":2}`, `{"a":[]}`, `{"":{}}`, `{"a":"\u0000"}`, `{"m":{"x y":"1"}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := ParseJSON(body, Limits{})
		if err != nil {
			return
		}
		form, err := FormFromJSON(v, Limits{})
		if err != nil {
			return
		}
		checkForm(t, nil, form)
		var top map[string]any
		if err := json.Unmarshal(body, &top); err != nil {
			t.Fatalf("Go's decoder refuses what canon accepted: %v", err)
		}
		vals := form.Values()
		for k := range top {
			found := false
			for fk := range vals {
				if fk == k || strings.HasPrefix(fk, k+"[") {
					found = true
				}
			}
			if !found {
				t.Fatalf("JSON key %q is not in the form %v", k, vals)
			}
		}
	})
}

// FuzzJSON: what canon re-encodes decodes, with Go's decoder, to what the
// client's body decodes to, and re-encoding is stable.
func FuzzJSON(f *testing.F) {
	for _, s := range []string{`{"to":["a@x"],"cc":"b@y"}`, `[{"to":"a"},{"to":"b"}]`, `"\ud800"`, `1e400`, `{"a":"<&>"}`, `{"a":1,"a":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := ParseJSON(body, Limits{})
		if err != nil {
			return
		}
		out, err := v.Encode()
		if err != nil {
			return
		}
		var a, b any
		da, db := json.NewDecoder(bytes.NewReader(body)), json.NewDecoder(bytes.NewReader(out))
		da.UseNumber()
		db.UseNumber()
		if err := da.Decode(&a); err != nil {
			t.Fatalf("Go refuses the client's body canon accepted: %v", err)
		}
		if err := db.Decode(&b); err != nil || !reflect.DeepEqual(a, b) {
			t.Fatalf("re-encoded %s reads as %v (%v), the client's body as %v", out, b, err, a)
		}
		v2, err := ParseJSON(out, Limits{})
		if err != nil {
			t.Fatalf("re-encoded %s does not parse: %v", out, err)
		}
		if out2, _ := v2.Encode(); !bytes.Equal(out, out2) {
			t.Fatalf("re-encoding is not stable: %s then %s", out, out2)
		}
	})
}
