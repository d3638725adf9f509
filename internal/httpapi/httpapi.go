// Package httpapi holds the HTTP conventions every service here follows:
// errors as RFC 9457 problem details, strict JSON request bodies of at most
// 64 KiB, health endpoints, Prometheus metrics of the requests at GET
// /metrics (Instrument), and a server that drains on shutdown.
//
// Status codes: a body or parameter that does not decode into the request's
// shape (not JSON, a field of the wrong JSON type, an unknown field, an ID
// that is not a UUID, an amount that is not a decimal) is 400; a request that
// decodes but breaks a rule is 422; an unknown resource 404; a state conflict
// 409; a body over 64 KiB 413. No input makes a 5xx: those are kept for the
// service's own faults, and for a database that does not answer within
// RequestTimeout (503).
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsaga/eventsaga/internal/logctx"
	"github.com/eventsaga/eventsaga/internal/tracing"
	"github.com/eventsaga/eventsaga/pkg/events"
)

// MaxBodyBytes is the largest request body accepted.
const MaxBodyBytes = 64 << 10

// ContentType is the media type of problem details.
const ContentType = "application/problem+json"

// Problem is an RFC 9457 problem detail, and an error a handler returns.
type Problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail,omitempty"`
	Errors []FieldError `json:"errors,omitempty"`
}

// FieldError names a request field and what is wrong with it.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (p *Problem) Error() string { return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail) }

func problem(status int, kind, title, detail string, errs ...FieldError) *Problem {
	return &Problem{Type: "urn:eventsaga:problem:" + kind, Title: title, Status: status, Detail: detail, Errors: errs}
}

// BadRequest: the request does not decode into the expected shape.
func BadRequest(detail string, errs ...FieldError) *Problem {
	return problem(http.StatusBadRequest, "malformed-request", "Malformed request", detail, errs...)
}

// Invalid: the request decodes but breaks a rule.
func Invalid(detail string, errs ...FieldError) *Problem {
	return problem(http.StatusUnprocessableEntity, "validation", "Request breaks a rule", detail, errs...)
}

// Required is the 422 of a missing field.
func Required(field string) *Problem {
	return Invalid(field+" is required", FieldError{Field: field, Message: "is required"})
}

// NotFound: no such resource.
func NotFound(detail string) *Problem {
	return problem(http.StatusNotFound, "not-found", "Not found", detail)
}

// Conflict: the resource's state does not allow the request.
func Conflict(detail string) *Problem {
	return problem(http.StatusConflict, "conflict", "Conflict with the current state", detail)
}

// TooLarge: the body exceeds MaxBodyBytes.
func TooLarge() *Problem {
	return problem(http.StatusRequestEntityTooLarge, "too-large", "Request body too large",
		fmt.Sprintf("request bodies are limited to %d bytes", MaxBodyBytes))
}

// Unauthorized: the request carries no valid credentials (the caller sets
// the WWW-Authenticate challenge).
func Unauthorized(detail string) *Problem {
	return problem(http.StatusUnauthorized, "unauthorized", "Unauthorized", detail)
}

// Forbidden: the caller is known but may not do this.
func Forbidden(detail string) *Problem {
	return problem(http.StatusForbidden, "forbidden", "Forbidden", detail)
}

// TooManyRequests: the caller is over its rate limit (the caller sets
// Retry-After).
func TooManyRequests(detail string) *Problem {
	return problem(http.StatusTooManyRequests, "too-many-requests", "Too many requests", detail)
}

// Unavailable: a dependency of the service does not answer.
func Unavailable(detail string) *Problem {
	return problem(http.StatusServiceUnavailable, "unavailable", "Service unavailable", detail)
}

// RequestTimeout bounds the work of a request: the database statements a
// handler runs with the request's context give up when it ends, and the
// client gets a 503. It must exceed the longest a handler waits on purpose
// (the projector's min_version, 3 s).
const RequestTimeout = 5 * time.Second

