package order

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/services/order/domain"
)

// The deadline: an order that has had no credit decision for the deadline
// (ORDER_DEADLINE) is rejected with DEADLINE_EXCEEDED, so that every order
// ends decided even while the customer service is down or a saga record was
// dead-lettered. The rejection goes the way of every decision: the order is
// loaded, domain.Order.Expire decides, and the event is appended with its
// outbox row in one transaction that names the version it follows. So a
// credit decision or a cancel racing the deadline for the same order cannot
// both win: the second append is refused, and whoever lost decides again on
// the new state, which is no longer PENDING, and records nothing.
//
// The orders to look at are the rows of pending_orders: written with each
// OrderCreated, deleted in the transaction that takes the order out of
// PENDING (a credit decision, a cancel, the deadline itself). Every instance
// of the service sweeps them; an instance claims the overdue rows it
// rejects with FOR UPDATE SKIP LOCKED, so instances share the work instead
// of loading the same orders and losing the same races, and the version
// guard stays what makes a double decision impossible.

const (
	// insertPending starts an order's deadline, with its OrderCreated.
	insertPending = `INSERT INTO pending_orders (order_id, created_event_id) VALUES ($1, $2)`

	// forgetPending ends the deadlines of orders that left PENDING. It
	// skips the rows a sweep has claimed rather than wait for them: the
	// sweep may itself be waiting for this transaction's event of the same
	// order, and waiting both ways is a deadlock. A row it skips is the
	// sweep's: the sweep rejects the order if it is first (and deletes the
	// row), or loses the race, rolls back, and next time finds the order
	// decided and deletes the row. The function (migration 004) finds the
	// rows through the primary key: planned as a plain statement, it read
	// the whole queue, dead rows and all, twice a call.
	forgetPending = `SELECT order_forget_pending($1::uuid[])`

	// claimOverdue locks up to $2 orders PENDING for $1 microseconds by the
	// database's clock, oldest first, that no other sweep holds.
	claimOverdue = `
SELECT order_id, created_event_id FROM pending_orders
WHERE placed_at <= now() - $1::bigint * interval '1 microsecond'
ORDER BY placed_at
LIMIT $2
FOR UPDATE SKIP LOCKED`

	dropPending = `DELETE FROM pending_orders WHERE order_id = ANY($1::uuid[])`

	// A sweep whose append waits for another transaction's event of the
	// same order gives up after this, before Postgres looks for deadlocks
	// (deadlock_timeout, 1 s by default): if that transaction, a saga batch
	// of several orders, also waits for the sweep, the sweep is the one to
	// roll back, and the saga never sees a deadlock.
	sweepLockTimeout = `SET LOCAL lock_timeout = '200ms'`
)

// deadlineBatch is how many orders a sweep rejects in one transaction.
const deadlineBatch = 500

// sweepEvery is how often an instance looks for overdue orders: a tenth of
// the deadline, at most every second, so an order is rejected at most that
// long after its deadline.
func sweepEvery(deadline time.Duration) time.Duration {
	return min(max(deadline/10, 10*time.Millisecond), time.Second)
}

