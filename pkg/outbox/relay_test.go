package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eventsaga/eventsaga/internal/testenv"
)

// A transaction that drew the smallest outbox id commits after later ones
// were published. A relay that walks a cursor over ids skips it forever; this
// one must publish it, and keep its aggregate's versions in order.
func TestRelayPublishesRowCommittedOutOfIDOrder(t *testing.T) {
	e := newEnv(t, 4)
	ctx := context.Background()
	late := keyOf(0)

	slow, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback(ctx)
	if err := insert(ctx, slow, e.message(t, late, 1)); err != nil {
		t.Fatal(err)
	}

	want := map[string]int64{late.String(): 2}
	for i := 1; i <= 20; i++ {
		for v := int64(1); v <= 3; v++ {
			e.commit(t, e.message(t, keyOf(i), v))
		}
		want[keyOf(i).String()] = 3
	}
	var maxID int64
	_ = e.pool.QueryRow(ctx, "SELECT max(id) FROM outbox").Scan(&maxID)

	got := e.kafka.Collect(t, e.topic)
	e.startRelay(t, RelayConfig{PollInterval: 20 * time.Millisecond, BatchSize: 7})
	waitFor(t, 10*time.Second, "the 60 committed records", func() bool { return len(got.Records()) >= 60 })
	// The open transaction's row is invisible, so the relay sees an empty
	// outbox once it has deleted what it published.
	waitFor(t, 10*time.Second, "the published rows to be deleted", func() bool { return e.outboxRows(t) == 0 })

	// The held-open transaction commits now; its row has the smallest id of
	// all. Then the same aggregate moves on to version 2.
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	e.commit(t, e.message(t, late, 2))
	waitFor(t, 10*time.Second, "the late records", func() bool { return len(got.Records()) >= 62 })

	if dups := checkOrder(t, got.Records(), want); dups != 0 {
		t.Errorf("%d duplicates without any crash", dups)
	}
	t.Logf("the late row (smallest id) committed after ids up to %d were published", maxID)
}

// The relay stops after Kafka acknowledged a batch and before its rows were
// deleted. After a restart the batch is published again, and an inbox
// consumer applies every event exactly once.
func TestRelayCrashBetweenPublishAndDelete(t *testing.T) {
	e := newEnv(t, 3)
	want := map[string]int64{}
	for i := range 5 {
		for v := int64(1); v <= 10; v++ {
			e.commit(t, e.message(t, keyOf(i), v))
		}
		want[keyOf(i).String()] = 10
	}

	crashed := make(chan struct{})
	_, stop := e.startRelay(t, RelayConfig{
		BatchSize: 100,
		afterPublish: func(context.Context) error {
			close(crashed)
			return errCrash
		},
	})
	<-crashed
	stop()

	got := e.kafka.Collect(t, e.topic)
	waitFor(t, 10*time.Second, "the first publication", func() bool { return len(got.Records()) >= 50 })
	if n := e.outboxRows(t); n != 50 {
		t.Fatalf("%d outbox rows after the crash, want all 50 still there", n)
	}

	relay, _ := e.startRelay(t, RelayConfig{})
	waitFor(t, 10*time.Second, "the outbox to drain", func() bool { return e.outboxRows(t) == 0 })
	waitFor(t, 10*time.Second, "the second publication", func() bool { return len(got.Records()) >= 100 })
	if dups := checkOrder(t, got.Records(), want); dups != 50 {
		t.Errorf("%d duplicates on the topic, want 50 (the whole first batch)", dups)
	}
	waitFor(t, 10*time.Second, "the restarted relay to count its 50", func() bool { return relay.Published() >= 50 })
	if relay.Published() != 50 {
		t.Errorf("restarted relay published %d, want 50", relay.Published())
	}

	// The consumer sees every event twice and applies each once.
	applied := e.startCountingConsumer(t, e.kafka.Topic("crash-test"))
	waitFor(t, 20*time.Second, "the consumer to see all 100 records", func() bool {
		s := applied.consumer.Stats()
		return s.Applied+s.Duplicates >= 100
	})
	rows, distinct := applied.counts(t)
	if rows != 50 || distinct != 50 {
		t.Errorf("effects: %d rows for %d distinct events, want 50 and 50", rows, distinct)
	}
	if s := applied.consumer.Stats(); s.Applied != 50 || s.Duplicates != 50 {
		t.Errorf("consumer stats %+v, want 50 applied and 50 duplicates", s)
	}
}

