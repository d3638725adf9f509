// Package orders holds the events of the Order aggregate as the contract
// defines them (topic orders.events, key = order ID): the Go form that the
// order service writes and the customer service and projector read.
package orders

import (
	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/pkg/events"
)

// AggregateType names the Order aggregate in envelopes.
const AggregateType = "order"

// Order statuses.
const (
	StatusPending   = "PENDING"
	StatusApproved  = "APPROVED"
	StatusRejected  = "REJECTED"
	StatusCancelled = "CANCELLED"
)

// Rejection reasons: the customer service's refusal reasons, and the order
// service's own when no credit decision came in time.
const (
	ReasonInsufficientCredit = "INSUFFICIENT_CREDIT"
	ReasonUnknownCustomer    = "UNKNOWN_CUSTOMER"
	ReasonDeadlineExceeded   = "DEADLINE_EXCEEDED"
)

// Item is one line of an order.
type Item struct {
	ProductID string       `json:"product_id"`
	Quantity  int64        `json:"quantity"`
	UnitPrice events.Money `json:"unit_price"`
}

// OrderCreated: an order was placed and is PENDING.
type OrderCreated struct {
	OrderID    uuid.UUID    `json:"order_id"`
	CustomerID uuid.UUID    `json:"customer_id"`
	Items      []Item       `json:"items"`
	Total      events.Money `json:"total"`
}

// OrderApproved: the customer's credit was reserved.
type OrderApproved struct {
	OrderID    uuid.UUID    `json:"order_id"`
	CustomerID uuid.UUID    `json:"customer_id"`
	Total      events.Money `json:"total"`
}

// OrderRejected: the customer service refused credit, or decided nothing
// before the order's deadline (ReasonDeadlineExceeded).
type OrderRejected struct {
	OrderID    uuid.UUID `json:"order_id"`
	CustomerID uuid.UUID `json:"customer_id"`
	Reason     string    `json:"reason"`
}

// OrderCancelled: a PENDING or APPROVED order was cancelled; any credit
// held for it is to be released.
type OrderCancelled struct {
	OrderID        uuid.UUID    `json:"order_id"`
	CustomerID     uuid.UUID    `json:"customer_id"`
	Total          events.Money `json:"total"`
	PreviousStatus string       `json:"previous_status"`
}

func (OrderCreated) EventType() string   { return "OrderCreated" }
func (OrderApproved) EventType() string  { return "OrderApproved" }
func (OrderRejected) EventType() string  { return "OrderRejected" }
func (OrderCancelled) EventType() string { return "OrderCancelled" }

// Register adds the order events, at their current schema versions, to r.
func Register(r *events.Registry) error {
	for _, err := range []error{
		events.Register[OrderCreated](r, 1),
		events.Register[OrderApproved](r, 1),
		events.Register[OrderRejected](r, 1),
		events.Register[OrderCancelled](r, 1),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}