// New returns an echo instance with the conventions of this package: every
// error a problem detail, bodies limited to MaxBodyBytes, panics recovered,
// each request's context ending after RequestTimeout, carrying the request's
// trace and correlation IDs for its log lines, and one access-log line per
// request (accesslog.go); with tp not nil, a server span per request
// (tracing.go).
func New(log *slog.Logger, tp trace.TracerProvider) *echo.Echo {
	return newEcho(log, RequestTimeout, tp)
}

func newEcho(log *slog.Logger, timeout time.Duration, tp trace.TracerProvider) *echo.Echo {
	// The lines logged with a request's context carry its trace_id and
	// correlation_id (see accessLog), whatever handler log was built on.
	log = slog.New(logctx.NewHandler(log.Handler()))
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = errorHandler(log, timeout)
	e.Pre(traced(tp), accessLog(log, routeSet(e)))
	e.Use(limitBody, correlate, recoverPanic(log), deadline(timeout))
	return e
}

// deadline gives each request's context a deadline: a stalled database
// then answers a request with a 503 instead of hanging it (and holding its
// connection, and a pool connection) for as long as it stalls.
func deadline(d time.Duration) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			ctx, cancel := context.WithTimeout(c.Request().Context(), d)
			defer cancel()
			c.SetRequest(c.Request().WithContext(ctx))
			if err := next(c); err != nil {
				c.Error(err) // now, while the context still tells why it ended
			}
			return nil
		}
	}
}

func limitBody(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.ContentLength > MaxBodyBytes {
			return TooLarge()
		}
		r.Body = http.MaxBytesReader(c.Response(), r.Body, MaxBodyBytes)
		return next(c)
	}
}

func recoverPanic(log *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) (err error) {
			defer func() {
				if r := recover(); r != nil {
					log.ErrorContext(c.Request().Context(), "handler panicked", "method", c.Request().Method, "path", c.Request().URL.Path, "panic", r)
					err = fmt.Errorf("panic: %v", r)
				}
			}()
			return next(c)
		}
	}
}

func errorHandler(log *slog.Logger, timeout time.Duration) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		var p *Problem
		var he *echo.HTTPError
		var connect *pgconn.ConnectError
		ctx := c.Request().Context()
		switch {
		case errors.As(err, &p):
		case errors.As(err, &he):
			p = problem(he.Code, "http", http.StatusText(he.Code), fmt.Sprint(he.Message))
		case errors.Is(err, context.Canceled) && errors.Is(ctx.Err(), context.Canceled):
			return // the client went away
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) || pgconn.Timeout(err):
			// Not the client's fault, and perhaps over in a moment. A
			// command may have been written all the same (see docs/api.md).
			log.WarnContext(ctx, "request timed out", "method", c.Request().Method, "path", c.Request().URL.Path, "timeout", timeout, "err", err)
			detail := fmt.Sprintf("the service's database did not answer within %v", timeout)
			if m := c.Request().Method; m != http.MethodGet && m != http.MethodHead {
				detail += "; the request may or may not have taken effect"
			}
			p = Unavailable(detail)
		case errors.As(err, &connect):
			log.WarnContext(ctx, "database unavailable", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
			p = Unavailable("the service's database is unavailable")
		case connectionLost(err):
			// As with a timeout, a COMMIT may have been applied with its
			// answer lost: the client must not read this as "not done".
			log.WarnContext(ctx, "database connection lost", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
			detail := "the connection to the service's database was lost"
			if m := c.Request().Method; m != http.MethodGet && m != http.MethodHead {
				detail += "; the request may or may not have taken effect"
			}
			p = Unavailable(detail)
		default:
			log.ErrorContext(ctx, "request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
			p = problem(http.StatusInternalServerError, "internal", "Internal error", "the service failed to handle the request; it was logged")
		}
		c.Response().Header().Set(echo.HeaderContentType, ContentType)
		c.Response().WriteHeader(p.Status)
		_ = json.NewEncoder(c.Response()).Encode(p)
	}
}

