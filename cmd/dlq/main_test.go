package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/testenv"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/outbox"
)

// cluster is a source topic of 3 partitions and a dead-letter topic holding,
// as a consumer writes them, an event from partition 0 of the source at 0:0
// (its key hashes to partition 2: a replay must go where the record was,
// whatever its key), and a value that is no event at 0:1.
type cluster struct {
	kafka          *testenv.Kafka
	source, dlq    string
	group          string
	event          events.Envelope
	key, value     []byte
	eventHeaders   []kgo.RecordHeader
	sourcePosition outbox.Location
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	k := testenv.NewKafka(t)
	c := &cluster{kafka: k, source: k.Topic("things.events"), dlq: k.Topic("dlq.cmd-test")}
	c.group = strings.TrimPrefix(c.dlq, "dlq.")
	k.CreateTopics(t, 3, c.source)
	k.CreateTopics(t, 1, c.dlq)

	agg := uuid.MustParse("0191b2c3-4444-7aaa-8bbb-123456789abc") // murmur2: partition 2 of 3
	c.event = events.Envelope{
		EventID: uuid.New(), EventType: "ThingHappened", SchemaVersion: 1, AggregateType: "thing", AggregateID: agg,
		AggregateVersion: 4, OccurredAt: time.Now().UTC().Truncate(time.Microsecond), CorrelationID: agg, CausationID: agg,
		Data: json.RawMessage(`{"colour":"red"}`),
	}
	var err error
	if c.value, err = json.Marshal(c.event); err != nil {
		t.Fatal(err)
	}
	c.key = []byte(agg.String())
	c.eventHeaders = []kgo.RecordHeader{{Key: events.HeaderEventType, Value: []byte("ThingHappened")}, {Key: events.HeaderEventID, Value: []byte(c.event.EventID.String())}}
	c.sourcePosition = outbox.Location{Topic: c.source, Partition: 0, Offset: 0}

	dlqHeaders := func(src string) []kgo.RecordHeader {
		return []kgo.RecordHeader{
			{Key: outbox.HeaderError, Value: []byte("handler: cannot handle this yet")},
			{Key: outbox.HeaderDLQSource, Value: []byte(src)},
			{Key: outbox.HeaderDLQGroup, Value: []byte(c.group)},
		}
	}
	cl := k.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	err = cl.ProduceSync(context.Background(),
		&kgo.Record{Topic: c.dlq, Key: c.key, Value: c.value, Headers: append(append([]kgo.RecordHeader(nil), c.eventHeaders...), dlqHeaders(c.sourcePosition.String())...)},
		&kgo.Record{Topic: c.dlq, Key: c.key, Value: []byte("this is not JSON"), Headers: dlqHeaders(c.source + "/1@5")},
	).FirstErr()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// run runs the command and returns what it printed.
func (c *cluster) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), append(args, "-brokers", strings.Join(c.kafka.Brokers, ",")), &out, &errOut)
	return out.String() + errOut.String(), err
}

func TestListShowsEachDeadLetter(t *testing.T) {
	c := newCluster(t)
	out, err := c.run(t, "list", "-group", c.group)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"0:0  " + c.dlq + "/0@0", "group " + c.group,
		"error    handler: cannot handle this yet",
		"source   " + c.source + "/0@0",
		"event    ThingHappened v1  event_id " + c.event.EventID.String(),
		"thing " + c.event.AggregateID.String() + " version 4",
		`data     {"colour":"red"}`,
		"headers  event_type=ThingHappened event_id=" + c.event.EventID.String(),
		"0:1  " + c.dlq + "/0@1",
		"source   " + c.source + "/1@5",
		"value    not an event envelope",
		`"this is not JSON"`,
		"2 dead letters on " + c.dlq,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("list does not show %q:\n%s", want, out)
		}
	}

	out, err = c.run(t, "list", "-topic", c.dlq, "-json")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("list -json printed %d lines, want 2:\n%s", len(lines), out)
	}
	var first, second letterJSON
	if err := errors.Join(json.Unmarshal([]byte(lines[0]), &first), json.Unmarshal([]byte(lines[1]), &second)); err != nil {
		t.Fatal(err)
	}
	var env events.Envelope
	if err := json.Unmarshal(first.Event, &env); err != nil || env.EventID != c.event.EventID ||
		first.Source == nil || *first.Source != c.sourcePosition || first.Group != c.group || first.DLQ.Offset != 0 {
		t.Errorf("first letter as JSON: %s (%v)", lines[0], err)
	}
	if second.Event != nil || second.Value != "this is not JSON" || second.ValueError == "" {
		t.Errorf("second letter as JSON: %s", lines[1])
	}
}

