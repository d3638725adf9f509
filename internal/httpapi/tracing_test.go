package httpapi

import (
	"log/slog"
	"net/http"
	"testing"

	"github.com/labstack/echo/v4"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/eventsaga/eventsaga/internal/logctx"
	"github.com/eventsaga/eventsaga/internal/testenv"
)

// With tracing on, a request is a server span named after its route, child
// of the client's traceparent; the handler's TraceParent is the server
// span's, and the request's log lines carry its trace ID. The probes make
// no span.
func TestRequestIsAServerSpan(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	var buf testenv.Buffer
	log := slog.New(logctx.NewHandler(slog.NewJSONHandler(&buf, nil)))
	e := New(log, tp)
	var carried string
	e.GET("/things/:id", func(c echo.Context) error {
		carried = TraceParent(c)
		return c.NoContent(http.StatusTeapot)
	})
	Health(e, nil)

	client := "00-" + testTraceID + "-00f067aa0ba902b7-01"
	if rec := serveOne(e, "GET", "/things/8", client); rec.Code != http.StatusTeapot {
		t.Fatalf("status %d", rec.Code)
	}
	serveOne(e, "GET", "/healthz", "")
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans; want the one request's (none for /healthz): %v", len(spans), spans)
	}
	s := spans[0]
	if s.Name != "GET /things/:id" || s.SpanContext.TraceID().String() != testTraceID || s.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("span %q in trace %s under %s; want GET /things/:id under the client's span", s.Name, s.SpanContext.TraceID(), s.Parent.SpanID())
	}
	if want := "00-" + testTraceID + "-" + s.SpanContext.SpanID().String() + "-01"; carried != want {
		t.Errorf("the handler carries %q; want the server span's %q", carried, want)
	}
	code := false
	for _, a := range s.Attributes {
		code = code || (a.Key == "http.response.status_code" && a.Value.AsInt64() == http.StatusTeapot)
	}
	if !code {
		t.Errorf("the span does not have the status: %v", s.Attributes)
	}
	if l := byMsg(buf.JSONLines(t), "request"); len(l) != 1 || l[0]["trace_id"] != testTraceID { // /healthz is logged at debug
		t.Errorf("access lines %v; want the request's with trace_id %s", l, testTraceID)
	}
}