// Two relays on one database: only one publishes. Stop it and the other
// takes over within a few seconds; nothing is lost and each key's order
// holds.
func TestTwoRelaysOneActiveAndTakeover(t *testing.T) {
	e := newEnv(t, 6)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Each relay gets its own pool, as if it ran in its own process.
	second, err := pgxpool.NewWithConfig(ctx, e.pool.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	a, stopA := e.startRelay(t, RelayConfig{PollInterval: 200 * time.Millisecond})
	eB := e
	eB.pool = second
	b, stopB := eB.startRelay(t, RelayConfig{PollInterval: 200 * time.Millisecond})
	defer stopB()

	// A writer appends the next version of one of 10 aggregates every 2ms.
	const keys = 10
	written := make(chan map[string]int64)
	go func() {
		versions := map[string]int64{}
		defer func() { written <- versions }()
		for i := 0; ctx.Err() == nil; i++ {
			k := keyOf(i % keys)
			m := e.message(t, k, versions[k.String()]+1)
			if err := insert(context.Background(), e.pool, m); err != nil {
				t.Errorf("writer: %v", err) // not Fatal: this is not the test's goroutine
				return
			}
			versions[k.String()]++
			time.Sleep(2 * time.Millisecond)
		}
	}()

	waitFor(t, 10*time.Second, "a leader", func() bool { return a.Leader() || b.Leader() })
	leader, standby, stopLeader := a, b, stopA
	if b.Leader() {
		leader, standby, stopLeader = b, a, stopB
	}
	waitFor(t, 10*time.Second, "the leader to publish", func() bool { return leader.Published() > 100 })
	if standby.Published() != 0 || standby.Leader() {
		t.Fatalf("standby published %d records (leader: %v)", standby.Published(), standby.Leader())
	}

	stopLeader()
	stoppedAt := time.Now()
	waitFor(t, 5*time.Second, "the standby to take over", func() bool { return standby.Published() > 0 })
	t.Logf("standby took over and published %v after the leader stopped", time.Since(stoppedAt))
	waitFor(t, 10*time.Second, "the standby to publish more", func() bool { return standby.Published() > 100 })

	cancel()
	want := <-written
	waitFor(t, 10*time.Second, "the outbox to drain", func() bool { return e.outboxRows(t) == 0 })
	var total int64
	for _, v := range want {
		total += v
	}
	got := e.kafka.Collect(t, e.topic)
	waitFor(t, 10*time.Second, "every record", func() bool { return int64(len(got.Records())) >= total })
	dups := checkOrder(t, got.Records(), want)
	t.Logf("%d records written, %d published by the first leader, %d by the second, %d duplicates", total, leader.Published(), standby.Published(), dups)
}

// With a poll interval far longer than the test, records still arrive: the
// relay wakes on NOTIFY.
func TestRelayWakesOnNotify(t *testing.T) {
	e := newEnv(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := NewNotifier(e.pool, "", nil)
	go n.Run(ctx)
	r, _ := e.startRelay(t, RelayConfig{PollInterval: time.Hour})
	waitFor(t, 10*time.Second, "leadership", r.Leader)
	// The relay looked once when it became leader, found nothing, and now
	// waits for a notification for up to an hour.
	got := e.kafka.Collect(t, e.topic)
	for v := int64(1); v <= 3; v++ {
		e.commit(t, e.message(t, keyOf(1), v))
		n.Notify()
		waitFor(t, 10*time.Second, "the notified record", func() bool { return len(got.Records()) == int(v) })
	}
}

// Rows Kafka does not acknowledge stay in the outbox and are published once
// Kafka takes them; the rows around them are not held back.
func TestRelayKeepsRowsKafkaRefused(t *testing.T) {
	e := newEnv(t, 2)
	missing := e.kafka.Topic("not.yet.created")
	bad := e.message(t, keyOf(99), 1)
	bad.Topic = missing
	e.commit(t, e.message(t, keyOf(1), 1), bad, e.message(t, keyOf(2), 1))

	got := e.kafka.Collect(t, e.topic)
	e.startRelay(t, RelayConfig{PollInterval: 50 * time.Millisecond, ClientOpts: []kgo.Opt{kgo.UnknownTopicRetries(1)}})
	waitFor(t, 20*time.Second, "the two good records", func() bool { return len(got.Records()) == 2 })
	waitFor(t, 20*time.Second, "the refused row to be all that is left", func() bool { return e.outboxRows(t) == 1 })
	var topic string
	if err := e.pool.QueryRow(context.Background(), "SELECT topic FROM outbox").Scan(&topic); err != nil || topic != missing {
		t.Fatalf("row left: %q, %v", topic, err)
	}

	e.kafka.CreateTopics(t, 1, missing)
	waitFor(t, 20*time.Second, "the refused row to be published", func() bool { return e.outboxRows(t) == 0 })
	if recs := e.kafka.ReadAll(t, missing, 1, 10*time.Second); len(recs) != 1 || string(recs[0].Key) != keyOf(99).String() {
		t.Errorf("%d records on %s", len(recs), missing)
	}
}

// An oversized message is refused, and the messages beside it with it:
// nothing is written.
func TestInsertRefusesOversizedMessage(t *testing.T) {
	e := newEnv(t, 1)
	m := e.message(t, keyOf(1), 1)
	m.Value = make([]byte, MaxMessageBytes)
	if err := insert(context.Background(), e.pool, e.message(t, keyOf(2), 1), m); !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("oversized message: %v", err)
	}
	if n := e.outboxRows(t); n != 0 {
		t.Errorf("%d rows", n)
	}
}

// A relay in the writer's process is woken directly: with no NOTIFY sent
// (the notifier's Run is not running) and an hour-long poll, records still
// arrive, again and again on the same connection.
func TestRelayWokenInProcess(t *testing.T) {
	e := newEnv(t, 1)
	r, _ := e.startRelay(t, RelayConfig{PollInterval: time.Hour})
	n := NewNotifier(e.pool, "", nil)
	n.SetLocalRelay(r)
	waitFor(t, 10*time.Second, "leadership", r.Leader)
	got := e.kafka.Collect(t, e.topic)
	// Many rounds: a wake lost to a race would leave the relay waiting for
	// its hour-long poll.
	for v := int64(1); v <= 200; v++ {
		e.commit(t, e.message(t, keyOf(1), v))
		n.Notify()
		waitFor(t, 10*time.Second, "the woken relay's record", func() bool { return len(got.Records()) == int(v) })
	}
	if len(n.kick) != 0 {
		t.Error("a NOTIFY was asked for although the local relay leads")
	}
}

// A pass sends its records at once: it does not wait for the producer's
// linger (kgo's default is 10 ms; here a minute, so that waiting for it
// shows), which a saga would pay at each of its relay hops.
func TestRelaySendsAPassWithoutLingering(t *testing.T) {
	e := newEnv(t, 1)
	r, _ := e.startRelay(t, RelayConfig{PollInterval: time.Hour, ClientOpts: []kgo.Opt{kgo.ProducerLinger(time.Minute)}})
	n := NewNotifier(e.pool, "", nil)
	n.SetLocalRelay(r)
	waitFor(t, 10*time.Second, "leadership", r.Leader)
	got := e.kafka.Collect(t, e.topic)
	for v := int64(1); v <= 3; v++ {
		e.commit(t, e.message(t, keyOf(1), v))
		n.Notify()
		waitFor(t, 10*time.Second, "the record, before the linger of a minute", func() bool { return len(got.Records()) == int(v) })
	}
}

// The relay reads and deletes outbox rows by their key, however small the
// outbox's statistics make it look: a queue's dead rows make a scan dear.
func TestRelayReadsTheOutboxByItsKey(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 1)
	for v := int64(1); v <= 200; v++ {
		e.commit(t, e.message(t, keyOf(1), v))
	}
	// The queue's usual shape: most rows published and deleted, the table
	// analyzed small.
	if _, err := e.pool.Exec(ctx, `DELETE FROM outbox WHERE id NOT IN (SELECT id FROM outbox ORDER BY id DESC LIMIT 10)`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `ANALYZE outbox`); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, relayConnConfig(e.pool))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, sql := range []string{selectBatch, deleteAcked} {
		// The generic plan, which a statement kept for the session gets.
		res, err := conn.PgConn().Exec(ctx, "EXPLAIN (GENERIC_PLAN) "+sql).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for _, row := range res[0].Rows {
			plan = append(plan, string(row[0]))
		}
		if got := strings.Join(plan, "\n"); strings.Contains(got, "Seq Scan") || !strings.Contains(got, "outbox_pkey") {
			t.Errorf("the relay's %s is not planned as a probe of outbox_pkey:\n%s", strings.Fields(sql)[0], got)
		}
	}
}