// Replayed, a dead letter goes back to its source partition as it was
// before, marked for its group; a letter that is no event is refused when
// named and skipped under -all.
func TestReplay(t *testing.T) {
	c := newCluster(t)
	out, err := c.run(t, "replay", "-group", c.group, "-offsets", "0:0")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if want := "replayed " + c.dlq + "/0@0 (ThingHappened " + c.event.EventID.String() + ") to " + c.source + "/0@0 for group " + c.group; !strings.Contains(out, want) {
		t.Errorf("replay said:\n%s\nwant %q", out, want)
	}
	recs := c.kafka.ReadAll(t, c.source, 1, 20*time.Second)
	if len(recs) != 1 {
		t.Fatalf("%d records on the source topic, want 1", len(recs))
	}
	r := recs[0]
	want := append(append([]kgo.RecordHeader(nil), c.eventHeaders...), kgo.RecordHeader{Key: outbox.HeaderReplay, Value: []byte(c.group)})
	if r.Partition != 0 || !bytes.Equal(r.Key, c.key) || !bytes.Equal(r.Value, c.value) || !sameHeaders(r.Headers, want) {
		t.Errorf("replayed record: partition %d key %s headers %v value %s; want partition 0, the original and %s=%s",
			r.Partition, r.Key, r.Headers, r.Value, outbox.HeaderReplay, c.group)
	}

	out, err = c.run(t, "replay", "-group", c.group, "-offsets", "0:0,0:1")
	if err == nil || !strings.Contains(err.Error(), "nothing replayed") || !strings.Contains(err.Error(), "0@1: not an event envelope") {
		t.Errorf("replay of a letter that is no event: %v\n%s", err, out)
	}
	out, err = c.run(t, "replay", "-group", c.group, "-all")
	if err != nil || !strings.Contains(out, "skipped  "+c.dlq+"/0@1: not an event envelope") || !strings.Contains(out, "1 replayed") {
		t.Errorf("replay -all: %v\n%s", err, out)
	}
	if n := c.kafka.Count(t, c.source); n != 2 {
		t.Errorf("%d records on the source topic, want 2 (the event, replayed twice)", n)
	}
}

func TestBadInput(t *testing.T) {
	c := newCluster(t)
	for _, tt := range []struct {
		args  []string
		usage bool   // a usage error (exit 2)
		want  string // in the error
	}{
		{nil, true, "no command"},
		{[]string{"show"}, true, `unknown command "show"`},
		{[]string{"list"}, true, "give -group"},
		{[]string{"list", "-group", c.group, "extra"}, true, `unexpected argument "extra"`},
		{[]string{"list", "-group", c.group, "-all"}, true, ""},
		{[]string{"replay", "-group", c.group}, true, "either -offsets or -all"},
		{[]string{"replay", "-group", c.group, "-all", "-offsets", "0:0"}, true, "either -offsets or -all"},
		{[]string{"replay", "-group", c.group, "-offsets", "0-0"}, true, `malformed -offsets entry "0-0"`},
		{[]string{"replay", "-group", c.group, "-offsets", "0:0,x"}, true, `malformed -offsets entry "x"`},
		{[]string{"replay", "-group", c.group, "-offsets", "0:0,3:9"}, false, "no dead letter at 3:9 on " + c.dlq},
		{[]string{"list", "-group", "no-such-group"}, false, "no such topic dlq.no-such-group (the dead-letter topics are "},
	} {
		args := tt.args
		if len(args) > 0 {
			args = append(args, "-brokers", strings.Join(c.kafka.Brokers, ","))
		}
		err := run(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{})
		var u usageError
		if err == nil || errors.As(err, &u) != tt.usage || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("dlq %s: %v (usage error: %v); want %q, usage error %v", strings.Join(tt.args, " "), err, errors.As(err, &u), tt.want, tt.usage)
		}
	}
	if n := c.kafka.Count(t, c.source); n != 0 {
		t.Errorf("%d records replayed by bad command lines", n)
	}
}

func sameHeaders(a, b []kgo.RecordHeader) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}
