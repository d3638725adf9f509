package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsaga/eventsaga/internal/logctx"
	"github.com/eventsaga/eventsaga/internal/testenv"
)

const (
	testTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	testOrderID = "0190f5a0-1c2d-7e3f-8a4b-3c4d5e6f7a8b"
)

func newLoggedEcho(t *testing.T, level slog.Level) (*echo.Echo, *testenv.Buffer) {
	t.Helper()
	var buf testenv.Buffer
	// As platform.NewLogger builds it: lines logged with a context carry
	// its IDs.
	log := slog.New(logctx.NewHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level})))
	e := New(log, nil)
	e.GET("/things/:id", func(c echo.Context) error {
		log.InfoContext(c.Request().Context(), "handling a thing", "id", c.Param("id"))
		return c.JSON(http.StatusOK, map[string]string{"id": c.Param("id")})
	})
	e.GET("/orders/:id", func(c echo.Context) error {
		log.InfoContext(c.Request().Context(), "reading an order")
		return NotFound("no such order")
	})
	e.POST("/orders", func(c echo.Context) error {
		SetCorrelationID(c, testOrderID) // once placed
		log.InfoContext(c.Request().Context(), "placed an order")
		return c.NoContent(http.StatusCreated)
	})
	e.GET("/fails", func(echo.Context) error { return errors.New("boom") })
	Health(e, func(context.Context) error { return nil })
	if err := Instrument(e, prometheus.NewRegistry(), log); err != nil {
		t.Fatal(err)
	}
	return e, &buf
}

func serveOne(e *echo.Echo, method, path, traceparent string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, nil)
	if traceparent != "" {
		req.Header.Set("traceparent", traceparent)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

// byMsg returns the lines with message msg.
func byMsg(lines []map[string]any, msg string) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// A request with a traceparent gets one access line, in JSON, with that
// trace ID, its route, status and size; the handler's line, logged with the
// request's context, carries the same trace ID.
func TestAccessLogCarriesTheRequestsTraceID(t *testing.T) {
	e, buf := newLoggedEcho(t, slog.LevelInfo)
	rec := serveOne(e, "GET", "/things/7", "00-"+testTraceID+"-00f067aa0ba902b7-01")
	if rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	lines := buf.JSONLines(t)
	access := byMsg(lines, "request")
	if len(access) != 1 {
		t.Fatalf("want one access line, got %d: %v", len(access), lines)
	}
	a := access[0]
	for k, want := range map[string]any{
		"level": "INFO", "trace_id": testTraceID, "method": "GET", "route": "/things/:id", "path": "/things/7",
		"status": float64(200), "bytes_out": float64(rec.Body.Len()), "remote_addr": "192.0.2.1:1234",
	} {
		if a[k] != want {
			t.Errorf("access line: %s = %v, want %v (%v)", k, a[k], want, a)
		}
	}
	if _, ok := a["duration_ms"].(float64); !ok {
		t.Errorf("access line has no duration_ms: %v", a)
	}
	if _, ok := a["correlation_id"]; ok {
		t.Errorf("a request about no order has a correlation_id: %v", a)
	}
	h := byMsg(lines, "handling a thing")
	if len(h) != 1 || h[0]["trace_id"] != testTraceID {
		t.Errorf("the handler's line does not carry the trace ID: %v", lines)
	}
}

// A request without a traceparent (or with a malformed one: version ff is
// invalid in W3C Trace Context, the zero trace ID too) gets a trace ID
// of its own, the same on all its lines, and another than the next
// request's.
func TestAccessLogMakesUpATraceID(t *testing.T) {
	e, buf := newLoggedEcho(t, slog.LevelInfo)
	seen := map[string]bool{}
	for _, tp := range []string{"", "ff-" + testTraceID + "-00f067aa0ba902b7-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"} {
		buf.Reset()
		serveOne(e, "GET", "/things/8", tp)
		lines := buf.JSONLines(t)
		access, h := byMsg(lines, "request"), byMsg(lines, "handling a thing")
		if len(access) != 1 || len(h) != 1 {
			t.Fatalf("traceparent %q: lines %v", tp, lines)
		}
		id, _ := access[0]["trace_id"].(string)
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" || id == testTraceID {
			t.Errorf("traceparent %q: trace_id %q is not a new W3C trace ID", tp, id)
		}
		if h[0]["trace_id"] != id {
			t.Errorf("traceparent %q: the handler's trace_id %v is not the access line's %s", tp, h[0]["trace_id"], id)
		}
		if seen[id] {
			t.Errorf("trace_id %s made up twice", id)
		}
		seen[id] = true
	}
}

