package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/goccy/go-yaml"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/docs"
)

// openAPIJSON converts the embedded YAML once: the document is fixed at
// build time, and a spec that does not convert is a build defect that New
// reports before the server listens.
var openAPIJSON = sync.OnceValues(func() ([]byte, error) {
	b, err := yaml.YAMLToJSON(docs.OpenAPIYAML)
	if err != nil {
		return nil, fmt.Errorf("admin: docs/openapi.yaml does not convert to JSON: %w", err)
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("admin: docs/openapi.yaml converted to invalid JSON")
	}
	return b, nil
})

// OpenAPIJSON is the admin API's contract (docs/openapi.yaml) as JSON, the
// document GET /vault/openapi.json serves.
func OpenAPIJSON() ([]byte, error) { return openAPIJSON() }

// serveOpenAPI answers GET /vault/openapi.json to an authenticated caller,
// either token: the contract holds no secret, but like every admin route it
// tells an unauthenticated caller nothing.
func (a *API) serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	b, err := openAPIJSON()
	if err != nil {
		a.log.Error("openapi document", "err", err.Error())
		writeError(w, keybrake.Errorf(keybrake.CodeInternal, "internal error"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b) //nolint:errcheck // the client may have gone
}
