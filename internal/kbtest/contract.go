package kbtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/admin"
)

// Contract is the admin API's published contract (docs/openapi.yaml, as
// GET /vault/openapi.json serves it), loaded for checking calls against it.
//
// Routes are found with an http.ServeMux built from the spec's paths, the
// same matcher admin routes with, so a path parameter such as a run label
// holding an escaped "/" is matched as the server matches it. A path item's
// x-keybrake-pattern gives its mux pattern where the two spellings differ
// ({label...} has no OpenAPI form).
type Contract struct {
	Doc        *openapi3.T
	adminToken string
	mux        *http.ServeMux
}

type matchKey struct{}

// match is what the contract's mux found for a request.
type match struct {
	route  *routers.Route
	params map[string]string
}

var (
	contractOnce sync.Once
	contractDoc  *openapi3.T
	contractErr  error
)

// LoadContract loads and validates the spec served at /vault/openapi.json.
// adminToken tells the admin token from issuer tokens, so that an
// operation's security (which token it accepts) is checked too.
func LoadContract(adminToken string) (*Contract, error) {
	contractOnce.Do(func() {
		b, err := admin.OpenAPIJSON()
		if err != nil {
			contractErr = err
			return
		}
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(b)
		if err != nil {
			contractErr = fmt.Errorf("loading docs/openapi.yaml: %w", err)
			return
		}
		if err := doc.Validate(loader.Context); err != nil {
			contractErr = fmt.Errorf("docs/openapi.yaml is not a valid OpenAPI document: %w", err)
			return
		}
		contractDoc = doc
	})
	if contractErr != nil {
		return nil, contractErr
	}
	c := &Contract{Doc: contractDoc, adminToken: adminToken, mux: http.NewServeMux()}
	for path, item := range contractDoc.Paths.Map() {
		pattern := path
		if p, ok := item.Extensions["x-keybrake-pattern"].(string); ok {
			pattern = p
		}
		for method, op := range item.Operations() {
			route := &routers.Route{Spec: contractDoc, Path: path, PathItem: item, Method: method, Operation: op}
			names := pathParams(item, op)
			c.mux.HandleFunc(method+" "+pattern, func(_ http.ResponseWriter, r *http.Request) {
				m := r.Context().Value(matchKey{}).(*match)
				m.route, m.params = route, map[string]string{}
				for _, n := range names {
					m.params[n] = r.PathValue(n)
				}
			})
		}
	}
	return c, nil
}

func pathParams(item *openapi3.PathItem, op *openapi3.Operation) []string {
	var names []string
	for _, ps := range []openapi3.Parameters{item.Parameters, op.Parameters} {
		for _, p := range ps {
			if p.Value != nil && p.Value.In == openapi3.ParameterInPath {
				names = append(names, p.Value.Name)
			}
		}
	}
	return names
}

// Route finds the spec's operation for a request, or nil when the spec has
// none (an undocumented route or method).
func (c *Contract) Route(r *http.Request) (*routers.Route, map[string]string) {
	m := &match{}
	probe := r.Clone(context.WithValue(r.Context(), matchKey{}, m))
	probe.Body = http.NoBody
	c.mux.ServeHTTP(discard{}, probe)
	return m.route, m.params
}

// Check validates one exchange: the request (body as sent) and the answer
// the server gave it. A request the spec refuses is fine when the server
// refused it too (tests send bad requests on purpose); the server accepting
// one is drift, as is any answer — status, header, body — the spec does not
// describe. It returns nil when the exchange matches the contract.
func (c *Contract) Check(r *http.Request, reqBody []byte, status int, header http.Header, body []byte) error {
	ctx := context.Background()
	route, params := c.Route(r)
	if route == nil {
		// Unknown routes answer 404 not_found (401 first when the caller
		// is not authenticated): the catch-all, in the error shape.
		if status != http.StatusNotFound && status != http.StatusUnauthorized {
			return fmt.Errorf("the spec has no operation %s %s, yet the server answered %d", r.Method, r.URL.Path, status)
		}
		return c.checkError(status, header, body)
	}
	req := r.Clone(ctx)
	req.Body = io.NopCloser(bytes.NewReader(reqBody))
	if req.Header.Get("Content-Type") == "" && len(reqBody) > 0 {
		req.Header.Set("Content-Type", "application/json") // the server reads a body without one as JSON
	}
	in := &openapi3filter.RequestValidationInput{
		Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{MultiError: true, AuthenticationFunc: c.authenticate},
	}
	if err := openapi3filter.ValidateRequest(ctx, in); err != nil && status < 400 {
		return fmt.Errorf("the server answered %d to a request the spec refuses: %w", status, err)
	}
	opts := &openapi3filter.Options{MultiError: true, IncludeResponseStatus: true}
	ndjson := mediaType(header) == "application/x-ndjson"
	opts.ExcludeResponseBody = ndjson
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: status, Header: header,
		Body: io.NopCloser(bytes.NewReader(body)), Options: opts,
	}
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return err
	}
	if ndjson {
		return c.checkLines(route, status, body)
	}
	return nil
}