// connectionLost reports an error of a database connection that broke in
// the middle of a request: closed under it, or its server going away
// (terminated, shutting down, in recovery).
func connectionLost(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03" // admin_shutdown, crash_shutdown, cannot_connect_now
	}
	var opErr *net.OpError
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.As(err, &opErr)
}

// DecodeJSON reads the request body into v, which must be a pointer to a
// struct: exactly one JSON object, with no field v does not have.
func DecodeJSON(c echo.Context, v any) error {
	body, err := io.ReadAll(c.Request().Body)
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return TooLarge()
	case err != nil:
		return BadRequest("could not read the request body: " + err.Error())
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return BadRequest("the request body is empty; a JSON object is expected")
	}
	if trimmed[0] != '{' {
		return BadRequest("the request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return decodeProblem(err)
	}
	if dec.More() {
		return BadRequest("the request body holds more than one JSON value")
	}
	if dec.InputOffset() < int64(len(trimmed)) { // a stray ']' or '}', which More does not report
		return BadRequest("the request body holds data after its JSON object")
	}
	return nil
}

func decodeProblem(err error) *Problem {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		return BadRequest("malformed JSON: " + err.Error())
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "(body)"
		}
		return BadRequest(fmt.Sprintf("field %s must be a JSON %s, not %s", field, jsonKind(typ.Type.Kind().String()), typ.Value),
			FieldError{Field: field, Message: "wrong JSON type"})
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return BadRequest("unknown field "+name, FieldError{Field: name, Message: "is not a field of this request"})
	default:
		return BadRequest("malformed JSON: " + err.Error())
	}
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "slice", "array":
		return "array"
	case "struct", "map":
		return "object"
	case "bool":
		return "boolean"
	default:
		return "number"
	}
}

// ParseUUID parses an ID from a path or a body field; a malformed one is a
// 400 naming the field.
func ParseUUID(field, s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return uuid.Nil, BadRequest(fmt.Sprintf("%s is not a UUID: %q", field, truncate(s, 64)),
			FieldError{Field: field, Message: "is not a UUID"})
	}
	return id, nil
}

