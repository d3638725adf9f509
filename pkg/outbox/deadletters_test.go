package outbox

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/testenv"
	"github.com/eventsaga/eventsaga/pkg/events"
)

// poison → dead letter → fix → replay → applied, through the functions
// bin/dlq runs. Copies of the dead-lettered record are skipped, not tried
// again; a replay before the fix is dead-lettered again; after the fix a
// replay is applied once, however often it is replayed, after the events
// of its aggregate that followed it.
func TestDeadLetterReplayedAfterTheFixIsAppliedOnce(t *testing.T) {
	e := newEnv(t, 3)
	a, b := keyOf(1), keyOf(2)
	recs := []*kgo.Record{e.record(t, a, 1), e.record(t, a, 2), e.record(t, a, 3), e.record(t, b, 1), e.record(t, b, 2)}
	e.produce(t, recs...) // sets each record's partition and offset
	poison, err := events.ParseEnvelope(recs[1].Value)
	if err != nil {
		t.Fatal(err)
	}

	var fixed atomic.Bool
	var poisonTries atomic.Int32
	group := e.kafka.Topic("replay-test")
	c := e.startCountingConsumer(t, group, func(cfg *ConsumerConfig) {
		cfg.Handler = func(ctx context.Context, tx pgx.Tx, d Delivery) error {
			if d.Envelope.EventID == poison.EventID {
				poisonTries.Add(1)
				if !fixed.Load() {
					return Permanent(errors.New("cannot handle this yet"))
				}
			}
			return recordEffect(ctx, tx, d)
		}
	})
	waitFor(t, 20*time.Second, "the poison to be dead-lettered and the rest applied", func() bool {
		s := c.consumer.Stats()
		return s.Applied == 4 && s.DeadLettered == 1
	})
	letters := readDeadLetters(t, e, c.dlqTopic(), 1)
	l := letters[0]
	src := Location{Topic: e.topic, Partition: recs[1].Partition, Offset: recs[1].Offset}
	if !strings.Contains(l.Error, "cannot handle this yet") || l.Group != group || l.Source != src ||
		l.EnvelopeErr != nil || l.Envelope.EventID != poison.EventID {
		t.Fatalf("dead letter: error %q, group %q (want %q), source %s (want %s), envelope %v %s",
			l.Error, l.Group, group, l.Source, src, l.EnvelopeErr, l.Envelope.EventID)
	}
	if mark := deadLetterMark(t, e, group, poison.EventID); mark != locationOf(l.Record).String() {
		t.Errorf("inbox mark %q, want the dead letter's place %s", mark, locationOf(l.Record))
	}

	// Copies that are not this group's replays are skipped, not tried again.
	tries := poisonTries.Load()
	e.produce(t, copyOf(recs[1]), copyOf(recs[1], kgo.RecordHeader{Key: HeaderReplay, Value: []byte("another-group")}))
	waitFor(t, 20*time.Second, "the copies to be skipped", func() bool { return c.consumer.Stats().Duplicates == 2 })
	if n := poisonTries.Load(); n != tries || c.consumer.Stats().DeadLettered != 1 {
		t.Fatalf("copies of a dead letter: tried %d more times, %d dead letters; want none and 1", n-tries, c.consumer.Stats().DeadLettered)
	}

	// Replayed before the fix: tried, and dead-lettered again; the inbox's
	// mark follows it to its new dead letter.
	to, err := ReplayDeadLetters(context.Background(), e.kafka.Brokers, letters)
	if err != nil {
		t.Fatal(err)
	}
	if to[0].Topic != src.Topic || to[0].Partition != src.Partition || to[0].Offset <= src.Offset {
		t.Errorf("replayed to %s, want a later offset of %s/%d", to[0], src.Topic, src.Partition)
	}
	waitFor(t, 20*time.Second, "the replay to fail again", func() bool { return c.consumer.Stats().DeadLettered == 2 })
	letters = readDeadLetters(t, e, c.dlqTopic(), 2)
	if again := letters[1]; again.Source != to[0] || header(again.Record, HeaderReplay) != group || again.Envelope.EventID != poison.EventID {
		t.Errorf("second dead letter: source %s (want %s), %s %q", again.Source, to[0], HeaderReplay, header(again.Record, HeaderReplay))
	}
	if mark := deadLetterMark(t, e, group, poison.EventID); mark != locationOf(letters[1].Record).String() {
		t.Errorf("inbox mark %q, want the second dead letter's place %s", mark, locationOf(letters[1].Record))
	}

	// Fixed: both dead letters replayed, twice. The event is applied once.
	fixed.Store(true)
	for range 2 {
		if _, err := ReplayDeadLetters(context.Background(), e.kafka.Brokers, letters); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "the four replays", func() bool {
		s := c.consumer.Stats()
		return s.Applied+s.Duplicates >= 4+2+4
	})
	if s := c.consumer.Stats(); s.Applied != 5 || s.Duplicates != 2+3 || s.DeadLettered != 2 {
		t.Errorf("stats %+v; want 5 applied, 5 duplicates, 2 dead letters", s)
	}
	if rows, distinct := c.counts(t); rows != 5 || distinct != 5 {
		t.Errorf("effects: %d rows, %d distinct; want 5 and 5", rows, distinct)
	}
	if mark := deadLetterMark(t, e, group, poison.EventID); mark != "" {
		t.Errorf("inbox still marks the applied event as dead letter %s", mark)
	}
	rows, _ := e.pool.Query(context.Background(), "SELECT version FROM effects WHERE key = $1 ORDER BY seq", a.String())
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil || !slices.Equal(versions, []int64{1, 3, 2}) {
		t.Errorf("versions of %s applied in the order %v (%v); want [1 3 2]: the replay after what followed it", a, versions, err)
	}
}

