package tracing

import (
	"context"
	"strings"
	"testing"
)

// The OTEL_* variables turn tracing on only with an endpoint, refuse what
// the services cannot do, and say so.
func TestNewReadsTheEnvironment(t *testing.T) {
	for _, c := range []struct {
		env     map[string]string
		on      bool
		wantErr string
	}{
		{env: nil},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"}},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, wantErr: "only http/protobuf"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "zipkin"}, wantErr: "only otlp"},
	} {
		tp, stop, err := New(context.Background(), "order", func(k string) string { return c.env[k] })
		switch {
		case c.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%v: error %v; want one saying %q", c.env, err, c.wantErr)
			}
			continue
		case err != nil:
			t.Errorf("%v: %v", c.env, err)
			continue
		}
		if on := tp != nil; on != c.on {
			t.Errorf("%v: tracing on %v; want %v", c.env, on, c.on)
		}
		if err := stop(); err != nil {
			t.Errorf("%v: stop: %v", c.env, err)
		}
	}
}

// Off, a command carries on the traceparent it was given; a context
// carrying a traceparent gives it back as it was.
func TestTraceParentRoundTrip(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := Context(context.Background(), tp)
	if got := TraceParent(ctx); got != tp {
		t.Errorf("TraceParent(Context(%q)) = %q", tp, got)
	}
	ctx, span := Tracer(nil).Start(ctx, "command")
	defer span.End()
	if got := Carried(ctx, tp); got != tp {
		t.Errorf("with tracing off, Carried = %q; want the given %q", got, tp)
	}
	for _, bad := range []string{"", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"} {
		if got := TraceParent(Context(context.Background(), bad)); got != "" {
			t.Errorf("TraceParent(Context(%q)) = %q; want none", bad, got)
		}
	}
}