// ParseMoney parses an amount field: a string that is not a decimal is a 400;
// a decimal with more than two places, negative or too large is a 422.
func ParseMoney(field, s string) (events.Money, error) {
	m, err := events.ParseMoney(s)
	switch {
	case errors.Is(err, events.ErrMoneySyntax):
		return 0, BadRequest(fmt.Sprintf("%s is not a decimal amount such as \"12.50\": %q", field, truncate(s, 64)),
			FieldError{Field: field, Message: "is not a decimal amount"})
	case err != nil:
		return 0, Invalid(fmt.Sprintf("%s: %v", field, err), FieldError{Field: field, Message: err.Error()})
	case m < 0:
		return 0, Invalid(field+" is negative", FieldError{Field: field, Message: "is negative"})
	}
	return m, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// traceParent matches a W3C traceparent header of version 00.
var traceParent = regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

// TraceParent returns the traceparent to carry on the events the request
// causes: its server span's with tracing on, else the request's W3C
// traceparent header, or "" when it has none or a malformed one.
func TraceParent(c echo.Context) string {
	if tp := tracing.TraceParent(c.Request().Context()); tp != "" {
		return tp
	}
	if h := c.Request().Header.Get("traceparent"); traceParent.MatchString(h) {
		return h
	}
	return ""
}

// Health registers GET /healthz (the process answers) and GET /readyz
// (ready reports no error: the service's database and Kafka answer).
func Health(e *echo.Echo, ready func(ctx context.Context) error) {
	e.GET("/healthz", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	e.GET("/readyz", func(c echo.Context) error {
		ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			return Unavailable(err.Error())
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	})
}

// Serve serves h on ln until ctx is done, then stops accepting connections
// and lets requests in flight finish for up to drain.
//
// When drain runs out, Serve closes the connections left. A client may hold
// a connection that never carried a request: an HTTP client's transport dials
// for every request it cannot serve from its idle pool at once, and parks the
// connections it ended up not needing. http.Server.Shutdown counts such a
// connection (StateNew) as busy until it is more than 5 whole seconds old,
// so a shutdown soon after a burst of requests can run out of a drain of 5
// seconds or so with nothing to drain. Closing those,
// or idle ones, is logged and is not an error; closing a request still in
// flight is.
//
// A client that sends its request or reads the answer too slowly is cut off
// (see serverTimeouts).
func Serve(ctx context.Context, log *slog.Logger, h http.Handler, ln net.Listener, drain time.Duration) error {
	return serve(ctx, log, h, ln, drain, serverTimeouts)
}

// timeouts are an http.Server's limits on a connection.
type timeouts struct {
	// ReadHeader bounds reading a request's headers: a client that sends
	// them a byte at a time (slowloris) is cut off.
	ReadHeader time.Duration
	// Read bounds reading a whole request, body included. It must exceed
	// RequestTimeout too: when it passes, net/http cancels the context of
	// a request still being handled.
	Read time.Duration
	// Write bounds a request from the end of its headers to the end of its
	// answer: body, handler and response. Past it the answer is lost, so it
	// exceeds RequestTimeout with room for a slow client.
	Write time.Duration
	// Idle bounds the wait for the next request on a keep-alive connection.
	Idle time.Duration
}

// serverTimeouts are the timeouts of Serve. A body is at most 64 KiB, so
// reading a request within 10 s needs about 7 KB/s.
var serverTimeouts = timeouts{
	ReadHeader: 5 * time.Second,
	Read:       10 * time.Second,
	Write:      RequestTimeout + 10*time.Second,
	Idle:       2 * time.Minute,
}

func newServer(h http.Handler, t timeouts, conns *connStates) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		ConnState:         conns.track,
	}
}

func serve(ctx context.Context, log *slog.Logger, h http.Handler, ln net.Listener, drain time.Duration, t timeouts) error {
	var conns connStates
	srv := newServer(h, t, &conns)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if err == nil {
		return nil
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		srv.Close()
		return fmt.Errorf("drain HTTP: %w", err)
	}
	left := conns.count()
	if err := srv.Close(); err != nil {
		return fmt.Errorf("close HTTP after %v of drain: %w", drain, err)
	}
	log.Warn("HTTP drain timed out; closed the connections left",
		"drain", drain, "closed", left.total(), "in_flight", left.active, "unused", left.new, "idle", left.idle)
	if left.active > 0 {
		return fmt.Errorf("drain HTTP: %d request(s) still in flight after %v were cut off: %w", left.active, drain, err)
	}
	return nil
}

// connStates follows a server's connections through http.Server.ConnState.
type connStates struct {
	mu    sync.Mutex
	state map[net.Conn]http.ConnState
}

func (c *connStates) track(conn net.Conn, st http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch st {
	case http.StateClosed, http.StateHijacked: // Shutdown waits for neither
		delete(c.state, conn)
	default:
		if c.state == nil {
			c.state = map[net.Conn]http.ConnState{}
		}
		c.state[conn] = st
	}
}

// connCount is how many connections are in each state: new ones have not
// (yet) sent a whole request, active ones carry a request, idle ones wait for
// the next.
type connCount struct{ new, active, idle int }

func (n connCount) total() int { return n.new + n.active + n.idle }

func (c *connStates) count() connCount {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n connCount
	for _, st := range c.state {
		switch st {
		case http.StateNew:
			n.new++
		case http.StateActive:
			n.active++
		case http.StateIdle:
			n.idle++
		}
	}
	return n
}
