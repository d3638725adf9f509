package logctx

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

func TestTraceIDFromParent(t *testing.T) {
	const id = "4bf92f3577b34da6a3ce929d0e0e4736"
	for tp, want := range map[string]string{
		"00-" + id + "-00f067aa0ba902b7-01": id,
		"00-" + id + "-00f067aa0ba902b7-00": id,
		"":                                  "",
		"01-" + id + "-00f067aa0ba902b7-01": "",
		"00-" + strings.ToUpper(id) + "-00f067aa0ba902b7-01":      "",
		"00-" + id + "-00f067aa0ba902b7-01-extra":                 "",
		"00-" + id + "-00f067aa0ba902b-01":                        "",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01": "",
		"00_" + id + "-00f067aa0ba902b7-01":                       "",
		"00-" + id[:31] + "g-00f067aa0ba902b7-01":                 "",
	} {
		if got := TraceIDFromParent(tp); got != want {
			t.Errorf("TraceIDFromParent(%q) = %q, want %q", tp, got, want)
		}
	}
	a, b := NewTraceID(), NewTraceID()
	if TraceIDFromParent("00-"+a+"-00f067aa0ba902b7-01") != a || a == b {
		t.Errorf("NewTraceID: %q, %q", a, b)
	}
}

func TestHandlerAddsTheContextsIDs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewHandler(slog.NewTextHandler(&buf, nil))).With("service", "order")
	ctx := With(context.Background(), "t1", "", slog.Int("batch_records", 2))
	log.InfoContext(ctx, "before")
	if !SetCorrelationID(ctx, "c1") || CorrelationID(ctx) != "c1" || TraceID(ctx) != "t1" {
		t.Fatal("SetCorrelationID did not take")
	}
	log.InfoContext(context.WithoutCancel(ctx), "after") // a derived context carries them too
	log.Info("none")
	if SetCorrelationID(context.Background(), "x") {
		t.Error("SetCorrelationID on an empty context reported success")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	for i, want := range []string{
		`msg=before service=order trace_id=t1 batch_records=2`,
		`msg=after service=order trace_id=t1 correlation_id=c1 batch_records=2`,
		`msg=none service=order`,
	} {
		if i >= len(lines) || !strings.HasSuffix(lines[i], want) {
			t.Errorf("line %d: %q, want it to end %q", i, lines, want)
		}
	}
}