// A letter that cannot be applied is refused before anything is produced.
func TestReplayRefusesWhatCannotBeApplied(t *testing.T) {
	k := testenv.NewKafka(t)
	topic := k.Topic("things.events")
	k.CreateTopics(t, 1, topic)
	ok := DeadLetter{
		Record: &kgo.Record{Topic: "dlq.g", Value: []byte("{}")}, Group: "g", Source: Location{Topic: topic},
	}
	notAnEvent := ok
	notAnEvent.Record = &kgo.Record{Topic: "dlq.g", Partition: 0, Offset: 1, Value: []byte("garbage")}
	_, notAnEvent.EnvelopeErr = events.ParseEnvelope(notAnEvent.Record.Value)
	noSource, noGroup := ok, ok
	noSource.Source, noGroup.Group = Location{}, ""

	for _, tt := range []struct {
		name   string
		letter DeadLetter
		want   string
	}{
		{"a value that is no envelope", notAnEvent, "dlq.g/0@1: not an event envelope"},
		{"no source", noSource, "no dlq_source header"},
		{"no group", noGroup, "no dlq_group header"},
	} {
		_, err := ReplayDeadLetters(context.Background(), k.Brokers, []DeadLetter{ok, tt.letter})
		if err == nil || !strings.Contains(err.Error(), "nothing replayed") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v; want nothing replayed, %q", tt.name, err, tt.want)
		}
	}
	if n := k.Count(t, topic); n != 0 {
		t.Errorf("%d records replayed", n)
	}
}

// An unknown topic is named as such, with the dead-letter topics there are.
func TestReadDeadLettersOfAnUnknownTopic(t *testing.T) {
	k := testenv.NewKafka(t)
	there := k.Topic("dlq.some-group")
	k.CreateTopics(t, 1, there)
	// A real broker makes a new topic known to its metadata a moment later.
	testenv.WaitFor(t, 30*time.Second, there+" to be listed", func() bool { return k.Partitions(t, there) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := ReadDeadLetters(ctx, k.Brokers, "dlq.no-such-group")
	if !errors.Is(err, ErrNoTopic) || !strings.Contains(err.Error(), there) {
		t.Errorf("%v; want %v naming %s", err, ErrNoTopic, there)
	}
	letters, err := ReadDeadLetters(ctx, k.Brokers, there)
	if err != nil || len(letters) != 0 {
		t.Errorf("an empty topic: %d letters, %v", len(letters), err)
	}
}

func TestParseLocation(t *testing.T) {
	want := Location{Topic: "orders.events", Partition: 3, Offset: 17}
	if got, err := ParseLocation(want.String()); err != nil || got != want {
		t.Errorf("ParseLocation(%q) = %v, %v", want.String(), got, err)
	}
	for _, s := range []string{"", "orders.events", "orders.events/3", "orders.events@17/3", "/3@17", "t/-1@17", "t/3@x", "t/3@-1"} {
		if l, err := ParseLocation(s); err == nil {
			t.Errorf("ParseLocation(%q) = %v, want an error", s, l)
		}
	}
}

// readDeadLetters reads topic, which must hold want records.
func readDeadLetters(t *testing.T, e env, topic string, want int) []DeadLetter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	letters, err := ReadDeadLetters(ctx, e.kafka.Brokers, topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != want {
		t.Fatalf("%d dead letters on %s, want %d", len(letters), topic, want)
	}
	return letters
}

// deadLetterMark is the inbox's dead_letter of the event: "" when it is
// applied.
func deadLetterMark(t *testing.T, e env, group string, id [16]byte) string {
	t.Helper()
	var mark *string
	err := e.pool.QueryRow(context.Background(), "SELECT dead_letter FROM inbox WHERE consumer_group = $1 AND event_id = $2", group, id).Scan(&mark)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "(no inbox row)"
	case err != nil:
		t.Fatal(err)
	case mark == nil:
		return ""
	}
	return *mark
}

// copyOf is a new record with r's key, value and headers, and more headers.
func copyOf(r *kgo.Record, more ...kgo.RecordHeader) *kgo.Record {
	return &kgo.Record{Key: r.Key, Value: r.Value, Headers: append(slices.Clone(r.Headers), more...)}
}
