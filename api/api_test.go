package api_test

import (
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/api"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// jsonFields lists the JSON names of a struct's fields, embedded structs
// flattened as encoding/json does, with whether each is omitempty.
func jsonFields(t reflect.Type, out map[string]bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			jsonFields(f.Type, out)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = strings.Contains(opts, "omitempty")
	}
}

// Every wire type and the spec's schema for it name the same fields, and
// an answer's field that is always present is required: the middleware
// catches drift in the answers the tests provoke, this catches it in the
// fields no test happens to fill (an omitempty field added to a type).
func TestWireTypesMatchTheSpec(t *testing.T) {
	c, err := kbtest.LoadContract(kbtest.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	schemas := c.Doc.Components.Schemas
	prop := func(schema, path string) *openapi3.Schema {
		s := schemas[schema].Value
		for _, p := range strings.Split(path, ".") {
			if p == "" {
				continue
			}
			if p == "[]" {
				s = s.Items.Value
				continue
			}
			s = s.Properties[p].Value
		}
		return s
	}
	cases := []struct {
		v            any
		schema, path string
		answer       bool // required must list every field that is not omitempty
	}{
		{v: api.Error{}, schema: "Error", answer: true},
		{v: api.Key{}, schema: "Key", answer: true},
		{v: api.RevokeResponse{}, schema: "RevokeResponse", answer: true},
		{v: api.RuleGrant{}, schema: "RuleGrant", answer: true},
		{v: api.Operation{}, schema: "RuleGrant", path: "operations.[]", answer: true},
		{v: api.Call{}, schema: "Call", answer: true},
		{v: api.RunSummary{}, schema: "RunSummary", answer: true},
		{v: keybrake.RunKey{}, schema: "RunSummary", path: "keys.[]", answer: true},
		{v: keybrake.EndpointSpend{}, schema: "RunSummary", path: "by_endpoint.[]", answer: true},
		{v: keybrake.RunRow{}, schema: "RunRow", answer: true},
		{v: keybrake.AnomalyRow{}, schema: "AnomalyRow", answer: true},
		{v: api.DailyReport{}, schema: "DailyReport", answer: true},
		{v: keybrake.DailyRow{}, schema: "DailyReport", path: "data.[]", answer: true},
		{v: api.AnomaliesReport{}, schema: "AnomaliesReport", answer: true},
		{v: api.Token{}, schema: "Token", answer: true},
		{v: api.Webhook{}, schema: "Webhook", answer: true},
		{v: api.WebhookDeleted{}, schema: "WebhookDeleted", answer: true},
		{v: api.Delivery{}, schema: "Delivery", answer: true},
		{v: keybrake.DeliveryAttempt{}, schema: "Delivery", path: "attempt_log.[]", answer: true},
		{v: api.Health{}, schema: "Health", answer: true},
		{v: api.IssueRequest{}, schema: "IssueRequest"},
		{v: api.TokenRequest{}, schema: "TokenRequest"},
		{v: api.WebhookRequest{}, schema: "WebhookRequest"},
	}
	for _, tc := range cases {
		name := reflect.TypeOf(tc.v).String()
		t.Run(name, func(t *testing.T) {
			s := prop(tc.schema, tc.path)
			fields := map[string]bool{}
			jsonFields(reflect.TypeOf(tc.v), fields)
			var extra, gone, optional []string
			for f, omit := range fields {
				if _, ok := s.Properties[f]; !ok {
					extra = append(extra, f)
				}
				if tc.answer && !omit && !contains(s.Required, f) {
					optional = append(optional, f)
				}
			}
			for p := range s.Properties {
				if _, ok := fields[p]; !ok {
					gone = append(gone, p)
				}
			}
			sort.Strings(extra)
			sort.Strings(gone)
			sort.Strings(optional)
			if len(extra) > 0 {
				t.Errorf("%s has fields %s's schema lacks: %v", name, tc.schema, extra)
			}
			if len(gone) > 0 {
				t.Errorf("%s's schema has properties %s lacks: %v", tc.schema, name, gone)
			}
			if len(optional) > 0 {
				t.Errorf("%s always sends %v, which %s does not require", name, optional, tc.schema)
			}
			if tc.answer && (s.AdditionalProperties.Has == nil || *s.AdditionalProperties.Has) {
				t.Errorf("%s does not refuse additional properties, so a field added to %s would pass unnoticed", tc.schema, name)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
