package outbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/pkg/events"
)

// Dead letters are read back and replayed from here (bin/dlq runs these
// functions). A replay produces the dead letter again, as it was before it
// was given up, to the very partition it came from, with a HeaderReplay that
// names the group: that group's consumer then applies it in its normal path,
// after the records already on the partition, while the inbox still skips
// every other copy. Replaying to the source partition, rather than to a topic
// of replays, keeps the aggregate's order from the replay on: an event of the
// aggregate published after the replay is applied after it.

// DeadLetter is a record of a dead-letter topic and what the consumer that
// gave it up said about it.
type DeadLetter struct {
	// Record is the record as it is on the dead-letter topic: its Topic,
	// Partition, Offset and Timestamp are the dead letter's.
	Record *kgo.Record
	// Error is why the record was given up (HeaderError).
	Error string
	// Group is the consumer group that gave it up (HeaderDLQGroup); for a
	// dead letter written before that header was, the topic's name without
	// its "dlq." prefix, if it has one.
	Group string
	// Source is where the record was before (HeaderDLQSource); its Topic is
	// "" when the header is missing or malformed.
	Source Location
	// Envelope is the record's event, when EnvelopeErr is nil; EnvelopeErr
	// says why the value is not an envelope (a reason to dead-letter).
	Envelope    events.Envelope
	EnvelopeErr error
}

// Location is a record's place in Kafka, written <topic>/<partition>@<offset>.
type Location struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

func (l Location) String() string {
	return l.Topic + "/" + strconv.Itoa(int(l.Partition)) + "@" + strconv.FormatInt(l.Offset, 10)
}

// ParseLocation reads a Location written by its String method. A topic name
// cannot hold '/' or '@', so the last of each ends it.
func ParseLocation(s string) (Location, error) {
	slash, at := strings.LastIndexByte(s, '/'), strings.LastIndexByte(s, '@')
	if slash < 1 || at < slash {
		return Location{}, fmt.Errorf("location %q: want <topic>/<partition>@<offset>", s)
	}
	p, err1 := strconv.ParseInt(s[slash+1:at], 10, 32)
	o, err2 := strconv.ParseInt(s[at+1:], 10, 64)
	if err1 != nil || err2 != nil || p < 0 || o < 0 {
		return Location{}, fmt.Errorf("location %q: want <topic>/<partition>@<offset>", s)
	}
	return Location{Topic: s[:slash], Partition: int32(p), Offset: o}, nil
}

func locationOf(rec *kgo.Record) Location {
	return Location{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset}
}

// ErrNoTopic is the error of ReadDeadLetters for a topic the cluster does
// not have.
var ErrNoTopic = errors.New("no such topic")

// ReadDeadLetters returns the records of a dead-letter topic, from its start
// to its end as the call finds it, in partition and offset order. A record
// that was dead-lettered and is applied since (by a replay) is still there:
// a topic is append-only; the consumer's inbox knows which events are
// settled.
func ReadDeadLetters(ctx context.Context, brokers []string, topic string, opts ...kgo.Opt) ([]DeadLetter, error) {
	from, last, err := deadLetterRange(ctx, brokers, topic, opts)
	if err != nil || len(from) == 0 {
		return nil, err
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from})}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var recs []*kgo.Record
	for len(last) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w (%d records read)", topic, err, len(recs))
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("read %s/%d: %w", t, p, err) })
		if ferr != nil {
			return nil, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			if end, ok := last[r.Partition]; ok {
				if r.Offset <= end {
					recs = append(recs, r)
				}
				if r.Offset >= end {
					delete(last, r.Partition)
				}
			}
		})
	}
	slices.SortFunc(recs, func(a, b *kgo.Record) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	out := make([]DeadLetter, len(recs))
	for i, r := range recs {
		out[i] = readDeadLetter(r)
	}
	return out, nil
}

// deadLetterRange returns, for each partition of topic that holds records,
// where they start and the offset of the last.
func deadLetterRange(ctx context.Context, brokers []string, topic string, opts []kgo.Opt) (from map[int32]kgo.Offset, last map[int32]int64, err error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		return nil, nil, err
	}
	defer cl.Close()
	if err := knownTopic(ctx, cl, topic); err != nil {
		return nil, nil, err
	}
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("start offsets of %s: %w", topic, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	from, last = map[int32]kgo.Offset{}, map[int32]int64{}
	ends.Each(func(end kadm.ListedOffset) {
		start, _ := starts.Lookup(topic, end.Partition)
		if end.Offset > start.Offset {
			from[end.Partition] = kgo.NewOffset().At(start.Offset)
			last[end.Partition] = end.Offset - 1
		}
	})
	return from, last, nil
}

