package order

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/platform"
	"github.com/eventsaga/eventsaga/internal/testenv"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/pkg/outbox"
)

func TestLoadConfigDeadline(t *testing.T) {
	for value, want := range map[string]time.Duration{"": DefaultDeadline, "  ": DefaultDeadline, "45s": 45 * time.Second, "1m30s": 90 * time.Second, "500ms": 500 * time.Millisecond} {
		cfg, err := LoadConfig(func(k string) string { return map[string]string{"ORDER_DEADLINE": value}[k] })
		if err != nil || cfg.Deadline != want {
			t.Errorf("ORDER_DEADLINE=%q: %v, %v; want %v", value, cfg.Deadline, err, want)
		}
	}
	for _, value := range []string{"30", "ten", "-5s", "0s", "0"} {
		_, err := LoadConfig(func(k string) string { return map[string]string{"ORDER_DEADLINE": value}[k] })
		if err == nil || !strings.Contains(err.Error(), "ORDER_DEADLINE") {
			t.Errorf("ORDER_DEADLINE=%q: %v; want an error naming the variable", value, err)
		}
	}
}

// Two instances on one database sweep for overdue orders, two sweeps each at
// once, while the saga's credit decisions arrive for half of the orders:
// every order ends decided exactly once (version 2), the young one stays
// PENDING, and no sweep or decision fails for anything but a lost race.
func TestDeadlineRacesDecideOnce(t *testing.T) {
	ctx := context.Background()
	k, db := testenv.NewKafka(t), testenv.Database(t)
	start := func() *Service {
		cfg := Config{Config: platform.Config{
			DatabaseURL: db, KafkaBrokers: k.Brokers, HTTPAddr: "127.0.0.1:0",
			OrdersTopic: "orders.events", CustomersTopic: "customers.events", ShutdownTimeout: time.Second,
			ConsumerGroup: "order-service", SnapshotEvery: 100,
		}, Deadline: time.Minute}
		s, err := New(ctx, cfg, testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.bb.Pool.Close)
		return s
	}
	a, b := start(), start()

	const n = 1200
	ids := make([]uuid.UUID, n)
	customer := uuid.New()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				p, err := []*Service{a, b}[i%2].Place(ctx, PlaceOrder{CustomerID: customer, Items: []orders.Item{{ProductID: "p", Quantity: 1, UnitPrice: 100}}})
				if err != nil {
					t.Error(err)
					return
				}
				ids[i] = p.OrderID
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	young, cancelled, credited := ids[0], ids[1:11], ids[11:600]
	for _, id := range cancelled {
		if _, err := b.Cancel(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
	}
	if got := pendingRows(t, a); got != n-len(cancelled) {
		t.Fatalf("%d pending rows after placing %d orders and cancelling %d", got, n, len(cancelled))
	}
	// Every deadline but the young order's is past.
	if _, err := a.bb.Pool.Exec(ctx, `UPDATE pending_orders SET placed_at = now() - interval '1 hour' WHERE order_id <> $1`, young); err != nil {
		t.Fatal(err)
	}

	var races atomic.Int64
	sweeper := func(s *Service) {
		for {
			claimed, err := s.rejectOverdue(ctx)
			switch {
			case err != nil && !lostRace(err):
				t.Errorf("sweep: %v", err)
				return
			case err != nil:
				races.Add(1)
			case claimed == 0:
				return
			}
		}
	}
	for _, s := range []*Service{a, b, a, b} {
		wg.Go(func() { sweeper(s) })
	}
	wg.Go(func() { creditAll(t, a, credited) })
	wg.Wait()
	sweeper(a) // what a lost race left behind
	if got := pendingRows(t, a); got != 1 {
		t.Errorf("%d pending rows at the end; want only the young order's", got)
	}

	isCredited := map[uuid.UUID]bool{}
	for _, id := range credited {
		isCredited[id] = true
	}
	outcomes := map[string]int{}
	for _, id := range ids {
		v, err := a.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		reason := ""
		if v.RejectionReason != nil {
			reason = *v.RejectionReason
		}
		outcome := v.Status + " " + reason
		outcomes[outcome]++
		switch {
		case id == young:
			if v.Status != orders.StatusPending || v.Version != 1 {
				t.Errorf("the young order: %s v%d", outcome, v.Version)
			}
		case v.Version != 2:
			t.Errorf("order %s: %s at version %d; want one decision, version 2", id, outcome, v.Version)
		case v.Status == orders.StatusApproved && !isCredited[id]:
			t.Errorf("order %s approved without credit", id)
		case v.Status == orders.StatusRejected && reason != orders.ReasonDeadlineExceeded:
			t.Errorf("order %s: %s", id, outcome)
		}
	}
	if outcomes["REJECTED DEADLINE_EXCEEDED"] < n-1-len(cancelled)-len(credited) {
		t.Errorf("outcomes %v", outcomes)
	}
	t.Logf("outcomes %v; sweeps that lost a race: %d", outcomes, races.Load())

	// A rejection for the deadline is caused by the OrderCreated.
	last := ids[n-1]
	evs, err := a.Events(ctx, last)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[1].EventType != "OrderRejected" || evs[1].CausationID != evs[0].EventID || evs[1].CorrelationID != last {
		t.Errorf("events of %s: %+v", last, evs)
	}
}

// creditAll applies a CreditReserved for each of ids, as the saga's consumer
// would, in batches of 50 in shuffled order, retrying what loses a race.
func creditAll(t *testing.T, s *Service, ids []uuid.UUID) {
	ctx := context.Background()
	ids = append([]uuid.UUID(nil), ids...)
	rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	for len(ids) > 0 {
		batch := ids[:min(50, len(ids))]
		ids = ids[len(batch):]
		ds := make([]outbox.Delivery, len(batch))
		for i, id := range batch {
			data, _ := json.Marshal(customers.CreditReserved{CustomerID: uuid.New(), OrderID: id, Amount: 100})
			ds[i] = outbox.Delivery{Record: &kgo.Record{}, Envelope: events.Envelope{
				EventID: uuid.New(), EventType: "CreditReserved", SchemaVersion: 1, AggregateType: customers.AggregateType,
				AggregateID: uuid.New(), AggregateVersion: 1, OccurredAt: time.Now(), CorrelationID: id, CausationID: uuid.New(), Data: data,
			}}
		}
		err := eventstore.Retry(ctx, 20, func(ctx context.Context) error {
			return pgx.BeginFunc(ctx, s.bb.Pool, func(tx pgx.Tx) error { return outbox.PlannerInTx(s.planCreditDecisions)(ctx, tx, ds) })
		})
		if err != nil && !errors.Is(err, eventstore.ErrConflict) {
			t.Errorf("credit decisions: %v", err)
			return
		}
	}
}

func pendingRows(t *testing.T, s *Service) int {
	t.Helper()
	var n int
	if err := s.bb.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pending_orders`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// pending_orders is a queue: a few live rows among dead ones, small enough
// by its statistics that a plain DELETE … IN (SELECT … SKIP LOCKED) was
// planned as two scans of the whole table, dead rows and all (2-6 ms a call
// at 250 sagas/s). Ending deadlines must probe the key whatever the
// statistics say, and still skip the rows a sweep holds.
func TestForgettingDeadlinesProbesTheKey(t *testing.T) {
	ctx := context.Background()
	pool := orderDB(t)
	ids := make([][16]byte, 200)
	for i := range ids {
		ids[i] = uuid.New()
		if _, err := pool.Exec(ctx, insertPending, ids[i], uuid.New()); err != nil {
			t.Fatal(err)
		}
	}
	// The queue's usual shape: most rows dead, the table analyzed small.
	if _, err := pool.Exec(ctx, `DELETE FROM pending_orders WHERE order_id = ANY($1)`, ids[20:]); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE pending_orders`); err != nil {
		t.Fatal(err)
	}

	// A sweep holds one of the rows to forget.
	sweep, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sweep.Rollback(ctx)
	if _, err := sweep.Exec(ctx, `SELECT 1 FROM pending_orders WHERE order_id = $1 FOR UPDATE`, ids[0]); err != nil {
		t.Fatal(err)
	}

	conn, plans := explaining(t, pool)
	var forgotten int
	// Several calls: the plan kept for the session is the one that counts.
	for i, batch := range [][][16]byte{ids[0:4], ids[4:8], ids[8:12], ids[12:16], ids[16:19], ids[19:20]} {
		var n int
		if err := conn.QueryRow(ctx, forgetPending, batch).Scan(&n); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		forgotten += n
	}
	if forgotten != 19 {
		t.Errorf("forgot %d deadlines; want 19 (20 pending, one held by a sweep)", forgotten)
	}
	var left []uuid.UUID
	rows, _ := pool.Query(ctx, `SELECT order_id FROM pending_orders`)
	if left, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID]); err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0] != ids[0] {
		t.Errorf("pending after forgetting: %v; want only the row the sweep holds, %v", left, uuid.UUID(ids[0]))
	}
	got := plans.String()
	if strings.Contains(got, "Seq Scan on pending_orders") || !strings.Contains(got, "pending_orders_pkey") {
		t.Errorf("forgetting deadlines does not probe the primary key:\n%s", got)
	}
}

