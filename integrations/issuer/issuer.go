// Package issuer supplies the issuer token the integrations use for admin
// API calls (issue and revoke vault keys), from the environment or from SSM
// Parameter Store / Secrets Manager through the AWS Parameters and Secrets
// Lambda Extension, and runs admin calls with it.
package issuer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/keybrake/keybrake/client"
)

// TokenSource yields the issuer token. Refresh is called after the admin API
// answered 401, so a rotated token is picked up without a cold start.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
	Refresh()
}

// StaticToken is a token given in the environment (KEYBRAKE_ISSUER_TOKEN).
type StaticToken string

// Token returns the token.
func (s StaticToken) Token(context.Context) (string, error) {
	if s == "" {
		return "", errors.New("no issuer token: set KEYBRAKE_ISSUER_TOKEN, KEYBRAKE_ISSUER_TOKEN_SSM_PARAMETER or KEYBRAKE_ISSUER_TOKEN_SECRET_ID")
	}
	return string(s), nil
}

// Refresh does nothing: the environment does not change.
func (StaticToken) Refresh() {}

// ExtensionToken reads the issuer token through the AWS Parameters and
// Secrets Lambda Extension (http://localhost:2773, or the port in
// PARAMETERS_SECRETS_EXTENSION_HTTP_PORT), authenticated with the function's
// AWS_SESSION_TOKEN. The extension answers only during an invocation, so
// the token is fetched on first use and kept until Refresh.
type ExtensionToken struct {
	SSMParameter string // name or ARN of a SecureString parameter
	SecretID     string // name or ARN of a secret whose SecretString is the token
	// Endpoint overrides http://localhost:<port> (tests).
	Endpoint string
	HTTP     *http.Client

	mu    sync.Mutex
	token string
}

// Token returns the cached token or fetches it.
func (e *ExtensionToken) Token(ctx context.Context) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.token != "" {
		return e.token, nil
	}
	t, err := e.fetch(ctx)
	if err != nil {
		return "", err
	}
	e.token = t
	return t, nil
}

// Refresh forgets the cached token.
func (e *ExtensionToken) Refresh() {
	e.mu.Lock()
	e.token = ""
	e.mu.Unlock()
}

