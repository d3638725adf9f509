package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// Event is the payload of an envelope: a struct holding one event's fields at
// the current schema version.
type Event interface {
	EventType() string
}

// Upcaster lifts an event's data from one schema version to the next.
type Upcaster func(data json.RawMessage) (json.RawMessage, error)

// Errors a Registry returns; consumers branch on them to decide between
// ignoring an event, retrying and dead-lettering it.
var (
	ErrUnknownEventType   = errors.New("unknown event type")
	ErrUnsupportedVersion = errors.New("unsupported schema version")
)

// Registry maps event types to Go types and schema versions, and upgrades
// data written at an older schema version to the current one on read.
// Register everything before use; after that a Registry is safe for
// concurrent reads.
type Registry struct {
	types map[string]*registered
}

type registered struct {
	goType    reflect.Type
	version   int
	decode    func(json.RawMessage) (Event, error)
	upcasters map[int]Upcaster // keyed by the version they lift from
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{types: make(map[string]*registered)}
}

// Register records T, at schemaVersion, as the current form of the event type
// T's EventType names. Register upcasters for every older version with
// AddUpcaster.
func Register[T Event](r *Registry, schemaVersion int) error {
	var zero T
	name := zero.EventType()
	if schemaVersion < 1 {
		return fmt.Errorf("register %s: schema version %d below 1", name, schemaVersion)
	}
	if _, dup := r.types[name]; dup {
		return fmt.Errorf("register %s: already registered", name)
	}
	r.types[name] = &registered{
		goType:  reflect.TypeOf(zero),
		version: schemaVersion,
		decode: func(data json.RawMessage) (Event, error) {
			var v T
			if err := json.Unmarshal(data, &v); err != nil {
				return nil, err
			}
			return v, nil
		},
		upcasters: make(map[int]Upcaster),
	}
	return nil
}

// AddUpcaster registers up to lift eventType's data from schema version from
// to from+1.
func (r *Registry) AddUpcaster(eventType string, from int, up Upcaster) error {
	t, ok := r.types[eventType]
	if !ok {
		return fmt.Errorf("upcaster for %s: %w", eventType, ErrUnknownEventType)
	}
	if from < 1 || from >= t.version {
		return fmt.Errorf("upcaster for %s from v%d: current version is v%d", eventType, from, t.version)
	}
	if _, dup := t.upcasters[from]; dup {
		return fmt.Errorf("upcaster for %s from v%d: already registered", eventType, from)
	}
	t.upcasters[from] = up
	return nil
}

// Encode returns the type name, current schema version and JSON data of e.
func (r *Registry) Encode(e Event) (eventType string, version int, data json.RawMessage, err error) {
	eventType = e.EventType()
	t, ok := r.types[eventType]
	if !ok {
		return "", 0, nil, fmt.Errorf("encode %s: %w", eventType, ErrUnknownEventType)
	}
	if got := reflect.TypeOf(e); got != t.goType {
		return "", 0, nil, fmt.Errorf("encode %s: registered as %v, got %v", eventType, t.goType, got)
	}
	if data, err = json.Marshal(e); err != nil {
		return "", 0, nil, fmt.Errorf("encode %s: %w", eventType, err)
	}
	return eventType, t.version, data, nil
}

// Upcast lifts data written at version to the current version of eventType.
func (r *Registry) Upcast(eventType string, version int, data json.RawMessage) (json.RawMessage, int, error) {
	t, ok := r.types[eventType]
	if !ok {
		return nil, 0, fmt.Errorf("%w %q", ErrUnknownEventType, eventType)
	}
	if version < 1 || version > t.version {
		return nil, 0, fmt.Errorf("%s v%d (current v%d): %w", eventType, version, t.version, ErrUnsupportedVersion)
	}
	for v := version; v < t.version; v++ {
		up, ok := t.upcasters[v]
		if !ok {
			return nil, 0, fmt.Errorf("%s v%d: no upcaster to v%d: %w", eventType, v, v+1, ErrUnsupportedVersion)
		}
		var err error
		if data, err = up(data); err != nil {
			return nil, 0, fmt.Errorf("upcast %s v%d to v%d: %w", eventType, v, v+1, err)
		}
	}
	return data, t.version, nil
}

// Decode returns the envelope's data as the current Go type of its event,
// upcasting data written at an older schema version.
func (r *Registry) Decode(env Envelope) (Event, error) {
	data, _, err := r.Upcast(env.EventType, env.SchemaVersion, env.Data)
	if err != nil {
		return nil, err
	}
	e, err := r.types[env.EventType].decode(data)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", env.EventType, err)
	}
	return e, nil
}
