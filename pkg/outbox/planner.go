package outbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/pkg/events"
)

// A Planner applies a batch of events in two round trips to the database,
// where a BatchHandler's transaction takes five (BEGIN, the inbox claim,
// the handler's load, its writes, COMMIT):
//
//  1. BEGIN, which of the batch's events the inbox has already, and the
//     reads Load queues (an event-sourced handler: the locks and the loads
//     of the aggregates it will decide on);
//  2. the inbox rows of the events not applied before, the writes Decide
//     queues for them (the events and outbox rows of its decisions, and
//     anything else that must commit with them), and COMMIT.
//
// The inbox rows are plain INSERTs: an event that another transaction
// applied between the two round trips (a redelivery to the group's next
// owner, racing this one) fails the transaction at its inbox row, and the
// batch is tried again, when the first round trip sees it applied. So an
// event is applied once, as with the claim-first transaction.
//
// A batch that replays dead letters goes through the claim-first
// transaction, with the Plan's two steps one after the other in it.
type Planner func(ctx context.Context, ds []Delivery, b *pgx.Batch) (Plan, error)

// Plan is what a Planner queued for a batch: how to read it, and how to
// decide on the batch's fresh events.
//
// A Planner queues into b the reads that deciding on ds needs (ds may hold
// events applied before: the consumer learns which in the same round
// trip). An error from it fails the batch before anything is sent.
type Plan struct {
	// Read reads the results of what the Planner queued, once b is sent
	// (in the order they were queued).
	Read func(pgx.BatchResults) error
	// Decide queues into w the writes of applying fresh, the events of ds
	// not applied before, in order; they commit with the inbox rows. It
	// returns the function that reads their results once w is sent, which
	// returns the first failure. OnCommit works with ctx, as with a
	// BatchHandler.
	Decide func(ctx context.Context, fresh []Delivery, w *pgx.Batch) (read func(pgx.BatchResults) error, err error)
}

// PlannerInTx runs a Planner's two steps one after the other within tx: how
// the consumer applies the batches the two round trips do not cover (it
// opened tx and claimed the events in it), and how a test applies a batch
// in a transaction of its own.
func PlannerInTx(p Planner) BatchHandler {
	return func(ctx context.Context, tx pgx.Tx, ds []Delivery) error {
		var b pgx.Batch
		plan, err := p(ctx, ds, &b)
		if err != nil {
			return err
		}
		if err := sendAndRead(ctx, tx, &b, plan.Read); err != nil {
			return err
		}
		var w pgx.Batch
		readW, err := plan.Decide(ctx, ds, &w)
		if err != nil {
			return err
		}
		return sendAndRead(ctx, tx, &w, readW)
	}
}

func sendAndRead(ctx context.Context, tx pgx.Tx, b *pgx.Batch, read func(pgx.BatchResults) error) error {
	if b.Len() == 0 {
		return nil
	}
	br := tx.SendBatch(ctx, b)
	err := read(br)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// selectApplied returns which of the events the group has in its inbox,
// applied or dead-lettered: neither is applied again (a dead letter only by
// a replay, which takes the claim-first path).
const selectApplied = `SELECT event_id FROM inbox WHERE consumer_group = $1 AND event_id = ANY($2::uuid[])`

// insertApplied records the events as applied. No ON CONFLICT: a row
// another transaction wrote since the first round trip fails this one.
const insertApplied = `INSERT INTO inbox (consumer_group, event_id) SELECT $1, unnest($2::uuid[])`

// errInboxRace is a transaction that lost its inbox rows to another that
// applied the same events in the meantime: trying again finds them applied.
var errInboxRace = errors.New("an event of the batch was applied by another transaction meanwhile")

// applyPlanned applies recs with the Planner in two round trips (see
// Planner), on a connection of its own for the transaction's span, and
// returns the deliveries it applied. deliveries picks them given which
// events are fresh.
func (c *Consumer) applyPlanned(ctx context.Context, recs []*kgo.Record, envs []events.Envelope, ids [][16]byte, deliveries func(map[[16]byte]bool) []Delivery) ([]Delivery, error) {
	conn, err := c.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	// A connection left in a transaction (a failure between the two round
	// trips, a lost answer) is rolled back here, or closed if that fails:
	// the pool must not hand it out again mid-transaction.
	defer func() {
		if conn.Conn().PgConn().TxStatus() != 'I' {
			rollback(conn)
		}
		conn.Release()
	}()

	all := make([]Delivery, len(recs))
	for i, rec := range recs {
		all[i] = Delivery{Envelope: envs[i], Record: rec}
	}
	var b pgx.Batch
	b.Queue("BEGIN")
	b.Queue(selectApplied, c.cfg.Group, ids)
	plan, err := c.cfg.Planner(ctx, all, &b)
	if err != nil {
		return nil, batchError(all, err)
	}
	fresh := make(map[[16]byte]bool, len(ids))
	br := conn.SendBatch(ctx, &b)
	err = func() error {
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		rows, _ := br.Query()
		applied, err := pgx.CollectRows(rows, pgx.RowTo[[16]byte])
		if err != nil {
			return fmt.Errorf("look up the inbox: %w", err)
		}
		for _, id := range ids {
			fresh[id] = true
		}
		for _, id := range applied {
			delete(fresh, id)
		}
		return plan.Read(br)
	}()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}

	claimed := make([][16]byte, 0, len(fresh))
	for id := range fresh {
		claimed = append(claimed, id)
	}
	// Sorted, so that two transactions inserting some of the same rows
	// wait for each other in one order and never deadlock.
	slices.SortFunc(claimed, func(a, b [16]byte) int { return slices.Compare(a[:], b[:]) })
	ds := deliveries(fresh)
	var w pgx.Batch
	if len(claimed) > 0 {
		w.Queue(insertApplied, c.cfg.Group, claimed)
	}
	readW := func(pgx.BatchResults) error { return nil }
	if len(ds) > 0 {
		if readW, err = plan.Decide(batchLogContext(ctx, ds), ds, &w); err != nil {
			return nil, batchError(ds, err)
		}
	}
	w.Queue("COMMIT")
	br = conn.SendBatch(ctx, &w)
	err = func() error {
		if len(claimed) > 0 {
			if _, err := br.Exec(); err != nil {
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) && pgErr.Code == "23505" {
					return fmt.Errorf("%w: %w", errInboxRace, err)
				}
				return fmt.Errorf("record in inbox: %w", err)
			}
		}
		if err := readW(br); err != nil {
			return batchError(ds, err)
		}
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		return nil
	}()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return ds, err
}

// rollback ends conn's transaction, or closes conn when it cannot.
func rollback(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		_ = conn.Conn().Close(ctx)
	}
}
