// Package logctx carries the identifiers of the work in hand (a request, an
// event being applied) in a context, and adds them to every log line written
// with that context: a logger whose handler is wrapped by NewHandler adds
// trace_id and correlation_id (and any further attributes given to With) to
// the lines of logger.InfoContext(ctx, ...) and the other *Context methods.
// Lines logged without a context, or with one that carries nothing, are left
// as they are.
package logctx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"
)

// Keys of the attributes added to log lines.
const (
	TraceIDKey       = "trace_id"
	CorrelationIDKey = "correlation_id"
)

type fieldsKey struct{}

// fields are what a context carries. The correlation ID of a request is
// known only once its handler has read it (an order placed, a path
// parameter), after the context was made: it is set in place, under mu.
type fields struct {
	traceID string
	attrs   []slog.Attr

	mu            sync.Mutex
	correlationID string
}

func (f *fields) correlation() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.correlationID
}

// With returns ctx carrying traceID and correlationID (either may be empty)
// and attrs, for the log lines written with it and with contexts derived
// from it. It replaces what ctx carried.
func With(ctx context.Context, traceID, correlationID string, attrs ...slog.Attr) context.Context {
	return context.WithValue(ctx, fieldsKey{}, &fields{traceID: traceID, correlationID: correlationID, attrs: attrs})
}

// SetCorrelationID sets the correlation ID of what ctx carries (see With),
// for the lines logged with ctx from now on. It reports false, and does
// nothing, when ctx carries nothing.
func SetCorrelationID(ctx context.Context, id string) bool {
	f, ok := ctx.Value(fieldsKey{}).(*fields)
	if !ok {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.correlationID = id
	return true
}

// TraceID is the trace ID ctx carries, or "".
func TraceID(ctx context.Context) string {
	if f, ok := ctx.Value(fieldsKey{}).(*fields); ok {
		return f.traceID
	}
	return ""
}

// CorrelationID is the correlation ID ctx carries, or "".
func CorrelationID(ctx context.Context) string {
	if f, ok := ctx.Value(fieldsKey{}).(*fields); ok {
		return f.correlation()
	}
	return ""
}

// TraceIDFromParent returns the trace ID (32 lowercase hex digits) of a W3C
// traceparent header of version 00, or "" if tp is not one or its trace ID
// is all zeros (invalid).
func TraceIDFromParent(tp string) string {
	// 00-<trace-id 32>-<parent-id 16>-<flags 2>
	if len(tp) != 55 || tp[0] != '0' || tp[1] != '0' || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return ""
	}
	if !lowerHex(tp[3:35]) || !lowerHex(tp[36:52]) || !lowerHex(tp[53:]) {
		return ""
	}
	id := tp[3:35]
	if id == "00000000000000000000000000000000" {
		return ""
	}
	return id
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// NewTraceID returns a random trace ID of the W3C form: 32 hex digits.
func NewTraceID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b[:])
}

// NewHandler wraps h: a record logged with a context that carries fields
// (With) gets trace_id and correlation_id, where set, and the context's
// further attributes.
func NewHandler(h slog.Handler) slog.Handler {
	if c, ok := h.(handler); ok {
		return c // wrapped already
	}
	return handler{h}
}

type handler struct{ inner slog.Handler }

func (h handler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h handler) Handle(ctx context.Context, r slog.Record) error {
	if f, ok := ctx.Value(fieldsKey{}).(*fields); ok {
		if f.traceID != "" {
			r.AddAttrs(slog.String(TraceIDKey, f.traceID))
		}
		if id := f.correlation(); id != "" {
			r.AddAttrs(slog.String(CorrelationIDKey, id))
		}
		r.AddAttrs(f.attrs...)
	}
	return h.inner.Handle(ctx, r)
}

func (h handler) WithAttrs(as []slog.Attr) slog.Handler { return handler{h.inner.WithAttrs(as)} }
func (h handler) WithGroup(name string) slog.Handler    { return handler{h.inner.WithGroup(name)} }
