package customer

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/pkg/outbox"
	"github.com/eventsaga/eventsaga/services/customer/domain"
)

// planOrderEvents is the customer service's part of the saga. It runs in
// the consumer's transaction, beside the inbox records of the events, so each
// order event is decided on exactly once:
//
//   - OrderCreated: reserve the order's total from the customer's available
//     credit, or refuse (INSUFFICIENT_CREDIT, or UNKNOWN_CUSTOMER for a
//     customer that was never registered).
//   - OrderApproved: settle the order's credit (CreditSettled): it stays
//     reserved, but as part of one sum rather than a reservation of its
//     own, so that a customer's state does not grow with every approved
//     order.
//   - OrderCancelled, OrderRejected: release the credit held for the
//     order, if any: its reservation, or for an order cancelled after its
//     approval, its total from the settled sum. Because an order's events
//     share a partition, the end of an order always arrives after its
//     creation and approval: a reservation made for an order that the order
//     service has already cancelled, or rejected for its deadline
//     (DEADLINE_EXCEEDED), is released here. A rejection that followed a
//     refusal finds nothing held and records nothing.
//
// A batch is decided in order, each decision on the state the previous ones
// left. It takes two round trips (see outbox.Planner): one locks and loads
// every customer it concerns beside the inbox lookup, the other writes every
// decision with the inbox rows and the COMMIT. Customers decide on many
// orders each, so their states stay cached between batches: the states
// this transaction decided join the cache once it has committed, never
// before.
func (s *Service) planOrderEvents(_ context.Context, ds []outbox.Delivery, b *pgx.Batch) (outbox.Plan, error) {
	decisions := make(map[uuid.UUID]eventstore.Decision[domain.Customer], len(ds)) // by event ID
	var ids []uuid.UUID
	seen := map[uuid.UUID]bool{}
	for _, d := range ds {
		switch d.Envelope.EventType {
		case "OrderCreated", "OrderApproved", "OrderCancelled", "OrderRejected":
		default:
			continue
		}
		e, err := s.registry.Decode(d.Envelope)
		if err != nil {
			return outbox.Plan{}, outbox.Permanent(err)
		}
		var customerID uuid.UUID
		switch e := e.(type) {
		case orders.OrderCreated:
			customerID = e.CustomerID
		case orders.OrderApproved:
			customerID = e.CustomerID
		case orders.OrderCancelled:
			customerID = e.CustomerID
		case orders.OrderRejected:
			customerID = e.CustomerID
		}
		if !seen[customerID] {
			seen[customerID] = true
			ids = append(ids, customerID)
		}
		decisions[d.Envelope.EventID] = eventstore.Decision[domain.Customer]{
			ID: customerID,
			Decide: func(c domain.Customer, _ int64) ([]events.Event, error) {
				c.ID = customerID // a customer never registered has a stream of refusals only
				evs, err := decide(c, e)
				if err != nil {
					return nil, outbox.Permanent(err) // a negative total: no retry will mend it
				}
				return evs, nil
			},
		}
	}
	loading := s.repo.QueueLoad(b, ids, s.hot)
	return outbox.Plan{
		Read: loading.Read,
		Decide: func(ctx context.Context, fresh []outbox.Delivery, w *pgx.Batch) (func(pgx.BatchResults) error, error) {
			var ds []eventstore.Decision[domain.Customer]
			for _, d := range fresh {
				dec, ok := decisions[d.Envelope.EventID]
				if !ok {
					continue
				}
				dec.Meta = eventstore.Meta{
					CorrelationID: d.Envelope.CorrelationID, // the order: the saga's ID
					CausationID:   d.Envelope.EventID,
					TraceParent:   d.TraceParent(),
				}
				ds = append(ds, dec)
			}
			var u eventstore.UnitOfWork
			committed, err := s.repo.DecideOn(loading, ds, &u)
			if err != nil {
				return nil, err
			}
			read, err := u.Queue(w)
			if err != nil {
				return nil, err
			}
			outbox.OnCommit(ctx, committed) // only committed states may be cached
			return func(br pgx.BatchResults) error {
				if err := read(br); err != nil {
					loading.Forget() // another writer moved them: reload from the store
					return err
				}
				return nil
			}, nil
		},
	}, nil
}

// decide is the customer's decision on one order event.
func decide(c domain.Customer, e events.Event) ([]events.Event, error) {
	switch e := e.(type) {
	case orders.OrderCreated:
		return c.ReserveCredit(e.OrderID, e.Total)
	case orders.OrderApproved:
		return c.SettleCredit(e.OrderID), nil
	case orders.OrderCancelled:
		if e.PreviousStatus == orders.StatusApproved {
			return c.ReleaseApprovedCredit(e.OrderID, e.Total), nil
		}
		return c.ReleaseCredit(e.OrderID), nil
	case orders.OrderRejected:
		return c.ReleaseCredit(e.OrderID), nil
	}
	return nil, fmt.Errorf("unexpected %T", e)
}
