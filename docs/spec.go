// Package docs embeds the admin API's contract, openapi.yaml, so the server
// serves the very document the test suite validates every admin call
// against: there is one copy, and it cannot drift from what is published.
package docs

import _ "embed"

// OpenAPIYAML is docs/openapi.yaml (OpenAPI 3.1), as written.
//
//go:embed openapi.yaml
var OpenAPIYAML []byte