// silentKafka is a cluster of its own whose produce requests can be made
// to go unanswered, as when a broker hangs or the network drops replies.
type silentKafka struct {
	env
	silent    atomic.Bool
	swallowed atomic.Int32
}

func newSilentKafka(t *testing.T) *silentKafka {
	testenv.NeedsKfake(t, "produce requests left unanswered")
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "things.events"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	k := &silentKafka{env: env{pool: testenv.Postgres(t, Migration()), kafka: &testenv.Kafka{Brokers: c.ListenAddrs()}, topic: "things.events"}}
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !k.silent.Load() {
			return nil, nil, false
		}
		k.swallowed.Add(1)
		return nil, nil, true // no answer at all
	})
	return k
}

// A relay whose batch Kafka never answers still stops when told to,
// promptly, leaving the rows for the next start.
func TestRelayStopsWhileKafkaDoesNotAnswer(t *testing.T) {
	k := newSilentKafka(t)
	k.silent.Store(true)
	_, stop := k.startRelay(t, RelayConfig{PublishTimeout: time.Hour})
	k.commit(t, k.message(t, keyOf(1), 1), k.message(t, keyOf(1), 2))
	waitFor(t, 10*time.Second, "a produce request to go unanswered", func() bool { return k.swallowed.Load() > 0 })

	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not stop within 10s while Kafka was silent")
	}
	if n := k.outboxRows(t); n != 2 {
		t.Errorf("%d rows left, want both", n)
	}
}

