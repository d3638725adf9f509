package events

import (
	"encoding/json"

	"github.com/google/uuid"
)

// parseWire reads an envelope's fields from b. Most of a consumer's CPU went
// to encoding/json reading envelopes (it scans the whole text to validate
// it, then again to decode it by reflection), so the common form, the one
// MarshalJSON writes, is read here in one pass: an object of the contract's
// keys, each at most once, in any order, whose strings are printable ASCII
// without escapes and whose versions are plain integers; data, an object,
// is checked with json.Valid and copied. Anything else goes to
// encoding/json, so that every input still means what encoding/json makes
// of it (FuzzParseEnvelope compares the two on every input it tries;
// TestEnvelopesTakeTheCommonForm checks that what MarshalJSON writes is read
// here).
func parseWire(b []byte) (wireEnvelope, error) {
	if w, ok := parseCommon(b); ok {
		return w, nil
	}
	var w wireEnvelope
	err := json.Unmarshal(b, &w)
	return w, err
}

// parseCommon reads b if it is an envelope of the common form, and reports
// whether it was.
func parseCommon(b []byte) (w wireEnvelope, ok bool) {
	s := scanner{b: b}
	if !s.next('{') {
		return w, false
	}
	if !s.next('}') {
		var seen uint16
		for {
			key, ok := s.plainString()
			if !ok || !s.next(':') {
				return w, false
			}
			var bit uint16
			switch string(key) {
			case "event_id":
				bit, ok = 1<<0, s.uuid(&w.EventID)
			case "event_type":
				bit, ok = 1<<1, s.str(&w.EventType)
			case "schema_version":
				var n int64
				bit, ok = 1<<2, s.integer(&n)
				w.SchemaVersion = int(n)
			case "aggregate_type":
				bit, ok = 1<<3, s.str(&w.AggregateType)
			case "aggregate_id":
				bit, ok = 1<<4, s.uuid(&w.AggregateID)
			case "aggregate_version":
				bit, ok = 1<<5, s.integer(&w.AggregateVersion)
			case "occurred_at":
				bit, ok = 1<<6, s.str(&w.OccurredAt)
			case "correlation_id":
				bit, ok = 1<<7, s.uuid(&w.CorrelationID)
			case "causation_id":
				bit, ok = 1<<8, s.uuid(&w.CausationID)
			case "data":
				bit, ok = 1<<9, s.object(&w.Data)
			default:
				return w, false
			}
			if !ok || seen&bit != 0 {
				return w, false
			}
			seen |= bit
			if s.next(',') {
				continue
			}
			if s.next('}') {
				break
			}
			return w, false
		}
	}
	s.space()
	return w, s.i == len(s.b)
}

// scanner reads a JSON text from b[i:]. Each method reports false for
// what the common form does not hold, leaving it to encoding/json.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// next consumes c after any white space.
func (s *scanner) next(c byte) bool {
	s.space()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// plainString reads a string of printable ASCII without escapes, whose
// bytes are then its value.
func (s *scanner) plainString() ([]byte, bool) {
	if !s.next('"') {
		return nil, false
	}
	for j := s.i; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			v := s.b[s.i:j]
			s.i = j + 1
			return v, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return nil, false
		}
	}
	return nil, false
}

func (s *scanner) str(v *string) bool {
	b, ok := s.plainString()
	*v = string(b)
	return ok
}

// uuid reads a string as uuid.UUID's UnmarshalText does; a string it
// refuses is left to encoding/json, for its error.
func (s *scanner) uuid(v *uuid.UUID) bool {
	b, ok := s.plainString()
	if !ok {
		return false
	}
	id, err := uuid.ParseBytes(b)
	*v = id
	return err == nil
}

// integer reads an optional minus and 1-18 digits, without a leading zero
// (JSON has none), fraction or exponent: it cannot overflow an int64.
func (s *scanner) integer(v *int64) bool {
	s.space()
	neg := s.i < len(s.b) && s.b[s.i] == '-'
	if neg {
		s.i++
	}
	start := s.i
	var n int64
	for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
		n = n*10 + int64(s.b[s.i]-'0')
		s.i++
	}
	digits := s.i - start
	if digits == 0 || digits > 18 || (digits > 1 && s.b[start] == '0') {
		return false
	}
	if s.i < len(s.b) {
		switch s.b[s.i] {
		case '.', 'e', 'E':
			return false
		}
	}
	if neg {
		n = -n
	}
	*v = n
	return true
}

// object finds the end of the object at b[i:] by its brackets, outside
// strings, checks it with json.Valid, and copies it.
func (s *scanner) object(v *json.RawMessage) bool {
	s.space()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return false
	}
	start, depth := s.i, 0
	for ; s.i < len(s.b); s.i++ {
		switch s.b[s.i] {
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				s.i++
				raw := s.b[start:s.i]
				if !json.Valid(raw) {
					return false
				}
				*v = append(json.RawMessage(nil), raw...)
				return true
			}
		case '"':
			for s.i++; s.i < len(s.b) && s.b[s.i] != '"'; s.i++ {
				if s.b[s.i] == '\\' {
					s.i++
				}
			}
		}
	}
	return false
}
