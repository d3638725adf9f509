package outbox

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
)

// countingPlanner records each application of an event in the effects
// table (startCountingConsumer's), in the transaction's second round trip.
// Before its first write it lets "another instance" apply the batch's first
// event and commit, between the consumer's two round trips: the race the
// plain inbox INSERT must catch.
type countingPlanner struct {
	e     env
	raced atomic.Bool
}

func (p *countingPlanner) plan(_ context.Context, _ []Delivery, _ *pgx.Batch) (Plan, error) {
	return Plan{
		Read: func(pgx.BatchResults) error { return nil },
		Decide: func(ctx context.Context, fresh []Delivery, w *pgx.Batch) (func(pgx.BatchResults) error, error) {
			if p.raced.CompareAndSwap(false, true) {
				err := pgx.BeginFunc(ctx, p.e.pool, func(tx pgx.Tx) error {
					d := fresh[0]
					if _, err := tx.Exec(ctx, "INSERT INTO inbox (consumer_group, event_id) VALUES ($1, $2)", d.Record.Topic+"-group", d.Envelope.EventID); err != nil {
						return err
					}
					return recordEffect(ctx, tx, d)
				})
				if err != nil {
					return nil, err
				}
			}
			for _, d := range fresh {
				w.Queue("INSERT INTO effects (event_id, key, version) VALUES ($1, $2, $3)",
					d.Envelope.EventID, string(d.Record.Key), d.Envelope.AggregateVersion)
			}
			return func(br pgx.BatchResults) error {
				for range fresh {
					if _, err := br.Exec(); err != nil {
						return err
					}
				}
				return nil
			}, nil
		},
	}, nil
}

// An event applied by another transaction between the consumer's two round
// trips (a redelivery racing this one) fails the batch at its inbox row;
// tried again, the batch skips it: every event is applied once.
func TestPlannedBatchLosesARaceForItsInboxRowsAndSkipsTheEvent(t *testing.T) {
	e := newEnv(t, 1)
	for v := int64(1); v <= 5; v++ {
		e.produce(t, e.record(t, keyOf(1), v))
	}
	p := &countingPlanner{e: e}
	group := e.topic + "-group"
	c := e.startCountingConsumer(t, group, func(cfg *ConsumerConfig) {
		cfg.Handler, cfg.Planner = nil, p.plan
	})
	waitFor(t, 20*time.Second, "five events dealt with", func() bool {
		s := c.consumer.Stats()
		return s.Applied+s.Duplicates+s.DeadLettered >= 5
	})
	c.stop()
	if !p.raced.Load() {
		t.Fatal("the race was never run")
	}
	rows, distinct := c.counts(t)
	if rows != 5 || distinct != 5 {
		t.Errorf("%d effects of %d events; want each of the 5 applied once", rows, distinct)
	}
	if s := c.consumer.Stats(); s.Applied != 4 || s.Duplicates != 1 || s.DeadLettered != 0 {
		t.Errorf("stats %+v; want 4 applied here, 1 skipped as applied by the other", s)
	}
	if n := c.consumer.retries.Load(); n < 1 {
		t.Errorf("%d retries; want the batch that lost the race tried again", n)
	}
}

// roundTrips counts what a pool sends: batches, and statements on their own.
type roundTrips struct{ batches, statements atomic.Int64 }

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	r.statements.Add(1)
	return ctx
}
func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.batches.Add(1)
	return ctx
}
func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// A planned batch is two round trips: two batches sent, no statement on
// its own (no BEGIN, claim or COMMIT apart).
func TestPlannedBatchTakesTwoRoundTrips(t *testing.T) {
	e := newEnv(t, 1)
	var recs []*kgo.Record
	for v := int64(1); v <= 20; v++ {
		recs = append(recs, e.record(t, keyOf(1), v))
	}
	e.produce(t, recs...)
	cfg, err := pgxpool.ParseConfig(e.pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	var trips roundTrips
	cfg.ConnConfig.Tracer = &trips
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	p := &countingPlanner{e: e}
	p.raced.Store(true) // no race here
	var transactions atomic.Int64
	c := e.startCountingConsumer(t, e.kafka.Topic("trips"), func(cfg *ConsumerConfig) {
		cfg.Handler, cfg.Pool = nil, pool
		cfg.Planner = func(ctx context.Context, ds []Delivery, b *pgx.Batch) (Plan, error) {
			transactions.Add(1)
			return p.plan(ctx, ds, b)
		}
	})
	waitFor(t, 20*time.Second, "twenty events applied", func() bool { return c.consumer.Stats().Applied == 20 })
	c.stop()
	if n, b, s := transactions.Load(), trips.batches.Load(), trips.statements.Load(); b != 2*n || s != 0 {
		t.Errorf("%d transactions sent %d batches and %d statements on their own; want two batches each, nothing else", n, b, s)
	}
}
