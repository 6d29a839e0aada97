package stepfunctions

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/keybrake/keybrake/integrations/issuer"
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

// Issuer token sources (see ConfigFromEnv).
type (
	TokenSource    = issuer.TokenSource
	StaticToken    = issuer.StaticToken
	ExtensionToken = issuer.ExtensionToken
)

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
	c.Token = issuer.FromEnv()
	return c, nil
}
