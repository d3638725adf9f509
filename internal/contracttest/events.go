package contracttest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.yaml.in/yaml/v3"
)

// payloadFormat is the schemaFormat of every event payload of the
// document: its schema files are read as JSON Schema draft-07.
const payloadFormat = "application/schema+json;version=draft-07"

// Events validates Kafka records against an AsyncAPI 3.0 document: the
// record value against the payload schema of the message its event_type
// names, the headers and the key against the message's. It is safe for
// concurrent use.
type Events struct {
	path     string
	channels map[string]map[string]*message // address -> message name (= event type) -> message
}

type message struct {
	name                  string
	envelope              bool // the payload is an event's envelope
	headers, payload, key *jsonschema.Schema
}

// LoadAsyncAPI loads the AsyncAPI 3.0 document at path and compiles the
// schemas of the messages of its channels, with the files they refer to.
func LoadAsyncAPI(path string) (*Events, error) {
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var y any
	if err := yaml.Unmarshal(raw, &y); err != nil {
		return nil, pathError(path, err)
	}
	// As JSON, the form the schema compiler takes (numbers as json.Number).
	j, err := json.Marshal(y)
	if err != nil {
		return nil, pathError(path, err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		return nil, pathError(path, err)
	}
	root, _ := doc.(map[string]any)
	if v, _ := root["asyncapi"].(string); !strings.HasPrefix(v, "3.") {
		return nil, pathError(path, fmt.Errorf("asyncapi %q: this validator is for 3.x", v))
	}

	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	c.AssertFormat()
	if err := c.AddResource(path, doc); err != nil {
		return nil, pathError(path, err)
	}
	e := &Events{path: shortPath(path), channels: map[string]map[string]*message{}}
	channels, _ := root["channels"].(map[string]any)
	for id, ch := range channels {
		ch, _ := ch.(map[string]any)
		address, _ := ch["address"].(string)
		if address == "" {
			return nil, pathError(path, fmt.Errorf("channel %s has no address", id))
		}
		msgs, _ := ch["messages"].(map[string]any)
		e.channels[address] = map[string]*message{}
		for key, m := range msgs {
			ptr, m, err := resolve(root, "/channels/"+id+"/messages/"+key, m)
			if err != nil {
				return nil, pathError(path, err)
			}
			msg, err := compileMessage(c, path, ptr, m)
			if err != nil {
				return nil, pathError(path, fmt.Errorf("channel %s, message %s: %w", id, key, err))
			}
			e.channels[address][msg.name] = msg
		}
	}
	return e, nil
}

// resolve follows a local $ref, returning the JSON pointer of the object
// it ends at.
func resolve(root map[string]any, ptr string, v any) (string, map[string]any, error) {
	for range 10 {
		obj, ok := v.(map[string]any)
		if !ok {
			return "", nil, fmt.Errorf("%s is not an object", ptr)
		}
		ref, ok := obj["$ref"].(string)
		if !ok {
			return ptr, obj, nil
		}
		if !strings.HasPrefix(ref, "#/") {
			return "", nil, fmt.Errorf("%s: only local references are followed, not %s", ptr, ref)
		}
		ptr, v = ref[1:], any(root)
		for _, tok := range strings.Split(ref[2:], "/") {
			tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
			m, _ := v.(map[string]any)
			v = m[tok]
		}
	}
	return "", nil, fmt.Errorf("%s: references nest too deep", ptr)
}

func compileMessage(c *jsonschema.Compiler, path, ptr string, m map[string]any) (*message, error) {
	msg := &message{}
	msg.name, _ = m["name"].(string)
	if msg.name == "" {
		return nil, errors.New("no name (the event type it carries)")
	}
	// An event's payload is an envelope, its schema in docs/schemas with
	// a schemaFormat; another (a dead letter's) is an AsyncAPI schema.
	payloadAt := "/payload"
	payload, _ := m["payload"].(map[string]any)
	if f, ok := payload["schemaFormat"]; ok {
		if f != payloadFormat {
			return nil, fmt.Errorf("payload schemaFormat %q, want %q", f, payloadFormat)
		}
		msg.envelope, payloadAt = true, "/payload/schema"
	}
	compile := func(field, at string) (*jsonschema.Schema, error) {
		s, err := c.Compile(path + "#" + ptr + at)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return s, nil
	}
	var err error
	if msg.payload, err = compile("payload", payloadAt); err != nil {
		return nil, err
	}
	if msg.headers, err = compile("headers", "/headers"); err != nil {
		return nil, err
	}
	if msg.key, err = compile("Kafka key", "/bindings/kafka/key"); err != nil {
		return nil, err
	}
	return msg, nil
}

// Channels returns the addresses of the document's channels.
func (e *Events) Channels() []string {
	var out []string
	for a := range e.channels {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// Messages returns the names of the messages of a channel, the event types
// it carries.
func (e *Events) Messages(channel string) []string {
	var out []string
	for n := range e.channels[channel] {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// ValidateRecord returns what in r disagrees with the document's channel
// (its address, not r.Topic: tests may name topics otherwise), or nil.
//
// On a channel of events, the event type the value names must be a message
// of the channel; the value, the headers and the key must match that
// message's schemas; the key must be the envelope's aggregate_id, as must
// data.<aggregate_type>_id (data.order_id of an order's event), and the
// headers event_type and event_id must repeat the envelope's. On a channel
// of one other message (dead letters), the record must match it.
func (e *Events) ValidateRecord(channel string, r *kgo.Record) error {
	msgs, ok := e.channels[channel]
	if !ok {
		return fmt.Errorf("no channel %q in %s", channel, e.path)
	}
	if len(msgs) == 1 {
		for _, msg := range msgs {
			if !msg.envelope {
				return msg.validateOther(r)
			}
		}
	}
	value, err := jsonschema.UnmarshalJSON(bytes.NewReader(r.Value))
	if err != nil {
		return fmt.Errorf("value is not JSON: %v", err)
	}
	env, _ := value.(map[string]any)
	eventType, _ := env["event_type"].(string)
	msg, ok := msgs[eventType]
	if !ok || !msg.envelope {
		return fmt.Errorf("event type %q is not a message of channel %s in %s", eventType, channel, e.path)
	}
	errs := []error{msg.validate("value", value)}
	headers, err := headerMap(r)
	errs = append(errs, err, msg.validateHeadersAndKey(headers, r.Key))
	for _, f := range []string{"event_type", "event_id"} {
		if h, ok := headers[f]; ok && h != env[f] {
			errs = append(errs, fmt.Errorf("header %s is %q, the envelope's %q", f, h, env[f]))
		}
	}
	if string(r.Key) != env["aggregate_id"] {
		errs = append(errs, fmt.Errorf("key %q is not the aggregate_id %q", r.Key, env["aggregate_id"]))
	}
	aggType, _ := env["aggregate_type"].(string)
	if data, ok := env["data"].(map[string]any); ok && aggType != "" && data[aggType+"_id"] != env["aggregate_id"] {
		errs = append(errs, fmt.Errorf("data.%s_id %v is not the aggregate_id %v", aggType, data[aggType+"_id"], env["aggregate_id"]))
	}
	return errors.Join(errs...)
}

// validateOther validates a record whose value need not be JSON.
func (m *message) validateOther(r *kgo.Record) error {
	var errs []error
	if value, err := jsonschema.UnmarshalJSON(bytes.NewReader(r.Value)); err == nil {
		errs = append(errs, m.validate("value", value))
	}
	headers, err := headerMap(r)
	errs = append(errs, err, m.validateHeadersAndKey(headers, r.Key))
	return errors.Join(errs...)
}

func (m *message) validate(what string, v any) error {
	if err := m.payload.Validate(v); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func (m *message) validateHeadersAndKey(headers map[string]any, key []byte) error {
	var errs []error
	if err := m.headers.Validate(headers); err != nil {
		errs = append(errs, fmt.Errorf("headers: %w", err))
	}
	if err := m.key.Validate(string(key)); err != nil {
		errs = append(errs, fmt.Errorf("key: %w", err))
	}
	return errors.Join(errs...)
}

// headerMap returns the headers as an object of name to value.
func headerMap(r *kgo.Record) (map[string]any, error) {
	out := map[string]any{}
	var errs []error
	for _, h := range r.Headers {
		if _, dup := out[h.Key]; dup {
			errs = append(errs, fmt.Errorf("header %s is given more than once", h.Key))
		}
		out[h.Key] = string(h.Value)
	}
	return out, errors.Join(errs...)
}
