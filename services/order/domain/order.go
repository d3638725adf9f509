// Package domain is the Order aggregate and its life: placed PENDING, then
// APPROVED when the customer's credit is reserved, or REJECTED when it is
// refused or when no decision came before the order's deadline; a PENDING or
// APPROVED order can be CANCELLED. Commands decide on
// the current state and return the events to record; Apply rebuilds the
// state from events. It knows nothing of HTTP, SQL or Kafka.
package domain

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
)

// Limits on what an order may hold.
const (
	MaxItems           = 100
	MaxQuantity        = 1_000_000
	MaxProductIDLength = 64
)

// Errors commands return; handlers turn them into statuses.
var (
	// ErrNotFound: no such order.
	ErrNotFound = errors.New("order not found")
	// ErrCannotCancel: the order is REJECTED or CANCELLED already.
	ErrCannotCancel = errors.New("order cannot be cancelled")
)

// ValidationError is a command argument that breaks a rule.
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Message }

// Order is the state of one order.
type Order struct {
	ID              uuid.UUID     `json:"id"`
	CustomerID      uuid.UUID     `json:"customer_id"`
	Items           []orders.Item `json:"items"`
	Total           events.Money  `json:"total"`
	Status          string        `json:"status"`
	RejectionReason string        `json:"rejection_reason,omitempty"`
}

// Place returns the event that creates order id for customerID.
func Place(id, customerID uuid.UUID, items []orders.Item) ([]events.Event, error) {
	if customerID == uuid.Nil {
		return nil, &ValidationError{"customer_id", "is required"}
	}
	switch {
	case len(items) == 0:
		return nil, &ValidationError{"items", "must hold at least one item"}
	case len(items) > MaxItems:
		return nil, &ValidationError{"items", fmt.Sprintf("may hold at most %d items", MaxItems)}
	}
	var total events.Money
	for i, it := range items {
		field := fmt.Sprintf("items[%d]", i)
		switch {
		case strings.TrimSpace(it.ProductID) == "":
			return nil, &ValidationError{field + ".product_id", "is required"}
		case len(it.ProductID) > MaxProductIDLength:
			return nil, &ValidationError{field + ".product_id", fmt.Sprintf("is longer than %d bytes", MaxProductIDLength)}
		case strings.ContainsFunc(it.ProductID, unicode.IsControl):
			return nil, &ValidationError{field + ".product_id", "contains control characters"}
		case it.Quantity < 1 || it.Quantity > MaxQuantity:
			return nil, &ValidationError{field + ".quantity", fmt.Sprintf("must be a whole number from 1 to %d", MaxQuantity)}
		case it.UnitPrice < 0:
			return nil, &ValidationError{field + ".unit_price", "is negative"}
		}
		line, ok := it.UnitPrice.Mul(it.Quantity)
		if !ok || line > events.MaxMoney-total {
			return nil, &ValidationError{"items", "total is too large"}
		}
		total += line
	}
	return []events.Event{orders.OrderCreated{OrderID: id, CustomerID: customerID, Items: items, Total: total}}, nil
}

// Approve decides on a reservation of credit: a PENDING order is approved.
// In any other state it records nothing: a CANCELLED order's credit is
// released by the customer service when it sees the cancellation.
func (o Order) Approve() []events.Event {
	if o.Status != orders.StatusPending {
		return nil
	}
	return []events.Event{orders.OrderApproved{OrderID: o.ID, CustomerID: o.CustomerID, Total: o.Total}}
}

// Reject decides on a refusal of credit: a PENDING order is rejected.
func (o Order) Reject(reason string) []events.Event {
	if o.Status != orders.StatusPending {
		return nil
	}
	return []events.Event{orders.OrderRejected{OrderID: o.ID, CustomerID: o.CustomerID, Reason: reason}}
}

// Expire decides on an order whose deadline passed: a PENDING order, which
// got no credit decision in time, is rejected with DEADLINE_EXCEEDED. In any
// other state it records nothing, and a credit decision that arrives after
// it records nothing either (the order is no longer PENDING): an order is
// decided once. Credit reserved for it meanwhile is released by the customer
// service when it sees the rejection.
func (o Order) Expire() []events.Event {
	return o.Reject(orders.ReasonDeadlineExceeded)
}

// Cancel cancels a PENDING or APPROVED order.
func (o Order) Cancel() ([]events.Event, error) {
	switch o.Status {
	case orders.StatusPending, orders.StatusApproved:
		return []events.Event{orders.OrderCancelled{OrderID: o.ID, CustomerID: o.CustomerID, Total: o.Total, PreviousStatus: o.Status}}, nil
	case "":
		return nil, ErrNotFound
	default:
		return nil, fmt.Errorf("%w: it is %s", ErrCannotCancel, o.Status)
	}
}

// Apply returns the state after e.
func Apply(o Order, e events.Event) Order {
	switch e := e.(type) {
	case orders.OrderCreated:
		o.ID, o.CustomerID, o.Items, o.Total, o.Status = e.OrderID, e.CustomerID, e.Items, e.Total, orders.StatusPending
	case orders.OrderApproved:
		o.Status = orders.StatusApproved
	case orders.OrderRejected:
		o.Status, o.RejectionReason = orders.StatusRejected, e.Reason
	case orders.OrderCancelled:
		o.Status = orders.StatusCancelled
	}
	return o
}
