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

// applyCreditDecisions is the order service's part of the saga. It runs in
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
// few statements, not a few per event (see eventstore.DecideAll).
func (s *Service) applyCreditDecisions(ctx context.Context, tx pgx.Tx, ds []outbox.Delivery) error {
	var decisions []eventstore.Decision[domain.Order]
	var decided [][16]byte
	var outcomes []outcome // the orders this transaction takes out of PENDING
	for _, d := range ds {
		if d.Envelope.EventType != "CreditReserved" && d.Envelope.EventType != "CreditReservationFailed" {
			continue
		}
		e, err := s.registry.Decode(d.Envelope)
		if err != nil {
			return outbox.Permanent(err)
		}
		var (
			orderID uuid.UUID
			decide  func(domain.Order) []events.Event
			result  = orders.StatusApproved
			reason  string
		)
		switch e := e.(type) {
		case customers.CreditReserved:
			orderID, decide = e.OrderID, domain.Order.Approve
		case customers.CreditReservationFailed:
			orderID, decide = e.OrderID, func(o domain.Order) []events.Event { return o.Reject(e.Reason) }
			result, reason = orders.StatusRejected, e.Reason
		}
		decided = append(decided, orderID)
		decisions = append(decisions, eventstore.Decision[domain.Order]{
			ID: orderID,
			Meta: eventstore.Meta{
				CorrelationID: orderID,
				CausationID:   d.Envelope.EventID,
				TraceParent:   d.TraceParent(),
			},
			Decide: func(o domain.Order, version int64) ([]events.Event, error) {
				if version == 0 {
					return nil, outbox.Permanent(fmt.Errorf("credit decision for unknown order %s", orderID))
				}
				evs := decide(o)
				if len(evs) > 0 {
					outcomes = append(outcomes, outcome{orderID: orderID, result: result, reason: reason, version: version + int64(len(evs))})
				}
				return evs, nil
			},
		})
	}
	if _, err := s.repo.DecideAll(ctx, tx, decisions, nil); err != nil { // an order is decided once: nothing to cache
		return err
	}
	if len(decided) == 0 {
		return nil
	}
	if len(outcomes) == 0 {
		if _, err := tx.Exec(ctx, forgetPending, decided); err != nil {
			return fmt.Errorf("forget the deadlines of decided orders: %w", err)
		}
		return nil
	}
	if err := forgetAndTime(ctx, tx, forgetPendingTimed, decided, outcomes); err != nil {
		return fmt.Errorf("forget the deadlines of decided orders: %w", err)
	}
	outbox.OnCommit(ctx, func() { s.saga.record(outcomes) })
	return nil
}
