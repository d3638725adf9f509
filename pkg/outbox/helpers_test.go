package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/testenv"
	"github.com/eventsaga/eventsaga/pkg/events"
)

type env struct {
	pool  *pgxpool.Pool
	kafka *testenv.Kafka
	topic string
}

func newEnv(t *testing.T, partitions int32) env {
	t.Helper()
	e := env{pool: testenv.Postgres(t, Migration()), kafka: testenv.NewKafka(t)}
	e.topic = e.kafka.Topic("things.events")
	e.kafka.CreateTopics(t, partitions, e.topic)
	return e
}

// message is the outbox message of version v of aggregate agg.
func (e env) message(t testing.TB, agg uuid.UUID, v int64) Message {
	t.Helper()
	env := events.Envelope{
		EventID: uuid.New(), EventType: "ThingHappened", SchemaVersion: 1, AggregateType: "thing",
		AggregateID: agg, AggregateVersion: v, OccurredAt: time.Now(), CorrelationID: agg, Data: json.RawMessage(`{}`),
	}
	env.CausationID = env.EventID
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return Message{Topic: e.topic, Key: agg.String(), Value: b, Headers: []Header{{Key: "event_id", Value: []byte(env.EventID.String())}}}
}

// execer is a pool, connection or transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// insert writes msgs to the outbox through q with Insert's statement, the one
// the event store's unit of work sends: within q if it is a transaction, in
// a transaction of its own if it is a pool.
func insert(ctx context.Context, q execer, msgs ...Message) error {
	sql, args, err := Insert(msgs...)
	if err != nil {
		return err
	}
	_, err = q.Exec(ctx, sql, args...)
	return err
}

// commit writes msgs to the outbox in a transaction of their own.
func (e env) commit(t testing.TB, msgs ...Message) {
	t.Helper()
	if err := insert(context.Background(), e.pool, msgs...); err != nil {
		t.Fatal(err)
	}
}

func (e env) outboxRows(t testing.TB) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), "SELECT count(*) FROM outbox").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// startRelay runs a relay until the test ends or stop is called; stop
// waits for Run to return.
func (e env) startRelay(t *testing.T, cfg RelayConfig) (r *Relay, stop func()) {
	t.Helper()
	cfg.Pool, cfg.Brokers = e.pool, e.kafka.Brokers
	if cfg.Logger == nil {
		cfg.Logger = testenv.Logger(t)
	}
	r, err := NewRelay(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			t.Errorf("relay: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return r, stop
}

// waitFor is testenv.WaitFor.
var waitFor = testenv.WaitFor

// versionsByKey returns, per record key, the aggregate versions in the order
// they were read (records of one key share a partition, and the collector
// keeps each partition's order).
func versionsByKey(t *testing.T, recs []*kgo.Record) map[string][]int64 {
	t.Helper()
	out := map[string][]int64{}
	for _, r := range recs {
		env, err := events.ParseEnvelope(r.Value)
		if err != nil {
			t.Fatalf("record at %s/%d@%d: %v", r.Topic, r.Partition, r.Offset, err)
		}
		out[string(r.Key)] = append(out[string(r.Key)], env.AggregateVersion)
	}
	return out
}

// checkOrder fails unless each key's versions, read in topic order, are
// 1..want[key] with nothing missing and nothing out of order; a version seen
// before may repeat (a redelivery), a version may never come early.
func checkOrder(t *testing.T, recs []*kgo.Record, want map[string]int64) (duplicates int) {
	t.Helper()
	got := versionsByKey(t, recs)
	for key, last := range want {
		var high int64
		for _, v := range got[key] {
			switch {
			case v == high+1:
				high = v
			case v <= high:
				duplicates++
			default:
				t.Errorf("key %s: version %d arrived after %d (order %v)", key, v, high, got[key])
				return duplicates
			}
		}
		if high != last {
			t.Errorf("key %s: reached version %d of %d (got %v)", key, high, last, got[key])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d keys on the topic, want %d", len(got), len(want))
	}
	return duplicates
}

var errCrash = errors.New("simulated crash")

func keyOf(i int) uuid.UUID { return uuid.MustParse(fmt.Sprintf("00000000-0000-4000-8000-%012d", i)) }
