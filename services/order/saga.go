package order

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/pkg/outbox"
	"github.com/eventsaga/eventsaga/services/order/domain"
)

// applyCreditDecision is the order service's part of the saga. It runs in
// the consumer's transaction, beside the inbox record of the event, so each
// decision is applied exactly once:
//
//   - CreditReserved: a PENDING order is approved.
//   - CreditReservationFailed: a PENDING order is rejected with the reason.
//
// A decision for an order that is no longer PENDING records nothing; in
// particular a reservation for an order cancelled meanwhile is released by
// the customer service when it sees the cancellation. The customer
// service's other events need nothing from this service.
func (s *Service) applyCreditDecision(ctx context.Context, tx pgx.Tx, d outbox.Delivery) error {
	switch d.Envelope.EventType {
	case "CreditReserved", "CreditReservationFailed":
	default:
		return nil
	}
	e, err := s.registry.Decode(d.Envelope)
	if err != nil {
		return outbox.Permanent(err)
	}
	var (
		orderID uuid.UUID
		decide  func(domain.Order) []events.Event
	)
	switch e := e.(type) {
	case customers.CreditReserved:
		orderID, decide = e.OrderID, domain.Order.Approve
	case customers.CreditReservationFailed:
		orderID, decide = e.OrderID, func(o domain.Order) []events.Event { return o.Reject(e.Reason) }
	default:
		return fmt.Errorf("unexpected %T", e)
	}
	agg, err := s.repo.Load(ctx, tx, orderID)
	if errors.Is(err, eventstore.ErrNotFound) {
		return outbox.Permanent(fmt.Errorf("credit decision for unknown order %s", orderID))
	}
	if err != nil {
		return err
	}
	meta := eventstore.Meta{
		CorrelationID: orderID,
		CausationID:   d.Envelope.EventID,
		TraceParent:   d.Header(events.HeaderTraceParent),
	}
	_, err = s.repo.Append(ctx, tx, &agg, meta, decide(agg.State)...)
	return err
}