// The saga's latency metric reads when each decided order was created and
// decided; on a young events table a plain statement kept a plan that
// scanned the whole table as it grew (4.6 → 22.8 ms a call over a minute at
// 250 sagas/s). It must probe the key, and read the right events.
func TestDecisionTimesProbeTheKey(t *testing.T) {
	ctx := context.Background()
	pool := orderDB(t)
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ids := make([][16]byte, 20)
	for i := range ids {
		ids[i] = uuid.New()
		for v := int64(1); v <= 2; v++ {
			if _, err := pool.Exec(ctx, `INSERT INTO events (aggregate_id, version, aggregate_type, event_id, event_type,
				schema_version, occurred_at, correlation_id, causation_id, data) VALUES ($1, $2, 'order', $3, 'E', 1, $4, $1, $3, '{}')`,
				ids[i], v, uuid.New(), base.Add(time.Duration(i)*time.Minute+time.Duration(v)*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := pool.Exec(ctx, `ANALYZE events`); err != nil { // small: a scan looks cheapest
		t.Fatal(err)
	}
	conn, plans := explaining(t, pool)
	for i := range 6 { // the plan kept for the session is the one that counts
		batch := ids[3*i : 3*i+2]
		rows, _ := conn.Query(ctx, decisionTimes, batch, []int64{2, 2})
		got := map[uuid.UUID][2]time.Time{}
		var id uuid.UUID
		var created, decided time.Time
		if _, err := pgx.ForEachRow(rows, []any{&id, &created, &decided}, func() error {
			got[id] = [2]time.Time{created, decided}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for j, want := range batch {
			at := base.Add(time.Duration(3*i+j) * time.Minute)
			if g := got[want]; !g[0].Equal(at.Add(time.Second)) || !g[1].Equal(at.Add(2*time.Second)) {
				t.Errorf("order %d: created %v, decided %v; want %v and %v", 3*i+j, g[0], g[1], at.Add(time.Second), at.Add(2*time.Second))
			}
		}
	}
	if got := plans.String(); strings.Contains(got, "Seq Scan on events") || !strings.Contains(got, "events_pkey") {
		t.Errorf("reading decision times does not probe the primary key:\n%s", got)
	}
}

// orderDB is a new database with the event store's and the order
// service's tables.
func orderDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := platform.OpenDB(context.Background(), testenv.Database(t), nil, eventstore.Migration(), Migration())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// explaining returns a connection to pool's database whose statements'
// plans, and those of the functions they call, auto_explain writes to plans.
func explaining(t *testing.T, pool *pgxpool.Pool) (*pgx.Conn, *testenv.Buffer) {
	t.Helper()
	ctx := context.Background()
	cfg := pool.Config().ConnConfig.Copy()
	plans := &testenv.Buffer{}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { fmt.Fprintln(plans, n.Message) }
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	for _, sql := range []string{"LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
		"SET auto_explain.log_nested_statements = on", "SET client_min_messages = log"} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	return conn, plans
}
