// Package customers holds the events of the Customer aggregate as the
// contract defines them (topic customers.events, key = customer ID),
// including the credit decisions of the saga.
package customers

import (
	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/pkg/events"
)

// AggregateType names the Customer aggregate in envelopes.
const AggregateType = "customer"

// Reasons a reservation is refused.
const (
	ReasonInsufficientCredit = "INSUFFICIENT_CREDIT"
	ReasonUnknownCustomer    = "UNKNOWN_CUSTOMER"
)

// CustomerRegistered: a customer exists, with a credit limit.
type CustomerRegistered struct {
	CustomerID  uuid.UUID    `json:"customer_id"`
	Name        string       `json:"name"`
	CreditLimit events.Money `json:"credit_limit"`
}

// CreditLimitChanged: the customer's credit limit is now CreditLimit.
type CreditLimitChanged struct {
	CustomerID  uuid.UUID    `json:"customer_id"`
	CreditLimit events.Money `json:"credit_limit"`
}

// CreditReserved: Amount is held for OrderID.
type CreditReserved struct {
	CustomerID uuid.UUID    `json:"customer_id"`
	OrderID    uuid.UUID    `json:"order_id"`
	Amount     events.Money `json:"amount"`
}

// CreditReservationFailed: no credit is held for OrderID, for Reason.
type CreditReservationFailed struct {
	CustomerID uuid.UUID    `json:"customer_id"`
	OrderID    uuid.UUID    `json:"order_id"`
	Amount     events.Money `json:"amount"`
	Reason     string       `json:"reason"`
}

// CreditSettled: OrderID was approved, and the Amount held for it is now
// part of the customer's settled credit, one sum for all approved orders,
// rather than a reservation of its own. It stays reserved until the order
// is cancelled. Without it a customer would keep a reservation per approved
// order for ever, and its state would grow with every order it ever placed.
type CreditSettled struct {
	CustomerID uuid.UUID    `json:"customer_id"`
	OrderID    uuid.UUID    `json:"order_id"`
	Amount     events.Money `json:"amount"`
}

// CreditReleased: the credit held for OrderID is free again.
type CreditReleased struct {
	CustomerID uuid.UUID    `json:"customer_id"`
	OrderID    uuid.UUID    `json:"order_id"`
	Amount     events.Money `json:"amount"`
}

func (CustomerRegistered) EventType() string      { return "CustomerRegistered" }
func (CreditLimitChanged) EventType() string      { return "CreditLimitChanged" }
func (CreditReserved) EventType() string          { return "CreditReserved" }
func (CreditReservationFailed) EventType() string { return "CreditReservationFailed" }
func (CreditSettled) EventType() string           { return "CreditSettled" }
func (CreditReleased) EventType() string          { return "CreditReleased" }

// Register adds the customer events, at their current schema versions, to r.
func Register(r *events.Registry) error {
	for _, err := range []error{
		events.Register[CustomerRegistered](r, 1),
		events.Register[CreditLimitChanged](r, 1),
		events.Register[CreditReserved](r, 1),
		events.Register[CreditReservationFailed](r, 1),
		events.Register[CreditSettled](r, 1),
		events.Register[CreditReleased](r, 1),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}