// A request about an order carries the order's ID as correlation_id, from
// its route's :id, or from the handler once it knows it (POST /orders);
// errors are logged with the request's IDs too.
func TestAccessLogCorrelatesOrders(t *testing.T) {
	e, buf := newLoggedEcho(t, slog.LevelInfo)
	for _, r := range []struct{ method, path, handlerMsg string }{
		{"GET", "/orders/" + testOrderID, "reading an order"},
		{"POST", "/orders", "placed an order"},
	} {
		buf.Reset()
		serveOne(e, r.method, r.path, "00-"+testTraceID+"-00f067aa0ba902b7-01")
		lines := buf.JSONLines(t)
		for _, msg := range []string{"request", r.handlerMsg} {
			l := byMsg(lines, msg)
			if len(l) != 1 || l[0]["correlation_id"] != testOrderID || l[0]["trace_id"] != testTraceID {
				t.Errorf("%s %s: %q lines %v; want one with correlation_id %s", r.method, r.path, msg, l, testOrderID)
			}
		}
	}
	// A path ID that is not a UUID is no correlation ID.
	buf.Reset()
	serveOne(e, "GET", "/orders/not-a-uuid", "")
	if l := byMsg(buf.JSONLines(t), "request"); len(l) != 1 || l[0]["correlation_id"] != nil {
		t.Errorf("GET /orders/not-a-uuid: %v", l)
	}

	buf.Reset()
	rec := serveOne(e, "GET", "/fails", "00-"+testTraceID+"-00f067aa0ba902b7-01")
	lines := buf.JSONLines(t)
	if f := byMsg(lines, "request failed"); rec.Code != 500 || len(f) != 1 || f[0]["trace_id"] != testTraceID {
		t.Errorf("the error line does not carry the trace ID: %v", lines)
	}
	if a := byMsg(lines, "request"); len(a) != 1 || a[0]["status"] != float64(500) {
		t.Errorf("the failed request's access line: %v", a)
	}
}

// Probes are logged at debug level, everything else at info; an unmatched
// path is logged with route "unmatched".
func TestAccessLogLevels(t *testing.T) {
	e, buf := newLoggedEcho(t, slog.LevelInfo)
	for _, p := range []string{"/healthz", "/readyz", MetricsPath} {
		if rec := serveOne(e, "GET", p, ""); rec.Code != 200 {
			t.Fatalf("GET %s: %d", p, rec.Code)
		}
	}
	if l := buf.JSONLines(t); len(l) != 0 {
		t.Errorf("probes logged at info level: %v", l)
	}
	serveOne(e, "GET", "/nowhere", "")
	if a := byMsg(buf.JSONLines(t), "request"); len(a) != 1 || a[0]["route"] != unmatchedRoute || a[0]["status"] != float64(404) {
		t.Errorf("unmatched request: %v", a)
	}

	e, buf = newLoggedEcho(t, slog.LevelDebug)
	serveOne(e, "GET", "/healthz", "")
	if a := byMsg(buf.JSONLines(t), "request"); len(a) != 1 || a[0]["level"] != "DEBUG" || a[0]["route"] != "/healthz" {
		t.Errorf("probe at debug level: %v", a)
	}
}
