package platform

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/eventsaga/eventsaga/internal/logctx"
)

func TestLoadLogging(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	for _, c := range []struct {
		format, level string
		want          Logging
	}{
		{"", "", Logging{"text", slog.LevelInfo}},
		{" ", " ", Logging{"text", slog.LevelInfo}},
		{"text", "info", Logging{"text", slog.LevelInfo}},
		{"json", "debug", Logging{"json", slog.LevelDebug}},
		{"JSON", "WARN", Logging{"json", slog.LevelWarn}},
		{" json ", "error", Logging{"json", slog.LevelError}},
	} {
		got, err := LoadLogging(env(map[string]string{"LOG_FORMAT": c.format, "LOG_LEVEL": c.level}))
		if err != nil || got != c.want {
			t.Errorf("LOG_FORMAT=%q LOG_LEVEL=%q: %+v, %v; want %+v", c.format, c.level, got, err, c.want)
		}
	}
	for _, c := range []struct{ key, value string }{
		{"LOG_FORMAT", "logfmt"}, {"LOG_FORMAT", "yaml"}, {"LOG_FORMAT", "1"},
		{"LOG_LEVEL", "verbose"}, {"LOG_LEVEL", "warning"}, {"LOG_LEVEL", "-4"}, {"LOG_LEVEL", "trace"},
	} {
		_, err := LoadLogging(env(map[string]string{c.key: c.value}))
		if err == nil || !strings.Contains(err.Error(), c.key) || !strings.Contains(err.Error(), c.value) {
			t.Errorf("%s=%q: %v; want an error naming the variable and the value", c.key, c.value, err)
		}
		// Load refuses it as any other bad configuration.
		d := Defaults{DatabaseURL: "postgres://u@db/orders", HTTPAddr: ":8080", ConsumerGroup: "g"}
		if _, err := Load(env(map[string]string{c.key: c.value}), d); err == nil || !strings.Contains(err.Error(), c.key) {
			t.Errorf("Load with %s=%q: %v; want an error naming the variable", c.key, c.value, err)
		}
		// Logger reports it, with a logger to report it with.
		var buf bytes.Buffer
		log, err := Logger(env(map[string]string{c.key: c.value}), &buf)
		if err == nil || log == nil {
			t.Errorf("Logger with %s=%q: %v, %v", c.key, c.value, log, err)
		}
	}
	cfg, err := Load(env(map[string]string{"LOG_FORMAT": "json", "LOG_LEVEL": "debug"}), Defaults{DatabaseURL: "postgres://u@db/orders", HTTPAddr: ":8080", ConsumerGroup: "g"})
	if err != nil || cfg.Logging != (Logging{"json", slog.LevelDebug}) {
		t.Errorf("Load: %+v, %v", cfg.Logging, err)
	}
}

// The logger writes the format and from the level it is told, and the lines
// logged with a context carry its trace and correlation IDs.
func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, Logging{Format: "json", Level: slog.LevelWarn}).With("service", "order")
	ctx := logctx.With(context.Background(), "4bf92f3577b34da6a3ce929d0e0e4736", "0190f5a0-1c2d-7e3f-8a4b-3c4d5e6f7a8b")
	log.InfoContext(ctx, "not logged")
	log.WarnContext(ctx, "logged", "n", 1)
	log.Warn("no context")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", lines)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("%v: %s", err, lines[0])
	}
	if m["msg"] != "logged" || m["service"] != "order" || m["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" ||
		m["correlation_id"] != "0190f5a0-1c2d-7e3f-8a4b-3c4d5e6f7a8b" || m["n"] != float64(1) {
		t.Errorf("line: %v", m)
	}
	if strings.Contains(lines[1], "trace_id") {
		t.Errorf("a line without a context has a trace_id: %s", lines[1])
	}

	buf.Reset()
	NewLogger(&buf, Logging{Format: "text", Level: slog.LevelDebug}).DebugContext(ctx, "text")
	if got := buf.String(); !strings.Contains(got, "level=DEBUG msg=text trace_id=4bf92f3577b34da6a3ce929d0e0e4736 correlation_id=0190f5a0-") {
		t.Errorf("text line: %s", got)
	}
}
