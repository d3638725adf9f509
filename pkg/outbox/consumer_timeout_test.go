package outbox

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/testenv"
)

// A consumer whose database is down while it has a poll in hand does not
// hold up the group's rebalance: when a second member joins, the first lets
// go of its partitions within a heartbeat or two, inside the rebalance
// timeout (10 s), instead of being put out of the group when it runs out.
// The second member gets partitions and applies their records; the first,
// its database back, applies the records of the partitions it kept, which it
// had polled before letting go; every event is applied once.
//
// The database is down before the first member's first transaction, so that
// every partition still has records when the second member joins. Until
// 2026-12-02 it went down under that transaction: the other partitions'
// transactions, run in parallel, had often committed by then, and when the
// cooperative-sticky assignor gave the second member two of those, it had
// nothing to apply (its offsets started at the partitions' ends) and the
// test failed about one run in three, although the rebalance had completed
// in a second. Kafka's log at info level showed it.
func TestConsumerWithItsDatabaseDownDoesNotHoldARebalance(t *testing.T) {
	testenv.NeedsKfake(t, "times a rebalance against kfake's group coordinator")
	url := testenv.Database(t, Migration())
	e := env{pool: newPool(t, url, nil), kafka: testenv.NewKafka(t)}
	e.topic = e.kafka.Topic("things.events")
	e.kafka.CreateTopics(t, 4, e.topic)
	const n = 40
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, e.record(t, keyOf(i), 1))
	}
	e.produce(t, recs...)

	// The first member's pool hands out no connection while down.
	var down atomic.Bool
	down.Store(true)
	poolA := newPool(t, url, func(context.Context, *pgx.Conn) (bool, error) {
		if down.Load() {
			return false, errors.New("database down (test)")
		}
		return true, nil
	})
	logA := newLogLines(testenv.Logger(t))
	group := e.kafka.Topic("rebalance-test")
	a := e.startCountingConsumer(t, group, func(cfg *ConsumerConfig) {
		cfg.Pool, cfg.Logger = poolA, logA.logger
	})
	waitFor(t, 20*time.Second, "the first member to hold its partitions", func() bool {
		return logA.has("database unavailable; holding the partition")
	})

	joined := time.Now()
	b := e.startCountingConsumer(t, group, func(cfg *ConsumerConfig) {
		// A fetch waits up to 5 s for records by default: one sent for
		// the partition that had none would hold up the other's.
		cfg.ClientOpts = []kgo.Opt{kgo.FetchMaxWait(200 * time.Millisecond)}
	})
	// Held to its end, the rebalance would wait 10 s for the first member.
	waitFor(t, 7*time.Second, "the second member to apply records", func() bool { return b.consumer.Stats().Applied > 0 })
	t.Logf("the second member applied records %v after joining", time.Since(joined).Round(time.Millisecond))
	if !logA.has("a rebalance is waiting: let go of the partitions held while the database is unavailable") {
		t.Error("the first member did not log that it let go of the partitions it held")
	}
	desc, err := kadm.NewClient(e.kafka.Client(t)).DescribeGroups(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	if m := len(desc[group].Members); m != 2 {
		t.Errorf("the group has %d members, want 2: the first member was put out of it", m)
	}

	down.Store(false)
	waitFor(t, 30*time.Second, "every event", func() bool {
		_, distinct := a.counts(t)
		return distinct == n
	})
	if rows, distinct := a.counts(t); rows != n || distinct != n {
		t.Errorf("effects: %d rows, %d distinct; want %d and %d", rows, distinct, n, n)
	}
	if sa, sb := a.consumer.Stats(), b.consumer.Stats(); sa.Applied == 0 || sa.Applied+sb.Applied != n || sa.DeadLettered+sb.DeadLettered != 0 {
		t.Errorf("first member %+v, second %+v: want %d applied between them, some by each, none dead-lettered", sa, sb, n)
	}
}

// A stalled database (a lock held on the inbox) does not freeze a
// consumer's transaction: it gives up after TxTimeout, and the records are
// held, not counted as failing, while the stall lasts, however many times
// MaxAttempts that is; once it ends they are applied, none dead-lettered.
func TestConsumerWaitsOutAStalledDatabase(t *testing.T) {
	e := newEnv(t, 1)
	key := keyOf(1)
	ctx := context.Background()
	lock, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, "LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	e.produce(t, e.record(t, key, 1), e.record(t, key, 2), e.record(t, key, 3))

	log := newLogLines(testenv.Logger(t))
	c := e.startCountingConsumer(t, e.kafka.Topic("stall-test"), func(cfg *ConsumerConfig) {
		cfg.Logger, cfg.TxTimeout, cfg.MaxAttempts = log.logger, 200*time.Millisecond, 2
	})
	waitFor(t, 20*time.Second, "transactions to give up, more often than MaxAttempts", func() bool {
		return log.count("given up after 200ms") > 4 && log.has("database unavailable; holding the partition")
	})
	if s := c.consumer.Stats(); s.Applied != 0 || s.DeadLettered != 0 {
		t.Fatalf("during the stall: %+v", s)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the records", func() bool { return c.consumer.Stats().Applied == 3 })
	if rows, distinct := c.counts(t); rows != 3 || distinct != 3 || c.consumer.Stats().DeadLettered != 0 {
		t.Errorf("effects %d rows, %d distinct, stats %+v; want 3 applied once", rows, distinct, c.consumer.Stats())
	}
}

// newPool opens a pool on url; prepare, if not nil, is its PrepareConn.
func newPool(t *testing.T, url string, prepare func(context.Context, *pgx.Conn) (bool, error)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns, cfg.PrepareConn = 32, prepare
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// logLines keeps the messages logged through its logger, and passes them
// on to the logger it was made from.
type logLines struct {
	logger *slog.Logger
	mu     sync.Mutex
	msgs   []string
}

func newLogLines(next *slog.Logger) *logLines {
	l := &logLines{}
	l.logger = slog.New(keepHandler{next: next.Handler(), keep: l})
	return l
}

// has reports a message containing s, attributes included.
func (l *logLines) has(s string) bool { return l.count(s) > 0 }

// count is how many messages contain s, attributes included.
func (l *logLines) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.Contains(m, s) {
			n++
		}
	}
	return n
}

type keepHandler struct {
	next slog.Handler
	keep *logLines
}

func (h keepHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h keepHandler) Handle(ctx context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	h.keep.mu.Lock()
	h.keep.msgs = append(h.keep.msgs, b.String())
	h.keep.mu.Unlock()
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h keepHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return keepHandler{next: h.next.WithAttrs(as), keep: h.keep}
}

func (h keepHandler) WithGroup(name string) slog.Handler {
	return keepHandler{next: h.next.WithGroup(name), keep: h.keep}
}