// checkLines validates an NDJSON answer line by line against the schema of
// its media type, which describes one line.
func (c *Contract) checkLines(route *routers.Route, status int, body []byte) error {
	resp := route.Operation.Responses.Status(status)
	mt := resp.Value.Content.Get("application/x-ndjson")
	if mt == nil || mt.Schema == nil {
		return fmt.Errorf("the spec has no application/x-ndjson answer for %d", status)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 8<<20)
	for n := 1; sc.Scan(); n++ {
		var v any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			return fmt.Errorf("NDJSON line %d is not JSON: %w", n, err)
		}
		if err := mt.Schema.Value.VisitJSON(v, openapi3.EnableJSONSchema2020(), openapi3.VisitAsResponse(), openapi3.MultiErrors()); err != nil {
			return fmt.Errorf("NDJSON line %d does not match the schema: %w", n, err)
		}
	}
	return sc.Err()
}

// checkError validates an answer outside every operation against the
// error schema.
func (c *Contract) checkError(status int, header http.Header, body []byte) error {
	if mediaType(header) != "application/json" {
		return fmt.Errorf("a %d answer with Content-Type %q, not application/json", status, header.Get("Content-Type"))
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("a %d answer that is not JSON: %w", status, err)
	}
	sc := c.Doc.Components.Schemas["Error"]
	if err := sc.Value.VisitJSON(v, openapi3.EnableJSONSchema2020(), openapi3.VisitAsResponse(), openapi3.MultiErrors()); err != nil {
		return fmt.Errorf("a %d answer that is not the Error schema: %w", status, err)
	}
	return nil
}

// authenticate checks that the request carries the token one of the
// operation's security schemes names: the admin token, or an issuer token.
func (c *Contract) authenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	h := in.RequestValidationInput.Request.Header.Get("Authorization")
	token, ok := strings.CutPrefix(h, "Bearer ")
	switch {
	case !ok:
	case in.SecuritySchemeName == "adminToken" && token == c.adminToken:
		return nil
	case in.SecuritySchemeName == "issuerToken" && keybrake.WellFormedIssuerToken(token):
		return nil
	}
	return errors.New("no " + in.SecuritySchemeName)
}

func mediaType(h http.Header) string {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return mt
}

// Middleware wraps the admin handler so every exchange through it is
// checked with Check; fail reports a mismatch, naming the method, path and
// status. The answer's body reaches the client once it is checked (or as
// the handler flushes); a handler that aborts (an export cut off on
// purpose) is not checked.
func (c *Contract) Middleware(fail func(msg string), next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqBody, err := io.ReadAll(r.Body)
		if err != nil {
			fail(fmt.Sprintf("openapi contract: %s %s: reading the request body: %v", r.Method, r.URL.RequestURI(), err))
		}
		r.Body = io.NopCloser(bytes.NewReader(reqBody))
		probe := r.Clone(r.Context())
		rec := &teeWriter{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		if err := c.Check(probe, reqBody, rec.status, w.Header().Clone(), rec.body.Bytes()); err != nil {
			fail(fmt.Sprintf("openapi contract: %s %s → %d: %v", r.Method, r.URL.RequestURI(), rec.status, err))
		}
		rec.release() //nolint:errcheck // the client may have gone
	})
}

// Proxy is a reverse proxy to the admin API at target (a child process's)
// that checks every exchange through it as Middleware does. When the
// target cannot be reached (a process killed on purpose) the connection is
// cut, as the dead process would have, and nothing is checked.
func (c *Contract) Proxy(fail func(msg string), target *url.URL) http.Handler {
	rp := &httputil.ReverseProxy{
		// No FlushInterval: an answer with a length reaches the client
		// after it is checked; an export (no length) still streams.
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		ErrorHandler: func(http.ResponseWriter, *http.Request, error) {
			panic(http.ErrAbortHandler)
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	return c.Middleware(fail, rp)
}

// teeWriter keeps a copy of an answer and holds its body back until the
// handler flushes or returns, so that a mismatch is reported before the
// client has the whole answer: the test that made the call is still in the
// call when it fails. A streamed answer (an export flushing as it goes)
// still streams.
type teeWriter struct {
	http.ResponseWriter
	status  int
	body    bytes.Buffer
	pending bytes.Buffer
}

func (t *teeWriter) WriteHeader(code int) {
	if t.status == 0 {
		t.status = code
	}
	t.ResponseWriter.WriteHeader(code)
}

func (t *teeWriter) Write(b []byte) (int, error) {
	if t.status == 0 {
		t.WriteHeader(http.StatusOK)
	}
	t.body.Write(b)
	return t.pending.Write(b)
}

// release sends what is held back.
func (t *teeWriter) release() error {
	if t.pending.Len() == 0 {
		return nil
	}
	_, err := t.ResponseWriter.Write(t.pending.Bytes())
	t.pending.Reset()
	return err
}

func (t *teeWriter) FlushError() error {
	if err := t.release(); err != nil {
		return err
	}
	return http.NewResponseController(t.ResponseWriter).Flush()
}

func (t *teeWriter) Flush() { t.FlushError() } //nolint:errcheck // http.Flusher has no error

func (t *teeWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// discard is a ResponseWriter that keeps nothing, for probing the mux.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}
