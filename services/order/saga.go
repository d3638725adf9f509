package order

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/pkg/outbox"
	"github.com/eventsaga/eventsaga/services/order/domain"
)

// planCreditDecisions is the order service's part of the saga. It runs in
// the consumer's transaction, beside the inbox records of the events, so
// each decision is applied exactly once:
//
//   - CreditReserved: a PENDING order is approved.
//   - CreditReservationFailed: a PENDING order is rejected with the reason.
//
// A decision for an order that is no longer PENDING records nothing; in
// particular a reservation for an order cancelled or rejected for its
// deadline meanwhile is released by the customer service when it sees the
// cancellation or the rejection. Either way the order has left PENDING, so
// its deadline goes (pending_orders, see deadline.go). The customer
// service's other events need nothing from this service. A batch costs a
// few statements, not a few per event, in two round trips (see
// outbox.Planner).
func (s *Service) planCreditDecisions(_ context.Context, ds []outbox.Delivery, b *pgx.Batch) (outbox.Plan, error) {
	type credit struct {
		orderID uuid.UUID
		decide  func(domain.Order) []events.Event
		result  string
		reason  string
	}
	credits := make(map[uuid.UUID]credit, len(ds)) // by event ID
	var ids []uuid.UUID
	seen := map[uuid.UUID]bool{}
	for _, d := range ds {
		if d.Envelope.EventType != "CreditReserved" && d.Envelope.EventType != "CreditReservationFailed" {
			continue
		}
		e, err := s.registry.Decode(d.Envelope)
		if err != nil {
			return outbox.Plan{}, outbox.Permanent(err)
		}
		c := credit{result: orders.StatusApproved}
		switch e := e.(type) {
		case customers.CreditReserved:
			c.orderID, c.decide = e.OrderID, domain.Order.Approve
		case customers.CreditReservationFailed:
			c.orderID, c.decide = e.OrderID, func(o domain.Order) []events.Event { return o.Reject(e.Reason) }
			c.result, c.reason = orders.StatusRejected, e.Reason
		}
		credits[d.Envelope.EventID] = c
		if !seen[c.orderID] {
			seen[c.orderID] = true
			ids = append(ids, c.orderID)
		}
	}
	loading := s.repo.QueueLoad(b, ids, nil) // an order is decided once: nothing to cache
	return outbox.Plan{
		Read: loading.Read,
		Decide: func(ctx context.Context, fresh []outbox.Delivery, w *pgx.Batch) (func(pgx.BatchResults) error, error) {
			var decisions []eventstore.Decision[domain.Order]
			var decided [][16]byte
			var outcomes []outcome // the orders this transaction takes out of PENDING
			for _, d := range fresh {
				c, ok := credits[d.Envelope.EventID]
				if !ok {
					continue
				}
				decided = append(decided, c.orderID)
				decisions = append(decisions, eventstore.Decision[domain.Order]{
					ID: c.orderID,
					Meta: eventstore.Meta{
						CorrelationID: c.orderID,
						CausationID:   d.Envelope.EventID,
						TraceParent:   d.TraceParent(),
					},
					Decide: func(o domain.Order, version int64) ([]events.Event, error) {
						if version == 0 {
							return nil, outbox.Permanent(fmt.Errorf("credit decision for unknown order %s", c.orderID))
						}
						evs := c.decide(o)
						if len(evs) > 0 {
							// Loaded at version 1, the order was last
							// changed by its OrderCreated.
							loaded, _ := loading.Aggregate(c.orderID)
							outcomes = append(outcomes, outcome{orderID: c.orderID, result: c.result, reason: c.reason,
								version: version + int64(len(evs)), created: loaded.UpdatedAt})
						}
						return evs, nil
					},
				})
			}
			if len(decided) == 0 {
				return func(pgx.BatchResults) error { return nil }, nil
			}
			var u eventstore.UnitOfWork
			if _, err := s.repo.DecideOn(loading, decisions, &u); err != nil {
				return nil, err
			}
			readUnit, err := u.Queue(w)
			if err != nil {
				return nil, err
			}
			// The decided orders are no longer PENDING: no deadline.
			w.Queue(forgetPending, decided)
			if len(outcomes) > 0 {
				decisionTimesOf(outcomes, u.Staged())
				outbox.OnCommit(ctx, func() { s.saga.record(outcomes) })
			}
			return func(br pgx.BatchResults) error {
				if err := readUnit(br); err != nil {
					return err
				}
				if _, err := br.Exec(); err != nil {
					return fmt.Errorf("forget the deadlines of decided orders: %w", err)
				}
				return nil
			}, nil
		},
	}, nil
}