func (e *ExtensionToken) fetch(ctx context.Context) (string, error) {
	base := e.Endpoint
	if base == "" {
		port := os.Getenv("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT")
		if port == "" {
			port = "2773"
		}
		base = "http://localhost:" + port
	}
	var u, what string
	if e.SSMParameter != "" {
		u = base + "/systemsmanager/parameters/get?" + url.Values{"name": {e.SSMParameter}, "withDecryption": {"true"}}.Encode()
		what = "SSM parameter " + e.SSMParameter
	} else {
		u = base + "/secretsmanager/get?" + url.Values{"secretId": {e.SecretID}}.Encode()
		what = "secret " + e.SecretID
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("X-Aws-Parameters-Secrets-Token", os.Getenv("AWS_SESSION_TOKEN"))
	hc := e.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("reading the issuer token (%s) from the Parameters and Secrets extension: %v (is the layer attached?)", what, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("reading the issuer token (%s): the extension answered %d (check ssm:GetParameter/kms:Decrypt or secretsmanager:GetSecretValue permissions)", what, resp.StatusCode)
	}
	var out struct {
		Parameter struct {
			Value string `json:"Value"`
		} `json:"Parameter"`
		SecretString string `json:"SecretString"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return "", fmt.Errorf("reading the issuer token (%s): unreadable answer from the extension", what)
	}
	t := strings.TrimSpace(out.Parameter.Value)
	if e.SecretID != "" {
		t = strings.TrimSpace(out.SecretString)
	}
	if t == "" {
		return "", fmt.Errorf("the issuer token (%s) is empty", what)
	}
	return t, nil
}

// FromEnv picks the token source the environment names:
//
//	KEYBRAKE_ISSUER_TOKEN                the token itself, or
//	KEYBRAKE_ISSUER_TOKEN_SSM_PARAMETER  an SSM SecureString parameter holding it, or
//	KEYBRAKE_ISSUER_TOKEN_SECRET_ID      a Secrets Manager secret holding it.
func FromEnv() TokenSource {
	switch {
	case os.Getenv("KEYBRAKE_ISSUER_TOKEN") != "":
		return StaticToken(os.Getenv("KEYBRAKE_ISSUER_TOKEN"))
	case os.Getenv("KEYBRAKE_ISSUER_TOKEN_SSM_PARAMETER") != "":
		return &ExtensionToken{SSMParameter: os.Getenv("KEYBRAKE_ISSUER_TOKEN_SSM_PARAMETER")}
	case os.Getenv("KEYBRAKE_ISSUER_TOKEN_SECRET_ID") != "":
		return &ExtensionToken{SecretID: os.Getenv("KEYBRAKE_ISSUER_TOKEN_SECRET_ID")}
	}
	return StaticToken("")
}

// Admin runs admin API calls with an issuer token.
type Admin struct {
	URL   string
	Token TokenSource
	// HTTP, when set, replaces the client's default HTTP client.
	HTTP *http.Client
}

// ErrNoToken wraps a failure to obtain the token.
var ErrNoToken = errors.New("issuer token unavailable")

// Do runs f with a client carrying the current token. After a 401 it
// refreshes the token once and runs f again (a rotated token is picked up
// without a cold start). A token that cannot be had is an error wrapping
// ErrNoToken; API failures are *client.Error.
func (a *Admin) Do(ctx context.Context, f func(*client.Client) error) error {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		tok, terr := a.Token.Token(ctx)
		if terr != nil {
			return fmt.Errorf("%w: %v", ErrNoToken, terr)
		}
		c := client.New(a.URL, tok)
		if a.HTTP != nil {
			c.HTTP = a.HTTP
		}
		err = f(c)
		var ce *client.Error
		if errors.As(err, &ce) && ce.Status == http.StatusUnauthorized && attempt == 0 {
			a.Token.Refresh()
			continue
		}
		break
	}
	return err
}

// RevokeRun revokes keyID (if set) and every active key labelled label (if
// set): a run's key, plus any key whose issue was retried after its answer
// was lost. Revoking a revoked key is harmless, so a retried cleanup is too.
func (a *Admin) RevokeRun(ctx context.Context, keyID, label string) ([]client.Revocation, error) {
	out := []client.Revocation{}
	seen := map[string]bool{}
	revoke := func(id string) error {
		if seen[id] {
			return nil
		}
		seen[id] = true
		return a.Do(ctx, func(c *client.Client) error {
			r, err := c.RevokeKey(ctx, id)
			if err == nil {
				out = append(out, *r)
			}
			return err
		})
	}
	if keyID != "" {
		if err := revoke(keyID); err != nil {
			return out, err
		}
	}
	if label == "" {
		return out, nil
	}
	cursor := ""
	for {
		var page *client.Page[client.Key]
		err := a.Do(ctx, func(c *client.Client) (err error) {
			page, err = c.ListKeys(ctx, client.ListKeysParams{AgentRunLabel: label, Status: "active", Limit: 100, Cursor: cursor})
			return err
		})
		if err != nil {
			return out, err
		}
		for _, k := range page.Data {
			if err := revoke(k.ID); err != nil {
				return out, err
			}
		}
		if !page.HasMore || page.NextCursor == "" {
			return out, nil
		}
		cursor = page.NextCursor
	}
}

// maxIdempotencyKey is the longest Idempotency-Key Keybrake accepts.
const maxIdempotencyKey = 255

// IdempotencyKey joins the natural ids of an issuing step (a Step
// Functions execution and state, an SQS message and its delivery, a
// Temporal run and activity) into the Idempotency-Key its IssueKey sends,
// so a retry of the step gets the key the first attempt made. Keys longer
// than Keybrake accepts (execution ARNs can be long) are shortened to a
// readable prefix and a hash of the whole.
func IdempotencyKey(parts ...string) string {
	k := strings.Join(parts, "/")
	if len(k) <= maxIdempotencyKey {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	h := "#" + hex.EncodeToString(sum[:])
	return k[:maxIdempotencyKey-len(h)] + h
}
