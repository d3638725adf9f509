// Package sagalog renders the events on the topics for people: one line per
// event, and the story of each saga (the events that share its
// correlation_id) as it unfolds. The topic watcher and the demo print with it.
package sagalog

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/pkg/events"
)

// Line renders one event: when, where, what, and its fields.
func Line(topic string, env events.Envelope) string {
	var data map[string]any
	_ = json.Unmarshal(env.Data, &data)
	var fields []string
	for k, v := range data {
		if s, ok := v.(string); ok && (s == env.AggregateID.String() || s == env.CorrelationID.String()) {
			continue // said already
		}
		if k == "items" {
			if items, ok := v.([]any); ok {
				fields = append(fields, fmt.Sprintf("items=%d", len(items)))
				continue
			}
		}
		fields = append(fields, fmt.Sprintf("%s=%v", k, short(v)))
	}
	slices.Sort(fields)
	return fmt.Sprintf("%s  saga %s  %-16s %-24s %s %s v%d  %s",
		env.OccurredAt.Local().Format("15:04:05.000"), shortID(env.CorrelationID), topic, env.EventType,
		env.AggregateType, shortID(env.AggregateID), env.AggregateVersion, strings.Join(fields, " "))
}

func short(v any) any {
	if s, ok := v.(string); ok {
		if id, err := uuid.Parse(s); err == nil {
			return shortID(id)
		}
	}
	return v
}

// shortID is the last 8 hex digits of an ID: the distinct part of a UUIDv7.
func shortID(id uuid.UUID) string { s := id.String(); return s[len(s)-8:] }

// Outcome is how an order's saga ended, from its events: APPROVED, REJECTED
// (with the reason) or CANCELLED; "" while it is undecided.
func Outcome(env events.Envelope) string {
	var data struct {
		Reason string `json:"reason"`
	}
	switch env.EventType {
	case "OrderApproved":
		return "APPROVED"
	case "OrderRejected":
		_ = json.Unmarshal(env.Data, &data)
		return "REJECTED (" + data.Reason + ")"
	case "OrderCancelled":
		return "CANCELLED"
	}
	return ""
}

// Sagas groups events by correlation ID and writes a saga's story each time
// it reaches an outcome.
type Sagas struct {
	mu    sync.Mutex
	out   io.Writer
	sagas map[uuid.UUID]*saga
}

type saga struct {
	first time.Time
	steps []string
}

// NewSagas writes stories to out.
func NewSagas(out io.Writer) *Sagas { return &Sagas{out: out, sagas: map[uuid.UUID]*saga{}} }

// Add records an event, and if it decides its saga, writes the saga's story.
func (s *Sagas) Add(env events.Envelope) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.sagas[env.CorrelationID]
	if g == nil {
		g = &saga{first: env.OccurredAt}
		s.sagas[env.CorrelationID] = g
	}
	g.steps = append(g.steps, env.EventType)
	if o := Outcome(env); o != "" {
		fmt.Fprintf(s.out, "saga %s: %s after %v: %s\n", shortID(env.CorrelationID), o,
			env.OccurredAt.Sub(g.first).Round(time.Millisecond), strings.Join(g.steps, " -> "))
		// Told: forget it (a later cancellation tells a story of its own).
		delete(s.sagas, env.CorrelationID)
	}
	if len(s.sagas) > maxOpen {
		s.sagas = map[uuid.UUID]*saga{} // events that decide nothing must not pile up forever
	}
}

// maxOpen bounds the undecided sagas remembered.
const maxOpen = 100_000
