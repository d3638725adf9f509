package customer

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/pkg/outbox"
	"github.com/eventsaga/eventsaga/services/customer/domain"
)

// applyOrderEvent is the customer service's part of the saga. It runs in the
// consumer's transaction, beside the inbox record of the event, so each
// order event is decided on exactly once:
//
//   - OrderCreated: reserve the order's total from the customer's available
//     credit, or refuse (INSUFFICIENT_CREDIT, or UNKNOWN_CUSTOMER for a
//     customer that was never registered).
//   - OrderCancelled: release the credit held for the order, if any.
//     Because an order's events share a partition, the cancellation of an
//     order always arrives after its creation: a reservation made for an
//     order that the order service has already cancelled is released here.
//
// Other order events need nothing from this service.
func (s *Service) applyOrderEvent(ctx context.Context, tx pgx.Tx, d outbox.Delivery) error {
	switch d.Envelope.EventType {
	case "OrderCreated", "OrderCancelled":
	default:
		return nil
	}
	e, err := s.registry.Decode(d.Envelope)
	if err != nil {
		return outbox.Permanent(err)
	}
	meta := eventstore.Meta{
		CorrelationID: d.Envelope.CorrelationID, // the order: the saga's ID
		CausationID:   d.Envelope.EventID,
		TraceParent:   d.Header(events.HeaderTraceParent),
	}
	switch e := e.(type) {
	case orders.OrderCreated:
		agg, err := s.loadForSaga(ctx, tx, e)
		if err != nil {
			return err
		}
		decision, err := agg.State.ReserveCredit(e.OrderID, e.Total)
		if err != nil {
			return outbox.Permanent(err) // a negative total: no retry will mend it
		}
		_, err = s.repo.Append(ctx, tx, &agg, meta, decision...)
		return err
	case orders.OrderCancelled:
		agg, err := s.repo.Load(ctx, tx, e.CustomerID)
		if errors.Is(err, eventstore.ErrNotFound) {
			return nil // nothing was ever held
		}
		if err != nil {
			return err
		}
		_, err = s.repo.Append(ctx, tx, &agg, meta, agg.State.ReleaseCredit(e.OrderID)...)
		return err
	}
	return fmt.Errorf("unexpected %T", e)
}

// loadForSaga loads the customer an order is for, or starts the stream of
// an unknown customer, in which the refusal is recorded.
func (s *Service) loadForSaga(ctx context.Context, tx pgx.Tx, e orders.OrderCreated) (eventstore.Aggregate[domain.Customer], error) {
	agg, err := s.repo.Load(ctx, tx, e.CustomerID)
	if errors.Is(err, eventstore.ErrNotFound) {
		agg = s.repo.New(e.CustomerID)
		agg.State.ID = e.CustomerID
		return agg, nil
	}
	return agg, err
}