// knownTopic returns ErrNoTopic, naming the dead-letter topics there are,
// for a topic the cluster does not have.
func knownTopic(ctx context.Context, cl *kgo.Client, topic string) error {
	counts, err := partitionCounts(ctx, cl, []string{topic})
	if err != nil {
		return err
	}
	if _, ok := counts[topic]; ok {
		return nil
	}
	all, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		return fmt.Errorf("%w %s", ErrNoTopic, topic)
	}
	var dlqs []string
	for _, t := range all.Names() {
		if strings.HasPrefix(t, "dlq.") {
			dlqs = append(dlqs, t)
		}
	}
	if len(dlqs) == 0 {
		return fmt.Errorf("%w %s (the cluster has no dead-letter topic: no consumer has started on it)", ErrNoTopic, topic)
	}
	slices.Sort(dlqs)
	return fmt.Errorf("%w %s (the dead-letter topics are %s)", ErrNoTopic, topic, strings.Join(dlqs, ", "))
}

func readDeadLetter(r *kgo.Record) DeadLetter {
	d := DeadLetter{Record: r, Error: header(r, HeaderError), Group: header(r, HeaderDLQGroup)}
	if d.Group == "" {
		if g, ok := strings.CutPrefix(r.Topic, "dlq."); ok {
			d.Group = g
		}
	}
	if src, err := ParseLocation(header(r, HeaderDLQSource)); err == nil {
		d.Source = src
	}
	d.Envelope, d.EnvelopeErr = events.ParseEnvelope(r.Value)
	return d
}

// ReplayDeadLetters produces each letter again to the partition it was
// dead-lettered from, with its key, value and original headers, and
// HeaderReplay naming its group, so that the group's consumer applies it:
// once, however often it is replayed, and only if the group has not applied
// the event since. Other groups consuming the topic skip it as a duplicate.
//
// It returns where each letter went, in the order given. Letters that cannot
// be replayed (no source or group, or a value that is not an envelope, which
// the consumer would dead-letter again at once) make it return an error
// before anything is produced.
//
// The replayed event is applied on the state the group has now, after the
// events of its aggregate that came after it: replay only what is still
// wanted (docs/operations.md).
func ReplayDeadLetters(ctx context.Context, brokers []string, letters []DeadLetter, opts ...kgo.Opt) ([]Location, error) {
	var bad []error
	recs := make([]*kgo.Record, len(letters))
	for i, l := range letters {
		if err := l.Replayable(); err != nil {
			bad = append(bad, fmt.Errorf("%s: %w", locationOf(l.Record), err))
		}
		recs[i] = &kgo.Record{Topic: l.Source.Topic, Partition: l.Source.Partition, Key: l.Record.Key, Value: l.Record.Value, Headers: replayHeaders(l)}
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("nothing replayed: %w", errors.Join(bad...))
	}
	if len(recs) == 0 {
		return nil, nil
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), // back where it came from, whatever the key hashes to
	}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	index := make(map[*kgo.Record]int, len(recs))
	for i, r := range recs {
		index[r] = i
	}
	out := make([]Location, len(recs))
	var failed []error
	for _, res := range cl.ProduceSync(ctx, recs...) { // in the order they completed
		i := index[res.Record]
		if res.Err != nil {
			failed = append(failed, fmt.Errorf("%s to %s/%d: %w", locationOf(letters[i].Record), recs[i].Topic, recs[i].Partition, res.Err))
			continue
		}
		out[i] = locationOf(res.Record)
	}
	return out, errors.Join(failed...)
}

// Replayable says why the letter cannot be replayed, or nil if it can.
func (l DeadLetter) Replayable() error {
	switch {
	case l.EnvelopeErr != nil:
		return fmt.Errorf("not an event envelope, the consumer would dead-letter it again: %w", l.EnvelopeErr)
	case l.Source.Topic == "":
		return fmt.Errorf("no %s header: where it came from is unknown", HeaderDLQSource)
	case l.Group == "":
		return fmt.Errorf("no %s header, and a topic not named dlq.<group>: the group to replay it for is unknown", HeaderDLQGroup)
	}
	return nil
}

// replayHeaders are a dead letter's headers as they were before it was
// given up, and HeaderReplay.
func replayHeaders(l DeadLetter) []kgo.RecordHeader {
	var hs []kgo.RecordHeader
	for _, h := range l.Record.Headers {
		switch h.Key {
		case HeaderError, HeaderDLQSource, HeaderDLQGroup, HeaderReplay:
		default:
			hs = append(hs, h)
		}
	}
	return append(hs, kgo.RecordHeader{Key: HeaderReplay, Value: []byte(l.Group)})
}