// A batch that Kafka does not acknowledge within PublishTimeout ends the
// relay's session, releasing the lock for another relay; once Kafka answers
// again, everything is published.
func TestRelayGivesUpOnAStuckBatch(t *testing.T) {
	k := newSilentKafka(t)
	k.silent.Store(true)
	r, _ := k.startRelay(t, RelayConfig{PublishTimeout: 300 * time.Millisecond, PollInterval: 50 * time.Millisecond})
	waitFor(t, 10*time.Second, "leadership", r.Leader)
	k.commit(t, k.message(t, keyOf(1), 1), k.message(t, keyOf(1), 2))
	waitFor(t, 10*time.Second, "the stuck session to give up its lock", func() bool { return !r.Leader() })

	k.silent.Store(false)
	waitFor(t, 20*time.Second, "the rows to be published after all", func() bool { return k.outboxRows(t) == 0 })
	if recs := k.kafka.ReadAll(t, k.topic, 2, 10*time.Second); len(recs) < 2 {
		t.Errorf("%d records on the topic", len(recs))
	}
}

// Many messages inserted in one statement keep their order and each its own
// headers, however many it has (none too).
func TestInsertManyKeepsOrderAndHeaders(t *testing.T) {
	e := newEnv(t, 1)
	agg := keyOf(7)
	var msgs []Message
	for v := int64(1); v <= 5; v++ {
		m := e.message(t, agg, v)
		m.Headers = nil
		for h := int64(0); h < v%3; h++ {
			m.Headers = append(m.Headers, Header{Key: fmt.Sprintf("h%d", h), Value: fmt.Appendf(nil, "v%d-%d", v, h)})
		}
		msgs = append(msgs, m)
	}
	e.commit(t, msgs...)

	got := e.kafka.Collect(t, e.topic)
	e.startRelay(t, RelayConfig{PollInterval: 20 * time.Millisecond})
	waitFor(t, 10*time.Second, "the 5 records", func() bool { return len(got.Records()) >= 5 })
	recs := got.Records()
	if len(recs) != 5 {
		t.Fatalf("%d records, want 5", len(recs))
	}
	for i, r := range recs {
		if string(r.Value) != string(msgs[i].Value) {
			t.Errorf("record %d is not message %d", i, i)
		}
		var hs []Header
		for _, h := range r.Headers {
			hs = append(hs, Header{Key: h.Key, Value: h.Value})
		}
		if fmt.Sprint(hs) != fmt.Sprint(msgs[i].Headers) {
			t.Errorf("record %d headers %v, want %v", i, hs, msgs[i].Headers)
		}
	}
}

// On a server that does not vacuum (autovacuum off, as on the CI machine),
// the relay vacuums the outbox after every VacuumEvery deleted rows.
func TestRelayVacuumsOutboxWhenServerWillNot(t *testing.T) {
	e := newEnv(t, 2)
	ctx := context.Background()
	var autovacuum string
	if err := e.pool.QueryRow(ctx, "SELECT current_setting('autovacuum')").Scan(&autovacuum); err != nil {
		t.Fatal(err)
	}
	if autovacuum == "on" {
		t.Skip("this server runs autovacuum; the relay leaves the outbox to it")
	}
	vacuums := func() (n int64) {
		_ = e.pool.QueryRow(ctx, "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox'").Scan(&n)
		return n
	}
	before := vacuums()
	got := e.kafka.Collect(t, e.topic)
	e.startRelay(t, RelayConfig{PollInterval: 20 * time.Millisecond, BatchSize: 40, VacuumEvery: 100})
	for i := range 250 {
		e.commit(t, e.message(t, keyOf(i), 1))
	}
	waitFor(t, 10*time.Second, "the 250 records", func() bool { return len(got.Records()) >= 250 })
	waitFor(t, 10*time.Second, "the relay's vacuums", func() bool { return vacuums() >= before+2 })
}