// enforceDeadlines rejects overdue orders until ctx is done.
func (s *Service) enforceDeadlines(ctx context.Context) {
	every := sweepEvery(s.cfg.Deadline)
	if !s.awaitCaughtUp(ctx, every) {
		return
	}
	s.log.Info("enforcing the order deadline", "order_deadline", s.cfg.Deadline)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.sweep(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// awaitCaughtUp waits until this instance's consumer runs and its group has
// applied every credit decision that was on the topic when it began. The
// decisions that piled up while the service was down are so applied before
// any deadline is enforced: a restart slower than the deadline must not
// reject orders whose credit was reserved meanwhile. It reports false if ctx
// ended first.
func (s *Service) awaitCaughtUp(ctx context.Context, every time.Duration) bool {
	adm := kadm.NewClient(s.bb.Consumer.Client())
	var starts, ends kadm.ListedOffsets
	for {
		if s.bb.Consumer.Consuming() {
			if ends == nil {
				starts, ends = s.offsets(ctx, adm)
			}
			if ends != nil && s.applied(ctx, adm, starts, ends) {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(every):
		}
	}
}

// offsets returns the start and end offsets of the credit decisions' topic,
// or nils if Kafka does not tell.
func (s *Service) offsets(ctx context.Context, adm *kadm.Client) (starts, ends kadm.ListedOffsets) {
	starts, err := adm.ListStartOffsets(ctx, s.cfg.CustomersTopic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, nil
	}
	ends, err = adm.ListEndOffsets(ctx, s.cfg.CustomersTopic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, nil
	}
	return starts, ends
}

// applied reports whether the consumer group has committed every partition
// up to ends (a partition with nothing from starts to ends needs nothing).
func (s *Service) applied(ctx context.Context, adm *kadm.Client, starts, ends kadm.ListedOffsets) bool {
	committed, err := adm.FetchOffsets(ctx, s.cfg.ConsumerGroup)
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		return false
	}
	done := true
	ends.Each(func(end kadm.ListedOffset) {
		if start, ok := starts.Lookup(end.Topic, end.Partition); ok && start.Offset >= end.Offset {
			return
		}
		if c, ok := committed.Lookup(end.Topic, end.Partition); !ok || c.At < end.Offset {
			done = false
		}
	})
	return done
}

// sweep rejects the orders overdue now, a batch at a time.
func (s *Service) sweep(ctx context.Context) {
	for lost := 0; ctx.Err() == nil; {
		claimed, err := s.rejectOverdue(ctx)
		switch {
		case err == nil && claimed < deadlineBatch:
			return
		case err == nil:
			// There may be more.
		case lostRace(err) && lost < 3:
			// A decision or a cancel took an order of the batch first: the
			// batch again, in which that order is no longer PENDING.
			lost++
		case lostRace(err) || ctx.Err() != nil:
			return // the next sweep
		default:
			s.log.Warn("could not reject the orders past their deadline; trying again soon", "err", err)
			return
		}
	}
}

// lostRace reports an error of a sweep that another writer of the same
// orders caused: nothing is wrong, and the next attempt decides afresh.
func lostRace(err error) bool {
	var pgErr *pgconn.PgError
	return errors.Is(err, eventstore.ErrConflict) ||
		(errors.As(err, &pgErr) && (pgErr.Code == "55P03" || pgErr.Code == "40P01")) // lock_not_available, deadlock_detected
}

// rejectOverdue claims up to deadlineBatch overdue orders and, in the same
// transaction, rejects those still PENDING and ends their deadlines. It
// returns how many it claimed.
func (s *Service) rejectOverdue(ctx context.Context) (claimed int, err error) {
	var rejected int
	var outcomes []outcome
	err = pgx.BeginFunc(ctx, s.bb.Pool, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, claimOverdue, s.cfg.Deadline.Microseconds(), deadlineBatch)
		var ids, causes [][16]byte
		var id, cause [16]byte
		if _, err := pgx.ForEachRow(rows, []any{&id, &cause}, func() error {
			ids, causes = append(ids, id), append(causes, cause)
			return nil
		}); err != nil {
			return err
		}
		claimed, rejected, outcomes = len(ids), 0, nil
		if claimed == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, sweepLockTimeout); err != nil {
			return err
		}
		decisions := make([]eventstore.Decision[domain.Order], len(ids))
		for i, id := range ids {
			decisions[i] = eventstore.Decision[domain.Order]{
				ID: id,
				// Caused by the OrderCreated whose deadline passed; no trace
				// context: the request that placed the order ended long ago.
				Meta: eventstore.Meta{CorrelationID: id, CausationID: causes[i]},
				Decide: func(o domain.Order, version int64) ([]events.Event, error) {
					evs := o.Expire() // nothing for an order decided meanwhile (or never placed)
					rejected += len(evs)
					if len(evs) > 0 {
						outcomes = append(outcomes, outcome{orderID: id, result: orders.StatusRejected,
							reason: orders.ReasonDeadlineExceeded, version: version + int64(len(evs))})
					}
					return evs, nil
				},
			}
		}
		if _, err := s.repo.DecideAll(ctx, tx, decisions, nil); err != nil {
			return err
		}
		if len(outcomes) > 0 {
			return dropPendingAndTime(ctx, tx, ids, outcomes)
		}
		_, err := tx.Exec(ctx, dropPending, ids)
		return err
	})
	if err != nil {
		return 0, err
	}
	s.saga.record(outcomes)
	if rejected > 0 {
		s.bb.Notifier.Notify() // the relay publishes the rejections now, not at its next poll
		s.log.Info("rejected orders past their deadline", "orders", rejected, "order_deadline", s.cfg.Deadline)
	}
	return claimed, nil
}
