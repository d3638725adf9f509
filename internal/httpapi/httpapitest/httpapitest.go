// Package httpapitest checks the services' REST handlers from tests and
// fuzz targets: a request routed as the real server routes it, and the
// problem body every refusal must be.
package httpapitest

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/eventsaga/eventsaga/internal/httpapi"
)

// Routed is the context the handler of req gets from e: routed (so Param
// is what the handler sees) and with the body limited as httpapi limits it.
func Routed(e *echo.Echo, req *http.Request) echo.Context {
	rec := httptest.NewRecorder()
	req.Body = http.MaxBytesReader(rec, req.Body, httpapi.MaxBodyBytes)
	c := e.NewContext(req, rec)
	e.Router().Find(req.Method, echo.GetPath(req), c)
	return c
}

// WantProblem checks that the real route answers req with a 4xx and a
// problem body: Content-Type application/problem+json and every field of
// httpapi.Problem well-formed. decodeErr is the decoder's refusal of req,
// which must be a problem of the same status; nil when req is routed to no
// handler (a path the router does not match).
func WantProblem(t testing.TB, e *echo.Echo, req *http.Request, decodeErr error) {
	t.Helper()
	var p *httpapi.Problem
	if decodeErr != nil && (!errors.As(decodeErr, &p) || p.Status < 400 || p.Status > 499) {
		t.Fatalf("%s %s refused with %v (%T), not a 4xx problem", req.Method, req.URL, decodeErr, decodeErr)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	// The route's body limit refuses a body known to be too large before
	// the handler decodes anything: its 413 stands for the decoder's answer.
	tooLarge := rec.Code == http.StatusRequestEntityTooLarge && req.ContentLength > httpapi.MaxBodyBytes
	if rec.Code < 400 || rec.Code > 499 || (p != nil && rec.Code != p.Status && !tooLarge) {
		t.Fatalf("%s %s: status %d (the decoder's problem: %v): %s", req.Method, req.URL, rec.Code, decodeErr, rec.Body)
	}
	if ct := rec.Header().Get(echo.HeaderContentType); ct != httpapi.ContentType {
		t.Fatalf("%s %s: %d with Content-Type %q", req.Method, req.URL, rec.Code, ct)
	}
	var got struct {
		httpapi.Problem
		Errors []map[string]string `json:"errors"` // to see that field and message are there
	}
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil || dec.More() {
		t.Fatalf("%s %s: %d with a body that is no problem: %v", req.Method, req.URL, rec.Code, err)
	}
	if !problemTypes[got.Type] || got.Title == "" || got.Status != rec.Code || got.Detail == "" || got.Errors != nil && len(got.Errors) == 0 {
		t.Fatalf("%s %s: %d with problem %+v", req.Method, req.URL, rec.Code, got)
	}
	for _, fe := range got.Errors {
		// A field may be named "": an unknown field is named as the body named it.
		if _, ok := fe["field"]; !ok || fe["message"] == "" || len(fe) != 2 {
			t.Fatalf("%s %s: problem %+v has a malformed field error", req.Method, req.URL, got)
		}
	}
}

// problemTypes are the types of the problems a request can cause.
var problemTypes = map[string]bool{
	"urn:eventsaga:problem:malformed-request": true, "urn:eventsaga:problem:validation": true,
	"urn:eventsaga:problem:not-found": true, "urn:eventsaga:problem:conflict": true,
	"urn:eventsaga:problem:too-large": true, "urn:eventsaga:problem:http": true,
}

// WantJSONObject checks that an accepted body is one JSON object, as
// httpapi.DecodeJSON promises (space around it aside).
func WantJSONObject(t testing.TB, body string) {
	t.Helper()
	trimmed := strings.TrimSpace(body)
	if !json.Valid([]byte(trimmed)) || !strings.HasPrefix(trimmed, "{") {
		t.Fatalf("accepted a body that is not one JSON object: %q", body)
	}
}
