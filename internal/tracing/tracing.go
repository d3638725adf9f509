// Package tracing is the services' OpenTelemetry tracing: a TracerProvider
// that exports spans with OTLP when the standard OTEL_EXPORTER_OTLP_ENDPOINT
// is set, and the W3C trace context carried where instrumentation libraries
// do not reach: from a command to its outbox rows, and from a consumed event
// to the events its decision appends.
//
// A nil TracerProvider means tracing is off. Nothing then makes a span, and
// what a service carries on is the traceparent it was given (a client's, or
// a record's), so a caller's trace ID still reaches the logs and the events.
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.39.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Name is the instrumentation scope of the spans the project makes itself.
const Name = "github.com/eventsaga/eventsaga"

// Propagator is the W3C trace context, the only one the services read and
// write (on HTTP requests and on Kafka records alike).
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// New returns the provider of a service named service as the environment
// configures it, and the function that flushes and stops it (within five
// seconds: a collector that does not answer must not hold up a shutdown).
// It is nil,
// tracing off, unless OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; OTEL_SDK_DISABLED=true and
// OTEL_TRACES_EXPORTER=none turn it off too. Spans go over OTLP/HTTP
// (protobuf); the exporter, the batch processor and the sampler read the
// rest of the standard OTEL_* variables themselves (OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES override the resource).
func New(ctx context.Context, service string, getenv func(string) string) (trace.TracerProvider, func() error, error) {
	off := func() error { return nil }
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return nil, off, nil
	}
	switch e := getenv("OTEL_TRACES_EXPORTER"); e {
	case "", "otlp":
	case "none":
		return nil, off, nil
	default:
		return nil, nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: only otlp (the default) and none are supported", e)
	}
	if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return nil, off, nil
	}
	protocol := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	if protocol != "" && protocol != "http/protobuf" {
		return nil, nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%s: only http/protobuf is supported (the OTLP/HTTP port, 4318 by default)", protocol)
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("OTLP exporter: %w", err)
	}
	res, err := Resource(ctx, service)
	if err != nil {
		return nil, nil, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	stop := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return tp.Shutdown(ctx)
	}
	return tp, stop, nil
}

// Start is New for a service's main: it logs whether spans are exported,
// and its stop function logs a failure to export the last ones.
func Start(ctx context.Context, service string, getenv func(string) string, log *slog.Logger) (trace.TracerProvider, func(), error) {
	tp, stop, err := New(ctx, service, getenv)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: %w", err)
	}
	if tp != nil {
		log.Info("tracing: spans exported over OTLP")
	}
	return tp, func() {
		if err := stop(); err != nil {
			log.Warn("tracing: the last spans were not exported", "err", err)
		}
	}, nil
}

// Resource describes the service named service, with what
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES say over it.
func Resource(ctx context.Context, service string) (*resource.Resource, error) {
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(service)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	return res, nil
}

// Tracer returns the project's tracer of tp; one that makes no span when tp
// is nil.
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return noop.Tracer{}
	}
	return tp.Tracer(Name)
}

// TraceParent returns the W3C traceparent of ctx's span (or remote span
// context), or "" when ctx has none.
func TraceParent(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
}

// Context returns ctx carrying traceparent as its remote span context, the
// parent of the spans started from it; ctx itself when traceparent is not a
// valid one.
func Context(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return Propagator.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}

// SpanContext returns the span context traceparent names; an invalid one
// when it names none.
func SpanContext(traceparent string) trace.SpanContext {
	return trace.SpanContextFromContext(Context(context.Background(), traceparent))
}

// Carried is the traceparent to carry on what a command in ctx writes: that
// of its own span when tracing records it, else given, the one the command
// was handed.
func Carried(ctx context.Context, given string) string {
	if trace.SpanFromContext(ctx).IsRecording() {
		return TraceParent(ctx)
	}
	return given
}

// CorrelationID is the attribute naming the saga a span belongs to (the
// order's ID), by which Jaeger finds a saga's spans.
func CorrelationID(id uuid.UUID) attribute.KeyValue {
	return attribute.String("eventsaga.correlation_id", id.String())
}

// End ends span, marking it failed when err is not nil.
func End(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
