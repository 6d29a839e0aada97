package issuer_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/integrations/issuer"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// countingToken counts refreshes.
type countingToken struct {
	tokens    []string
	refreshes int
}

func (c *countingToken) Token(context.Context) (string, error) { return c.tokens[0], nil }
func (c *countingToken) Refresh() {
	c.refreshes++
	if len(c.tokens) > 1 {
		c.tokens = c.tokens[1:]
	}
}

// TestRevokeRunPages: a label with more keys than one page holds has all of
// them revoked, and a key of another label none.
func TestRevokeRunPages(t *testing.T) {
	kb := kbtest.Start(t)
	const label = "arn:aws:states:us-east-1:123456789:execution:billing:many"
	for i := 0; i < 130; i++ {
		kb.Issue(t, client.IssueParams{AgentRunLabel: label})
	}
	other := kb.Issue(t, client.IssueParams{AgentRunLabel: label + "-2"})
	// A rotated token: the first one is refused, the refreshed one works.
	tok := &countingToken{tokens: []string{"rotated-away", kbtest.AdminToken}}
	a := issuer.Admin{URL: "http://" + kb.Server.AdminAddr(), Token: tok}
	revoked, err := a.RevokeRun(context.Background(), "", label)
	if err != nil {
		t.Fatal(err)
	}
	if len(revoked) != 130 || tok.refreshes != 1 {
		t.Fatalf("revoked %d keys after %d refreshes, want 130 after 1", len(revoked), tok.refreshes)
	}
	page, err := kb.Admin.ListKeys(context.Background(), client.ListKeysParams{AgentRunLabel: label, Status: "active"})
	if err != nil || len(page.Data) != 0 {
		t.Fatalf("%d keys still active (%v)", len(page.Data), err)
	}
	if k, _ := kb.Admin.GetKey(context.Background(), other.ID); k.Status != keybrake.StatusActive {
		t.Errorf("a key of another label is %s", k.Status)
	}
	// A wrong token stays a 401 after one refresh.
	bad := issuer.Admin{URL: a.URL, Token: issuer.StaticToken("nope")}
	_, err = bad.RevokeRun(context.Background(), other.ID, "")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
		t.Errorf("bad token: %v, want a 401", err)
	}
}
