package outbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/testenv"
)

// countingConsumer records every application of an event in a table with
// no unique constraint, so that applying one twice would show.
type countingConsumer struct {
	consumer *Consumer
	env      env
	stop     func()
}

func (c *countingConsumer) dlqTopic() string { return c.consumer.cfg.DLQTopic }

const effectsTable = `
CREATE TABLE IF NOT EXISTS effects (
    seq      bigserial PRIMARY KEY,
    event_id uuid   NOT NULL,
    key      text   NOT NULL,
    version  bigint NOT NULL
)`

func recordEffect(ctx context.Context, tx pgx.Tx, d Delivery) error {
	_, err := tx.Exec(ctx, "INSERT INTO effects (event_id, key, version) VALUES ($1, $2, $3)",
		d.Envelope.EventID, string(d.Record.Key), d.Envelope.AggregateVersion)
	return err
}

func (e env) startCountingConsumer(t *testing.T, group string, opts ...func(*ConsumerConfig)) *countingConsumer {
	t.Helper()
	if _, err := e.pool.Exec(context.Background(), effectsTable); err != nil {
		t.Fatal(err)
	}
	cfg := ConsumerConfig{
		Pool: e.pool, Brokers: e.kafka.Brokers, Group: group, Topics: []string{e.topic},
		Handler: recordEffect, Logger: testenv.Logger(t), RetryBackoff: 5 * time.Millisecond,
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			t.Errorf("consumer: %v", err)
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return &countingConsumer{consumer: c, env: e, stop: stop}
}

func (c *countingConsumer) counts(t *testing.T) (rows, distinct int) {
	t.Helper()
	err := c.env.pool.QueryRow(context.Background(), "SELECT count(*), count(DISTINCT event_id) FROM effects").Scan(&rows, &distinct)
	if err != nil {
		t.Fatal(err)
	}
	return rows, distinct
}

// produce writes records straight to the topic, as another service would.
func (e env) produce(t *testing.T, recs ...*kgo.Record) {
	t.Helper()
	cl := e.kafka.Client(t, kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	for _, r := range recs {
		if r.Topic == "" {
			r.Topic = e.topic
		}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func (e env) record(t *testing.T, key uuid.UUID, v int64) *kgo.Record {
	m := e.message(t, key, v)
	return &kgo.Record{Key: []byte(m.Key), Value: m.Value}
}

func TestConsumerDeadLettersUndecodableRecordAndMovesOn(t *testing.T) {
	e := newEnv(t, 1)
	key := keyOf(1)
	garbage := &kgo.Record{Key: []byte(key.String()), Value: []byte("this is not JSON"), Headers: []kgo.RecordHeader{{Key: "origin", Value: []byte("test")}}}
	e.produce(t, garbage, e.record(t, key, 1))

	c := e.startCountingConsumer(t, e.kafka.Topic("dlq-test"))
	waitFor(t, 20*time.Second, "the good record", func() bool { return c.consumer.Stats().Applied == 1 })

	dlq := e.kafka.ReadAll(t, c.dlqTopic(), 1, 10*time.Second)
	if n := e.kafka.Count(t, c.dlqTopic()); len(dlq) != 1 || n != 1 {
		t.Fatalf("%d records on the DLQ, want 1", n)
	}
	d := dlq[0]
	hs := map[string]string{}
	for _, h := range d.Headers {
		hs[h.Key] = string(h.Value)
	}
	if string(d.Key) != key.String() || string(d.Value) != "this is not JSON" || hs["origin"] != "test" || hs[HeaderError] == "" {
		t.Errorf("dead letter: key %s value %q headers %v", d.Key, d.Value, hs)
	}
	if hs[HeaderDLQSource] != e.topic+"/0@0" || hs[HeaderDLQGroup] != c.consumer.cfg.Group {
		t.Errorf("dead letter's origin: %s %q, %s %q; want %s/0@0 and the group", HeaderDLQSource, hs[HeaderDLQSource], HeaderDLQGroup, hs[HeaderDLQGroup], e.topic)
	}
	if rows, _ := c.counts(t); rows != 1 {
		t.Errorf("%d effects, want 1", rows)
	}
}

// A handler that keeps failing for one event: the event is tried
// MaxAttempts times and dead-lettered, and the events around it in the same
// batch are applied exactly once.
func TestConsumerRetriesThenDeadLettersFailingEvent(t *testing.T) {
	e := newEnv(t, 1)
	key := keyOf(1)
	recs := make([]*kgo.Record, 10)
	for i := range recs {
		recs[i] = e.record(t, key, int64(i+1))
	}
	e.produce(t, recs...)

	var poisonTries, flakyTries atomic.Int32
	c := e.startCountingConsumer(t, e.kafka.Topic("retry-test"), func(cfg *ConsumerConfig) {
		cfg.MaxAttempts = 3
		cfg.Handler = func(ctx context.Context, tx pgx.Tx, d Delivery) error {
			switch d.Envelope.AggregateVersion {
			case 4: // never works
				poisonTries.Add(1)
				return errors.New("poison")
			case 7: // works on the second try alone
				if flakyTries.Add(1) < 3 {
					return errors.New("flaky")
				}
			}
			return recordEffect(ctx, tx, d)
		}
	})
	waitFor(t, 20*time.Second, "the batch to be dealt with", func() bool {
		s := c.consumer.Stats()
		return s.Applied == 9 && s.DeadLettered == 1
	})
	if rows, distinct := c.counts(t); rows != 9 || distinct != 9 {
		t.Errorf("effects: %d rows, %d distinct; want 9 and 9", rows, distinct)
	}
	// One try inside the failed batch, then MaxAttempts alone.
	if n := poisonTries.Load(); n != 1+3 {
		t.Errorf("poison tried %d times, want 4", n)
	}
	if n := e.kafka.Count(t, c.dlqTopic()); n != 1 {
		t.Fatalf("%d dead letters", n)
	}
	// Delivered again, the dead letter is known to the inbox: skipped, not
	// tried and dead-lettered a second time.
	e.produce(t, &kgo.Record{Key: recs[3].Key, Value: recs[3].Value})
	waitFor(t, 20*time.Second, "the redelivered poison to be skipped", func() bool { return c.consumer.Stats().Duplicates == 1 })
	if s := c.consumer.Stats(); s.DeadLettered != 1 || poisonTries.Load() != 4 {
		t.Errorf("after redelivery: %+v, poison tried %d times", s, poisonTries.Load())
	}

	var versions []int64
	rows, _ := e.pool.Query(context.Background(), "SELECT version FROM effects ORDER BY seq")
	versions, _ = pgx.CollectRows(rows, pgx.RowTo[int64])
	want := []int64{1, 2, 3, 5, 6, 7, 8, 9, 10}
	if len(versions) != len(want) {
		t.Fatalf("applied versions %v, want %v", versions, want)
	}
	for i := range want {
		if versions[i] != want[i] {
			t.Fatalf("applied versions %v, want %v", versions, want)
		}
	}
}

// Records of one key are applied in order even though partitions are
// applied in parallel; duplicates on the topic change nothing.
func TestConsumerOrderPerKeyAndDuplicates(t *testing.T) {
	e := newEnv(t, 6)
	const keys, versions = 30, 20
	var recs []*kgo.Record
	for v := int64(1); v <= versions; v++ {
		for k := range keys {
			recs = append(recs, e.record(t, keyOf(k), v))
		}
	}
	e.produce(t, recs...)
	e.produce(t, recs[:100]...) // the same events again, as after a relay crash

	c := e.startCountingConsumer(t, e.kafka.Topic("order-test"), func(cfg *ConsumerConfig) { cfg.BatchSize = 37 })
	waitFor(t, 30*time.Second, "every record", func() bool {
		s := c.consumer.Stats()
		return s.Applied+s.Duplicates >= keys*versions+100
	})
	if s := c.consumer.Stats(); s.Applied != keys*versions || s.Duplicates != 100 {
		t.Errorf("stats %+v", s)
	}
	rows, _ := e.pool.Query(context.Background(), "SELECT key, version FROM effects ORDER BY seq")
	type kv struct {
		Key     string
		Version int64
	}
	applied, err := pgx.CollectRows(rows, pgx.RowToStructByPos[kv])
	if err != nil {
		t.Fatal(err)
	}
	next := map[string]int64{}
	for _, a := range applied {
		if a.Version != next[a.Key]+1 {
			t.Fatalf("key %s: applied version %d after %d", a.Key, a.Version, next[a.Key])
		}
		next[a.Key] = a.Version
	}
	if len(applied) != keys*versions {
		t.Errorf("%d effects, want %d", len(applied), keys*versions)
	}
}

// While a handler's transaction is open, the group's committed offset stays
// before its record; a consumer stopped at that moment abandons the
// transaction, and the next consumer of the group applies the record once.
func TestConsumerCommitsOffsetsOnlyAfterTransaction(t *testing.T) {
	e := newEnv(t, 1)
	key := keyOf(1)
	e.produce(t, e.record(t, key, 1), e.record(t, key, 2), e.record(t, key, 3))

	inHandler := make(chan struct{})
	release := make(chan struct{})
	var blocked atomic.Bool
	group := e.kafka.Topic("commit-test")
	first := e.startCountingConsumer(t, group, func(cfg *ConsumerConfig) {
		cfg.ShutdownGrace = 100 * time.Millisecond
		cfg.Handler = func(ctx context.Context, tx pgx.Tx, d Delivery) error {
			if d.Envelope.AggregateVersion == 3 && blocked.CompareAndSwap(false, true) {
				close(inHandler)
				select { // hold the transaction open until the consumer gives up
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return recordEffect(ctx, tx, d)
		}
	})
	<-inHandler

	adm := kadm.NewClient(e.kafka.Client(t))
	offsets, err := adm.FetchOffsets(context.Background(), first.consumer.cfg.Group)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offsets.Lookup(e.topic, 0); ok && o.At > 0 {
		t.Errorf("committed offset %d while the first transaction is still open", o.At)
	}

	first.stop() // gives up on the open transaction after ShutdownGrace
	close(release)
	if rows, _ := first.counts(t); rows != 0 {
		t.Fatalf("%d effects committed by the stopped consumer, want 0", rows)
	}

	second := e.startCountingConsumer(t, group)
	waitFor(t, 20*time.Second, "the second consumer", func() bool { return second.consumer.Stats().Applied == 3 })
	if rows, distinct := second.counts(t); rows != 3 || distinct != 3 {
		t.Errorf("effects %d rows, %d distinct; want 3", rows, distinct)
	}
	waitFor(t, 10*time.Second, "the offset commit", func() bool {
		offsets, err := adm.FetchOffsets(context.Background(), first.consumer.cfg.Group)
		o, ok := offsets.Lookup(e.topic, 0)
		return err == nil && ok && o.At == 3
	})
}

// A BatchHandler gets a partition's events in order, many at a time; a
// failing batch is given again one event at a time, so the bad event alone
// is dead-lettered. Without the inbox, duplicates reach the handler, which
// must be idempotent by itself.
func TestConsumerBatchHandlerWithoutInbox(t *testing.T) {
	e := newEnv(t, 1)
	key := keyOf(1)
	var recs []*kgo.Record
	for v := int64(1); v <= 20; v++ {
		recs = append(recs, e.record(t, key, v))
	}
	e.produce(t, recs[:12]...) // a clean batch first

	var mu sync.Mutex
	var sizes []int
	var seen []int64
	c := e.startCountingConsumer(t, e.kafka.Topic("batch-test"), func(cfg *ConsumerConfig) {
		cfg.Handler, cfg.NoInbox = nil, true
		cfg.BatchHandler = func(ctx context.Context, tx pgx.Tx, ds []Delivery) error {
			for _, d := range ds {
				if d.Envelope.AggregateVersion == 13 {
					return Permanent(errors.New("13 is bad"))
				}
			}
			mu.Lock()
			defer mu.Unlock()
			sizes = append(sizes, len(ds))
			for _, d := range ds {
				seen = append(seen, d.Envelope.AggregateVersion)
			}
			return nil
		}
	})
	waitFor(t, 20*time.Second, "the clean batch", func() bool { return c.consumer.Stats().Applied == 12 })
	e.produce(t, recs[12:]...)
	e.produce(t, recs[0]) // a duplicate after the rest
	waitFor(t, 20*time.Second, "all records", func() bool {
		s := c.consumer.Stats()
		return s.Applied+s.DeadLettered >= 21
	})
	mu.Lock()
	defer mu.Unlock()
	want := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 16, 17, 18, 19, 20, 1}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("handled versions %v, want %v", seen, want)
	}
	if c.consumer.Stats().DeadLettered != 1 || c.consumer.Stats().Duplicates != 0 {
		t.Errorf("stats %+v", c.consumer.Stats())
	}
	big := false
	for _, n := range sizes {
		big = big || n > 1
	}
	if !big {
		t.Errorf("never given more than one event at once: %v", sizes)
	}
	var inbox int
	_ = e.pool.QueryRow(context.Background(), "SELECT count(*) FROM inbox").Scan(&inbox)
	if inbox != 0 {
		t.Errorf("%d inbox rows without an inbox", inbox)
	}
}

// What a handler gives OnCommit runs once its transaction has committed,
// and not when the COMMIT fails after every statement succeeded (here the
// transaction's backend is terminated before it): the retry's does.
func TestOnCommitRunsOnlyAfterTheCommit(t *testing.T) {
	if OnCommit(context.Background(), func() {}) {
		t.Error("OnCommit outside a consumer's transaction accepted a function it will never run")
	}
	e := newEnv(t, 1)
	e.produce(t, e.record(t, keyOf(1), 1))

	var attempts, ran atomic.Int32
	c := e.startCountingConsumer(t, e.kafka.Topic("oncommit-test"), func(cfg *ConsumerConfig) {
		cfg.Handler = nil
		cfg.BatchHandler = func(ctx context.Context, tx pgx.Tx, ds []Delivery) error {
			for _, d := range ds {
				if err := recordEffect(ctx, tx, d); err != nil {
					return err
				}
			}
			if !OnCommit(ctx, func() { ran.Add(1) }) {
				t.Error("OnCommit refused the handler's context")
			}
			if attempts.Add(1) > 1 {
				return nil
			}
			var pid int
			if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				return err
			}
			var gone bool
			if err := e.pool.QueryRow(ctx, "SELECT pg_terminate_backend($1, 10000)", pid).Scan(&gone); err != nil || !gone {
				t.Errorf("terminate backend %d: %v, %v", pid, gone, err)
			}
			return nil // the statements succeeded; the COMMIT will not
		}
	})
	waitFor(t, 20*time.Second, "the event to apply", func() bool { return c.consumer.Stats().Applied == 1 })
	if n := attempts.Load(); n != 2 {
		t.Errorf("%d attempts, want 2 (the failed COMMIT and its retry)", n)
	}
	if n := ran.Load(); n != 1 {
		t.Errorf("OnCommit functions ran %d times, want 1 (the retry's)", n)
	}
	if rows, _ := c.counts(t); rows != 1 {
		t.Errorf("%d effects, want 1", rows)
	}
}

// A batch that fails for a transient reason (here: a lost optimistic race,
// as the write services' Transient says) is tried again whole. Split into
// one transaction per record, as a failure that may be a bad record's is, a
// backlog would be applied at a fraction of the pace just when two
// instances race for the same aggregates.
func TestBatchThatLostARaceIsTriedAgainWhole(t *testing.T) {
	e := newEnv(t, 1)
	var recs []*kgo.Record
	for v := int64(1); v <= 12; v++ {
		recs = append(recs, e.record(t, keyOf(1), v))
	}
	e.produce(t, recs...) // before the consumer starts: one poll, one batch

	lostRace := errors.New("another writer moved the aggregate")
	var mu sync.Mutex
	var sizes []int
	c := e.startCountingConsumer(t, e.kafka.Topic("race-test"), func(cfg *ConsumerConfig) {
		cfg.Handler, cfg.NoInbox = nil, true
		cfg.Transient = func(err error) bool { return errors.Is(err, lostRace) }
		cfg.BatchHandler = func(ctx context.Context, tx pgx.Tx, ds []Delivery) error {
			mu.Lock()
			defer mu.Unlock()
			sizes = append(sizes, len(ds))
			if len(sizes) <= 2 {
				return fmt.Errorf("apply: %w", lostRace)
			}
			return nil
		}
	})
	waitFor(t, 20*time.Second, "the batch", func() bool { return c.consumer.Stats().Applied == 12 })
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(sizes) != "[12 12 12]" {
		t.Errorf("batch sizes given to the handler: %v, want [12 12 12] (two lost races, then applied whole)", sizes)
	}
}
