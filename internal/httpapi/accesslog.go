package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsaga/eventsaga/internal/logctx"
)

// accessLog is the outermost middleware of New (echo's Pre, so that it wraps
// routing, Instrument's middleware and everything else): it gives the
// request's context the request's trace ID, and logs one line per request
// once it is answered.
//
// The trace ID is that of the request's span (traced, the middleware around
// this one): the server span's with tracing on, else the one of the
// request's W3C traceparent header; when it has none (or a malformed one),
// a random one made for the request: every
// line logged with the request's context (logger.InfoContext(c.Request().
// Context(), ...)) carries it as trace_id, so that a request's lines can be
// found together. A made-up trace ID is only in the logs; the events the
// request causes carry the request's own traceparent, or none.
//
// The access line is at info level; the probes' (GET /healthz, /readyz,
// /metrics) at debug, since they come every few seconds, unless they
// failed with a 5xx.
func accessLog(log *slog.Logger, routes *knownRoutes) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			r := c.Request()
			var traceID string
			if sc := trace.SpanContextFromContext(r.Context()); sc.IsValid() {
				traceID = sc.TraceID().String() // the server span's, or the client's traceparent (traced)
			}
			if traceID == "" {
				traceID = logctx.NewTraceID()
			}
			ctx := logctx.With(r.Context(), traceID, "")
			c.SetRequest(r.WithContext(ctx))
			if err := next(c); err != nil {
				c.Error(err) // the status is known only once the error is answered
			}
			route := c.Path()
			if !routes.has(route) {
				route = unmatchedRoute
			}
			status := c.Response().Status
			if !c.Response().Committed && errors.Is(ctx.Err(), context.Canceled) {
				status = 499 // nothing was answered: the client went away
			}
			level := slog.LevelInfo
			if probeRoute(route) && status < 500 {
				level = slog.LevelDebug
			}
			if !log.Enabled(ctx, level) {
				return nil
			}
			// trace_id and correlation_id come from ctx (logctx).
			log.LogAttrs(ctx, level, "request",
				slog.String("method", r.Method),
				slog.String("route", route),
				slog.String("path", r.URL.Path),
				slog.Int("status", status),
				slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
				slog.Int64("bytes_out", c.Response().Size),
				slog.String("remote_addr", r.RemoteAddr),
			)
			return nil
		}
	}
}

// probeRoute reports the routes that monitoring calls every few seconds.
func probeRoute(route string) bool {
	return route == "/healthz" || route == "/readyz" || route == MetricsPath
}

// correlate sets the correlation ID of a request about an order (a route
// whose template has orders/:id, such as /orders/:id/cancel or the saga
// view's /ui/orders/:id) to that order's ID, as soon as the request is
// routed: the events of an order's saga carry its ID as their
// correlation_id, so the request's lines and the saga's are found alike. A
// handler that learns the ID later (POST /orders, once the order is
// placed) sets it with SetCorrelationID.
func correlate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if strings.Contains(c.Path(), "orders/:id") {
			if id, err := uuid.Parse(c.Param("id")); err == nil && len(c.Param("id")) == 36 {
				logctx.SetCorrelationID(c.Request().Context(), id.String())
			}
		}
		return next(c)
	}
}

// SetCorrelationID makes id the correlation_id of the lines logged with the
// request's context from now on, the access log's included: a handler calls
// it when the request turns out to concern an order (POST /orders, with the
// ID of the order it placed).
func SetCorrelationID(c echo.Context, id string) {
	logctx.SetCorrelationID(c.Request().Context(), id)
}
