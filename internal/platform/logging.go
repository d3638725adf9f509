package platform

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/eventsaga/eventsaga/internal/logctx"
)

// Logging is how a service logs: LOG_FORMAT and LOG_LEVEL.
type Logging struct {
	// Format is "text" (slog's key=value lines, the default) or "json"
	// (one JSON object a line).
	Format string
	// Level is the least level logged: debug, info (the default), warn or
	// error.
	Level slog.Level
}

// LoadLogging reads LOG_FORMAT and LOG_LEVEL from getenv. An unset or blank
// variable takes its default (text, info); any other value than those
// documented is an error naming the variable.
func LoadLogging(getenv func(string) string) (Logging, error) {
	l := Logging{Format: "text", Level: slog.LevelInfo}
	switch v := strings.ToLower(strings.TrimSpace(getenv("LOG_FORMAT"))); v {
	case "", "text":
	case "json":
		l.Format = v
	default:
		return l, fmt.Errorf("LOG_FORMAT: %q is neither text nor json", getenv("LOG_FORMAT"))
	}
	switch v := strings.ToLower(strings.TrimSpace(getenv("LOG_LEVEL"))); v {
	case "", "info":
	case "debug":
		l.Level = slog.LevelDebug
	case "warn":
		l.Level = slog.LevelWarn
	case "error":
		l.Level = slog.LevelError
	default:
		return l, fmt.Errorf("LOG_LEVEL: %q is not one of debug, info, warn, error", getenv("LOG_LEVEL"))
	}
	return l, nil
}

// NewLogger returns a logger writing to w as l says. Its lines written with
// a context (InfoContext and the like) carry the trace_id and
// correlation_id the context holds (package logctx): those of a request
// (httpapi) and of an event being applied (outbox.Consumer).
func NewLogger(w io.Writer, l Logging) *slog.Logger {
	opts := &slog.HandlerOptions{Level: l.Level}
	var h slog.Handler
	if l.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(logctx.NewHandler(h))
}

// Logger is the logger of a service's main: it reads LOG_FORMAT and
// LOG_LEVEL from getenv and writes to w. With a bad value it returns the
// default logger (text, info), to report the error with, and the error.
func Logger(getenv func(string) string, w io.Writer) (*slog.Logger, error) {
	l, err := LoadLogging(getenv)
	if err != nil {
		return NewLogger(w, Logging{Format: "text", Level: slog.LevelInfo}), fmt.Errorf("configuration: %w", err)
	}
	return NewLogger(w, l), nil
}
