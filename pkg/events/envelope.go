// Package events defines what travels between the services: the JSON envelope
// every event is wrapped in (on Kafka and in the event stores), the registry
// that maps an event type and schema version to a Go type, the upcasters that
// lift an event stored at an old schema version to the current one on read,
// and Money, the amount type that never passes through a float.
//
// Stored events are never rewritten: an old event keeps the schema_version it
// was written with, and the registry upgrades its data each time it is read.
package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Record header names set on every Kafka record that carries an envelope.
const (
	HeaderEventType   = "event_type"
	HeaderEventID     = "event_id"
	HeaderTraceParent = "traceparent"
)

// timeLayout is the envelope's occurred_at: UTC with exactly six fractional
// digits, which is also Postgres' timestamptz precision, so a time survives a
// round trip through the store unchanged.
const timeLayout = "2006-01-02T15:04:05.000000Z07:00"

// Envelope is the JSON object every event travels in. Data holds the
// event's fields as they were written at SchemaVersion; use a Registry to
// decode it into the current Go type.
type Envelope struct {
	EventID          uuid.UUID
	EventType        string
	SchemaVersion    int
	AggregateType    string
	AggregateID      uuid.UUID
	AggregateVersion int64
	OccurredAt       time.Time
	CorrelationID    uuid.UUID
	CausationID      uuid.UUID
	Data             json.RawMessage
}

// wireEnvelope fixes the JSON field order and names of the contract.
type wireEnvelope struct {
	EventID          uuid.UUID       `json:"event_id"`
	EventType        string          `json:"event_type"`
	SchemaVersion    int             `json:"schema_version"`
	AggregateType    string          `json:"aggregate_type"`
	AggregateID      uuid.UUID       `json:"aggregate_id"`
	AggregateVersion int64           `json:"aggregate_version"`
	OccurredAt       string          `json:"occurred_at"`
	CorrelationID    uuid.UUID       `json:"correlation_id"`
	CausationID      uuid.UUID       `json:"causation_id"`
	Data             json.RawMessage `json:"data"`
}

// FormatTime renders t as the envelope does: UTC, microseconds.
func FormatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// MarshalJSON renders the envelope of the contract.
func (e Envelope) MarshalJSON() ([]byte, error) {
	data := e.Data
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	return json.Marshal(wireEnvelope{
		EventID:          e.EventID,
		EventType:        e.EventType,
		SchemaVersion:    e.SchemaVersion,
		AggregateType:    e.AggregateType,
		AggregateID:      e.AggregateID,
		AggregateVersion: e.AggregateVersion,
		OccurredAt:       FormatTime(e.OccurredAt),
		CorrelationID:    e.CorrelationID,
		CausationID:      e.CausationID,
		Data:             data,
	})
}

// UnmarshalJSON parses an envelope without validating it; see ParseEnvelope.
func (e *Envelope) UnmarshalJSON(b []byte) error {
	w, err := parseWire(b)
	if err != nil {
		return err
	}
	t, err := time.Parse(time.RFC3339Nano, w.OccurredAt)
	if err != nil && w.OccurredAt != "" {
		return fmt.Errorf("occurred_at: %w", err)
	}
	*e = Envelope{
		EventID:          w.EventID,
		EventType:        w.EventType,
		SchemaVersion:    w.SchemaVersion,
		AggregateType:    w.AggregateType,
		AggregateID:      w.AggregateID,
		AggregateVersion: w.AggregateVersion,
		OccurredAt:       t,
		CorrelationID:    w.CorrelationID,
		CausationID:      w.CausationID,
		Data:             w.Data,
	}
	return nil
}

// occurred_at is refused outside [minOccurredAt, maxOccurredAt): an offset
// can move a time RFC 3339 allows beyond the four-digit years in UTC, or the
// microseconds can drop a time to the zero time, and FormatTime would then
// render it as text that ParseEnvelope refuses.
var (
	minOccurredAt = time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC)
	maxOccurredAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
)

// ErrMalformed is wrapped by every error ParseEnvelope returns.
var ErrMalformed = errors.New("malformed envelope")

// ParseEnvelope decodes and validates an envelope from a record value. A
// consumer sends what this refuses to its dead-letter topic.
func ParseEnvelope(b []byte) (Envelope, error) {
	var e Envelope
	// Called directly: json.Unmarshal(b, &e) would scan b once more to
	// validate it before handing it to UnmarshalJSON, which validates it
	// again (a consumer's CPU goes largely to scanning JSON).
	if err := e.UnmarshalJSON(b); err != nil {
		return Envelope{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var problems []string
	if e.EventID == uuid.Nil {
		problems = append(problems, "event_id missing")
	}
	if e.EventType == "" {
		problems = append(problems, "event_type missing")
	}
	if e.SchemaVersion < 1 {
		problems = append(problems, "schema_version below 1")
	}
	if e.AggregateID == uuid.Nil {
		problems = append(problems, "aggregate_id missing")
	}
	if e.AggregateVersion < 1 {
		problems = append(problems, "aggregate_version below 1")
	}
	switch {
	case e.OccurredAt.IsZero():
		problems = append(problems, "occurred_at missing")
	case e.OccurredAt.Before(minOccurredAt) || !e.OccurredAt.Before(maxOccurredAt):
		problems = append(problems, "occurred_at out of range")
	}
	if d := bytes.TrimSpace(e.Data); len(d) == 0 || d[0] != '{' {
		problems = append(problems, "data is not an object")
	}
	if len(problems) > 0 {
		return Envelope{}, fmt.Errorf("%w: %v", ErrMalformed, problems)
	}
	return e, nil
}
