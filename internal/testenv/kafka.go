package testenv

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Kafka is the cluster a test talks to.
type Kafka struct {
	Brokers []string
	// Shared is true when the cluster outlives the test (TEST_KAFKA_BROKERS),
	// so topic names must be made unique.
	Shared bool
	// Conn is how Client connects: nothing for a plaintext cluster, an
	// admin's TLS and SASL for a secured one (NewSecureKafka).
	Conn []kgo.Opt
}

// NewKafka returns TEST_KAFKA_BROKERS when set, else a kfake cluster of
// one broker that closes when the test ends.
func NewKafka(t testing.TB) *Kafka {
	t.Helper()
	if b := os.Getenv("TEST_KAFKA_BROKERS"); b != "" {
		return &Kafka{Brokers: strings.Split(b, ","), Shared: true}
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return &Kafka{Brokers: c.ListenAddrs()}
}

// NeedsKfake skips t on a real cluster (TEST_KAFKA_BROKERS): it needs what
// only the in-process kfake can do (why), and runs in make test.
func NeedsKfake(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("TEST_KAFKA_BROKERS") != "" {
		t.Skipf("needs kfake (%s); runs in make test, not on TEST_KAFKA_BROKERS", why)
	}
}

// Topic returns the name a test should use for base: base itself on a
// cluster of its own, base with a unique suffix on a shared one.
func (k *Kafka) Topic(base string) string {
	if !k.Shared {
		return base
	}
	return base + "-" + uuid.NewString()[:8]
}

// Partitions is how many partitions topic has; 0 if it does not exist.
func (k *Kafka) Partitions(t testing.TB, topic string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topics, err := kadm.NewClient(k.Client(t)).ListTopics(ctx, topic)
	if err != nil {
		t.Fatalf("list %s: %v", topic, err)
	}
	return len(topics[topic].Partitions)
}

// CreateTopics creates topics with the given number of partitions.
func (k *Kafka) CreateTopics(t testing.TB, partitions int32, topics ...string) {
	t.Helper()
	cl := k.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopics(ctx, partitions, 1, nil, topics...)
	if err != nil {
		t.Fatalf("create topics %v: %v", topics, err)
	}
	for _, r := range resp {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			t.Fatalf("create topic %s: %v", r.Topic, r.Err)
		}
	}
	// A real broker answers CreateTopics before every partition has a
	// leader: a record produced at once fails with
	// UNKNOWN_TOPIC_OR_PARTITION. Wait until the metadata shows them all led.
	for ctx.Err() == nil {
		md, err := kadm.NewClient(cl).Metadata(ctx, topics...)
		ready := err == nil
		for _, topic := range topics {
			td, ok := md.Topics[topic]
			ready = ready && ok && td.Err == nil && len(td.Partitions) == int(partitions)
			for _, p := range td.Partitions {
				ready = ready && p.Err == nil && p.Leader >= 0
			}
		}
		if ready {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("topics %v: no leader for every partition within 30 s", topics)
}

// Client returns a client of the cluster (an admin's, on a secured one), closed when the test ends.
func (k *Kafka) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append(append([]kgo.Opt{kgo.SeedBrokers(k.Brokers...)}, k.Conn...), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// ReadAll consumes topic from the start until want records have arrived or
// the deadline passes, and returns what it read in partition order.
func (k *Kafka) ReadAll(t testing.TB, topic string, want int, within time.Duration) []*kgo.Record {
	t.Helper()
	cl := k.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		out = append(out, fs.Records()...)
	}
	return out
}

// Logger returns a logger that writes into the test's log, and stays quiet
// once the test has ended (goroutines that outlive it must not fail it).
func Logger(t testing.TB) *slog.Logger {
	h := &testHandler{t: t, mu: new(sync.Mutex), done: new(bool)}
	t.Cleanup(func() {
		h.mu.Lock()
		*h.done = true
		h.mu.Unlock()
	})
	return slog.New(h)
}

type testHandler struct {
	t     testing.TB
	mu    *sync.Mutex
	done  *bool
	attrs []slog.Attr
	group string
}

func (h *testHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || os.Getenv("TEST_DEBUG") != ""
}

func (h *testHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	// Values are resolved, as every slog handler must: a LogValuer (a
	// service's configuration) logs what it chose to, never its secrets.
	for _, a := range h.attrs {
		b.WriteString(" " + resolved(a).String())
	}
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + h.group + resolved(a).String())
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if !*h.done {
		h.t.Log(b.String())
	}
	return nil
}

func resolved(a slog.Attr) slog.Attr {
	a.Value = a.Value.Resolve()
	return a
}

func (h *testHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

func (h *testHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.group += name + "."
	return &c
}

// WaitFor polls cond every 10ms until it holds, and fails the test if it
// does not within the given time. Tests wait on conditions, never sleep.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Count returns how many records topic holds: the sum over its partitions
// of end minus start offsets. Unlike reading until a number arrives, it
// also sees records beyond the number expected.
func (k *Kafka) Count(t testing.TB, topic string) int64 {
	t.Helper()
	adm := kadm.NewClient(k.Client(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		if s, ok := starts.Lookup(o.Topic, o.Partition); ok {
			n += o.Offset - s.Offset
		}
	})
	return n
}

// Collector reads topics from their start, in the background, until the
// test ends; each partition's records stay in order.
type Collector struct {
	mu   sync.Mutex
	recs []*kgo.Record
}

// Collect starts a Collector of topics.
func (k *Kafka) Collect(t testing.TB, topics ...string) *Collector {
	t.Helper()
	c := &Collector{}
	cl := k.Client(t, kgo.ConsumeTopics(topics...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			c.mu.Lock()
			c.recs = append(c.recs, fs.Records()...)
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// Records returns what has been read so far.
func (c *Collector) Records() []*kgo.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*kgo.Record(nil), c.recs...)
}
