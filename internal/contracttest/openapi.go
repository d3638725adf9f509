package contracttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// OpenAPI validates HTTP exchanges against an OpenAPI 3.1 document. It is
// safe for concurrent use.
type OpenAPI struct {
	path    string
	router  routers.Router
	problem *openapi3.Schema
}

// LoadOpenAPI loads and validates the OpenAPI 3.1 document at path, with
// the files its $refs name.
func LoadOpenAPI(path string) (*OpenAPI, error) {
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = true
	doc, err := loader.LoadFromFile(path)
	if err != nil {
		return nil, pathError(path, err)
	}
	if !doc.IsOpenAPI31OrLater() {
		return nil, pathError(path, fmt.Errorf("openapi %q: this validator is for 3.1", doc.OpenAPI))
	}
	if err := doc.Validate(loader.Context); err != nil {
		return nil, pathError(path, err)
	}
	// On a 3.1 document kin-openapi validates a schema with its JSON Schema
	// 2020-12 validator only if it can compile the schema on its own, and
	// otherwise, silently, with its OpenAPI 3.0 validator, which ignores
	// const, if/then/else and the other 3.1 keywords. A schema that refers
	// to another file (docs/schemas/*.json) is one it cannot compile; copied
	// into the document's components, it is one it can.
	doc.InternalizeRefs(context.Background(), nil)
	if err := doc.Validate(loader.Context); err != nil {
		return nil, pathError(path, fmt.Errorf("after internalizing references: %w", err))
	}
	router, err := gorillamux.NewRouter(withoutServers(doc))
	if err != nil {
		return nil, pathError(path, err)
	}
	problem := doc.Components.Schemas["Problem"]
	if problem == nil || problem.Value == nil {
		return nil, pathError(path, errors.New("no components.schemas.Problem"))
	}
	return &OpenAPI{path: shortPath(path), router: router, problem: problem.Value}, nil
}

// withoutServers returns a copy of doc whose routes match any host. The
// document names each service's default address; tests serve on ports of
// their own, and one route (GET /orders/{id}) is served by two services.
func withoutServers(doc *openapi3.T) *openapi3.T {
	cp := *doc
	cp.Servers = nil
	cp.Paths = openapi3.NewPaths()
	for path, item := range doc.Paths.Map() {
		it := *item
		it.Servers = nil
		cp.Paths.Set(path, &it)
	}
	return &cp
}

// Exchange is an HTTP request and its response, with their bodies read.
type Exchange struct {
	Request     *http.Request
	RequestBody []byte
	Status      int
	Header      http.Header // the response's
	Body        []byte      // the response's
	// Malformed says the request was made invalid on purpose: only the
	// response is validated, and a request that matches no operation of
	// the document must be answered with a problem detail.
	Malformed bool
}

// Validate returns what in x disagrees with the document, or nil.
func (o *OpenAPI) Validate(x Exchange) error {
	ctx := context.Background()
	req := x.Request.Clone(ctx)
	req.Body = io.NopCloser(bytes.NewReader(x.RequestBody))
	route, params, err := o.router.FindRoute(req)
	if err != nil {
		if !x.Malformed {
			return fmt.Errorf("no operation of the document: %v", err)
		}
		return o.validateProblem(x)
	}
	in := &openapi3filter.RequestValidationInput{
		Request: req, PathParams: params, Route: route,
		Options: o.options(func(opts *openapi3filter.Options) {
			opts.SkipSettingDefaults = true
			opts.RejectWhenRequestBodyNotSpecified = true
		}),
	}
	var errs []error
	if !x.Malformed {
		if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
			errs = append(errs, fmt.Errorf("request: %w", err))
		}
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: x.Status, Header: x.Header,
		Body:    io.NopCloser(bytes.NewReader(x.Body)),
		Options: o.options(func(opts *openapi3filter.Options) { opts.IncludeResponseStatus = true }),
	}
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		errs = append(errs, fmt.Errorf("response: %w", err))
	}
	return errors.Join(errs...)
}

func (o *OpenAPI) options(set func(*openapi3filter.Options)) *openapi3filter.Options {
	opts := &openapi3filter.Options{MultiError: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
	opts.WithCustomSchemaErrorFunc(schemaMessage)
	set(opts)
	return opts
}

// schemaMessage is a schema error without the schema and the value, which
// kin-openapi prints in full.
func schemaMessage(err *openapi3.SchemaError) string {
	if p := err.JSONPointer(); len(p) > 0 && !strings.HasPrefix(err.Reason, "at '") {
		return fmt.Sprintf("at '/%s': %s", strings.Join(p, "/"), err.Reason)
	}
	return err.Reason
}

// validateProblem checks the answer to a request no operation of the
// document matches: a problem detail of its status.
func (o *OpenAPI) validateProblem(x Exchange) error {
	if mt, _, _ := mime.ParseMediaType(x.Header.Get("Content-Type")); mt != "application/problem+json" {
		return fmt.Errorf("response to a request no operation matches: Content-Type %q, want application/problem+json", x.Header.Get("Content-Type"))
	}
	var v any
	if err := json.Unmarshal(x.Body, &v); err != nil {
		return fmt.Errorf("response to a request no operation matches: %v", err)
	}
	if err := o.problem.VisitJSON(v, openapi3.EnableJSONSchema2020(), openapi3.MultiErrors(),
		openapi3.SetSchemaErrorMessageCustomizer(schemaMessage)); err != nil {
		return fmt.Errorf("response to a request no operation matches is not a Problem: %w", err)
	}
	if status := v.(map[string]any)["status"]; status != float64(x.Status) || x.Status < 400 {
		return fmt.Errorf("response to a request no operation matches: problem status %v in a %d response", status, x.Status)
	}
	return nil
}

// Reporter is what the transport reports to: a *testing.T.
type Reporter interface {
	Errorf(format string, args ...any)
}

type malformedKey struct{}

// Malformed marks the requests made with ctx as invalid on purpose: the
// transport validates their responses only.
func Malformed(ctx context.Context) context.Context {
	return context.WithValue(ctx, malformedKey{}, true)
}

func isMalformed(ctx context.Context) bool {
	v, _ := ctx.Value(malformedKey{}).(bool)
	return v
}

// Transport returns a RoundTripper that sends requests with next and
// reports to r every request and response that disagrees with the
// document, naming the method, the path and the status. Responses reach
// the caller unchanged.
func (o *OpenAPI) Transport(r Reporter, next http.RoundTripper) http.RoundTripper {
	return &transport{api: o, r: r, next: next}
}

type transport struct {
	api  *OpenAPI
	r    Reporter
	next http.RoundTripper
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		reqBody = b
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	x := Exchange{Request: req, RequestBody: reqBody, Status: resp.StatusCode, Header: resp.Header, Body: body, Malformed: isMalformed(req.Context())}
	if err := t.api.Validate(x); err != nil {
		t.r.Errorf("%s %s answered %d: disagrees with %s:\n%v", req.Method, req.URL.RequestURI(), resp.StatusCode, t.api.path, err)
	}
	return resp, nil
}
