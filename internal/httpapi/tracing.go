package httpapi

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.39.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsaga/eventsaga/internal/tracing"
)

// traced is the outermost middleware of New. With tracing on (tp not nil)
// each request gets a server span (otelhttp's), named after its route once
// routing has found it, and child of the client's traceparent if it sent
// one; the request's context carries the span for the handler and the
// commands it runs. With tracing off, the context carries the client's
// traceparent, if valid, as a remote span context: the commands carry it on
// the events they append, and it costs no span.
//
// The probes, /metrics and the saga view's static files and live feed make
// no span: they would drown the sagas' traces.
func traced(tp trace.TracerProvider) echo.MiddlewareFunc {
	if tp == nil {
		return func(next echo.HandlerFunc) echo.HandlerFunc {
			return func(c echo.Context) error {
				r := c.Request()
				if h := r.Header.Get("traceparent"); h != "" {
					c.SetRequest(r.WithContext(tracing.Context(r.Context(), h)))
				}
				return next(c)
			}
		}
	}
	mw := otelhttp.NewMiddleware("http",
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(tracing.Propagator),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()), // the metrics are Prometheus's (metrics.go)
		otelhttp.WithFilter(func(r *http.Request) bool { return !untraced(r.URL.Path) }),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }),
	)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			var err error
			mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c.SetRequest(r)
				c.Response().Writer = w // otelhttp's, which sees the status
				if err = next(c); err != nil {
					c.Error(err) // answered here, so that the span has the status
					err = nil
				}
				if route := c.Path(); route != "" {
					span := trace.SpanFromContext(r.Context())
					span.SetName(r.Method + " " + route)
					span.SetAttributes(semconv.HTTPRoute(route))
				}
			})).ServeHTTP(c.Response().Writer, c.Request())
			return err
		}
	}
}

func untraced(path string) bool {
	switch path {
	case "/healthz", "/readyz", "/metrics", "/ui/events":
		return true
	}
	return strings.HasPrefix(path, "/ui/static/")
}
