package resend_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// These run the whole server with the Resend sandbox behind it and talk raw
// HTTP, for what the SDK tests in sdktest do not reach.

func TestIdempotencyKeyReplays(t *testing.T) {
	env, fakes := kbtest.StartWithFakes(t, nil)
	k := env.Issue(t, client.IssueParams{Vendor: "resend", DailyUSDCap: "1", AllowedEndpoints: []string{"POST /emails"}})
	body := `{"from":"a@example.com","to":["b@example.com","c@example.com"],"subject":"s","text":"t"}`
	var ids []string
	for i := 0; i < 2; i++ {
		r := env.Do(t, k.VaultKey, "POST", "/emails", "application/json", body, "Idempotency-Key", "welcome-42")
		if r.Status != http.StatusOK {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		var got struct{ ID string }
		json.Unmarshal(r.Body, &got) //nolint:errcheck
		ids = append(ids, got.ID)
	}
	if ids[0] == "" || ids[0] != ids[1] {
		t.Fatalf("ids %v: the retry was not a replay", ids)
	}
	if n := fakes.Resend.Requests(); n != 1 {
		t.Fatalf("Resend received %d requests", n)
	}
	// Resend receives the client's key namespaced to the vault key.
	if got := fakes.Resend.Received()[0].Header.Get("Idempotency-Key"); got != k.ID+":welcome-42" {
		t.Fatalf("Idempotency-Key upstream = %q", got)
	}
	kv, err := env.Admin.GetKey(context.Background(), k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if kv.SpentUSD.String() != "0.0018" {
		t.Errorf("spent %s, want 0.0018 once", kv.SpentUSD)
	}
}

func TestDenialsReachNothing(t *testing.T) {
	env, fakes := kbtest.StartWithFakes(t, nil)
	k := env.Issue(t, client.IssueParams{Vendor: "resend", DailyUSDCap: "0.05", AllowedEndpoints: []string{"POST /emails", "POST /emails/batch", "POST /broadcasts/*/send"}})
	big := "[" + strings.TrimSuffix(strings.Repeat(`{"from":"a@x.com","to":"b@x.com","subject":"s"},`, 101), ",") + "]"
	many := make([]string, 56)
	for i := range many {
		many[i] = `"r@example.com"`
	}
	cases := []struct {
		path, body string
		status     int
		code       string
	}{
		{"/emails/batch", big, 400, "invalid_request"},
		{"/emails", `{"from":"a@x.com","to":[` + strings.Join(many, ",") + `],"subject":"s"}`, 429, "cap_exhausted"}, // 56 × 0.0009 > 0.05
		{"/emails", `{"from":"a@x.com","subject":"s"}`, 400, "unpriceable_request"},
		{"/emails", `{"from":"a@x.com","to":"b@x.com","TO":"c@x.com"}`, 400, "unpriceable_request"},
		{"/broadcasts/b1/send", `{}`, 400, "unpriceable_request"},
		{"/domains", ``, 403, "endpoint_not_allowed"},
	}
	for _, c := range cases {
		r := env.Do(t, k.VaultKey, "POST", c.path, "application/json", c.body)
		var body struct {
			StatusCode int    `json:"statusCode"`
			Name       string `json:"name"`
			Message    string `json:"message"`
			Code       string `json:"code"`
		}
		json.Unmarshal(r.Body, &body) //nolint:errcheck
		if r.Status != c.status || body.StatusCode != c.status || body.Name != c.code || body.Code != c.code || !strings.HasPrefix(body.Message, c.code+": ") {
			t.Errorf("%s: %d %s", c.path, r.Status, r.Body)
		}
	}
	if n := fakes.Resend.Requests(); n != 0 {
		t.Fatalf("Resend received %d requests for denied calls", n)
	}
}
