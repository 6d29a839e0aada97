package stepfunctions

import (
	"context"
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
)

// Config is what the handlers read from their Lambda environment.
type Config struct {
	// URL is Keybrake's base URL (KEYBRAKE_URL): the proxy, and the admin
	// API unless AdminURL is set.
	URL string
	// AdminURL is the admin API's base URL when Keybrake serves it on its
	// own listener (KEYBRAKE_ADMIN_URL, default URL).
	AdminURL string
	// Token returns the issuer token (a Bearer token for the admin API).
	// Only issue-vault-key and revoke-vault-key need it.
	Token TokenSource
}

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

// ConfigFromEnv reads the handlers' environment:
//
//	KEYBRAKE_URL                         Keybrake's base URL (required)
//	KEYBRAKE_ADMIN_URL                   admin API base URL (default KEYBRAKE_URL)
//	KEYBRAKE_ISSUER_TOKEN                the issuer token itself, or
//	KEYBRAKE_ISSUER_TOKEN_SSM_PARAMETER  an SSM SecureString parameter holding it, or
//	KEYBRAKE_ISSUER_TOKEN_SECRET_ID      a Secrets Manager secret holding it
//
// The SSM and Secrets Manager forms are read through the AWS Parameters and
// Secrets Lambda Extension (a layer), so the token never sits in the
// function's configuration.
func ConfigFromEnv() (Config, error) {
	c := Config{URL: strings.TrimRight(os.Getenv("KEYBRAKE_URL"), "/"), AdminURL: strings.TrimRight(os.Getenv("KEYBRAKE_ADMIN_URL"), "/")}
	if c.URL == "" {
		return c, errors.New("KEYBRAKE_URL is not set")
	}
	if _, err := url.ParseRequestURI(c.URL); err != nil {
		return c, fmt.Errorf("KEYBRAKE_URL %q: %v", c.URL, err)
	}
	if c.AdminURL == "" {
		c.AdminURL = c.URL
	}
	switch {
	case os.Getenv("KEYBRAKE_ISSUER_TOKEN") != "":
		c.Token = StaticToken(os.Getenv("KEYBRAKE_ISSUER_TOKEN"))
	case os.Getenv("KEYBRAKE_ISSUER_TOKEN_SSM_PARAMETER") != "":
		c.Token = &ExtensionToken{SSMParameter: os.Getenv("KEYBRAKE_ISSUER_TOKEN_SSM_PARAMETER")}
	case os.Getenv("KEYBRAKE_ISSUER_TOKEN_SECRET_ID") != "":
		c.Token = &ExtensionToken{SecretID: os.Getenv("KEYBRAKE_ISSUER_TOKEN_SECRET_ID")}
	default:
		c.Token = StaticToken("")
	}
	return c, nil
}

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
