package projector

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/testenv"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
	"github.com/eventsaga/eventsaga/pkg/outbox"
)

// A generation loaded in bulk and then switched to is the generation the
// normal projection makes of the same events, redeliveries and all: the same
// rows, counts and saga log (no event logged or counted twice), the same
// indexes and keys; and the normal projection goes on in it as in any other.
func TestBulkLoadIsTheNormalProjection(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Postgres(t, Migration())
	st := store{pool: pool}
	reg := events.NewRegistry()
	if err := registry(reg); err != nil {
		t.Fatal(err)
	}
	normal, err := st.current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bulk, err := st.startBulk(ctx)
	if err != nil {
		t.Fatal(err)
	}

	r := rand.New(rand.NewPCG(3, 4))
	orderStreams, customerStreams := history(r, 80)
	// The same events, redelivered at random, as two consumers might get
	// them, in batches of their own sizes.
	normalEvs := append(interleave(r, orderStreams), interleave(r, customerStreams)...)
	bulkEvs := append(interleave(r, orderStreams), interleave(r, customerStreams)...)
	apply := func(p projection, evs []Event) {
		t.Helper()
		for len(evs) > 0 {
			n := min(len(evs), 1+r.IntN(20))
			ds := deliveries(t, reg, evs[:n])
			if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return p.apply(ctx, tx, ds) }); err != nil {
				t.Fatal(err)
			}
			evs = evs[n:]
		}
	}
	apply(projection{registry: reg, gen: normal}, normalEvs)
	apply(projection{registry: reg, gen: bulk, bulk: true}, bulkEvs)
	if err := st.finishBulk(ctx, bulk); err != nil {
		t.Fatal(err)
	}
	if err := st.switchTo(ctx, bulk); err != nil {
		t.Fatal(err)
	}
	compareGenerations(t, pool, normal, bulk)
	if got := schema(t, pool, bulk); got != schema(t, pool, normal) {
		t.Errorf("the bulk-loaded generation's indexes and keys:\n%s\nwant, as a normal one's:\n%s", got, schema(t, pool, normal))
	}

	// After the switch, the running projector goes on in the generation:
	// more redeliveries, and each order moved on once more.
	var more []Event
	for _, s := range orderStreams {
		last := s[len(s)-1]
		if last.Data.EventType() == (orders.OrderCreated{}).EventType() {
			d := last.Data.(orders.OrderCreated)
			next := last
			next.Env.AggregateVersion++
			next.Env.OccurredAt = next.Env.OccurredAt.Add(time.Second)
			next.Env.EventType = (orders.OrderRejected{}).EventType()
			next.Data = orders.OrderRejected{OrderID: d.OrderID, CustomerID: d.CustomerID, Reason: orders.ReasonInsufficientCredit}
			more = append(more, last, next, next)
		}
	}
	apply(projection{registry: reg, gen: normal}, more)
	apply(projection{registry: reg, gen: bulk}, more)
	compareGenerations(t, pool, normal, bulk)
}

// deliveries makes deliveries of evs, as the consumer gives them.
func deliveries(t *testing.T, reg *events.Registry, evs []Event) []outbox.Delivery {
	t.Helper()
	ds := make([]outbox.Delivery, len(evs))
	for i, e := range evs {
		typ, sv, raw, err := reg.Encode(e.Data)
		if err != nil {
			t.Fatal(err)
		}
		env := e.Env
		env.EventType, env.SchemaVersion, env.Data = typ, sv, raw
		env.AggregateType = customers.AggregateType
		if strings.HasPrefix(typ, "Order") {
			env.AggregateType = orders.AggregateType
		}
		env.EventID = uuid.NewSHA1(env.AggregateID, []byte{byte(env.AggregateVersion)}) // the same event, the same ID
		ds[i] = outbox.Delivery{Envelope: env, Record: &kgo.Record{}}
	}
	return ds
}

// compareGenerations fails t unless generations a and b hold the same rows,
// each as often.
func compareGenerations(t *testing.T, pool interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, a, b generation) {
	t.Helper()
	for _, tables := range [][2]string{{a.orders(), b.orders()}, {a.customers(), b.customers()}, {a.sagaLog(), b.sagaLog()}} {
		var rows, differ int
		err := pool.QueryRow(context.Background(), `
SELECT (SELECT count(*) FROM `+tables[0]+`),
       (SELECT count(*) FROM ((TABLE `+tables[0]+` EXCEPT ALL TABLE `+tables[1]+`) UNION ALL (TABLE `+tables[1]+` EXCEPT ALL TABLE `+tables[0]+`)) d)`).Scan(&rows, &differ)
		if err != nil {
			t.Fatal(err)
		}
		if rows == 0 || differ != 0 {
			t.Errorf("%s and %s: %d rows, %d not in both", tables[0], tables[1], rows, differ)
		}
	}
}

// schema lists generation g's indexes and constraints, with its tables'
// names made alike.
func schema(t *testing.T, pool interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, g generation) string {
	t.Helper()
	var s string
	err := pool.QueryRow(context.Background(), `
SELECT string_agg(def, E'\n' ORDER BY def) FROM (
    SELECT indexdef AS def FROM pg_indexes WHERE tablename = ANY($1)
    UNION ALL
    SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid::regclass::text = ANY($1)
) d`, []string{g.orders(), g.customers(), g.sagaLog()}).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(s, fmt.Sprintf("_g%d", g), "_gN")
}
