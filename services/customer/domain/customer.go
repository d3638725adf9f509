// Package domain is the Customer aggregate: a credit limit and the credit
// held for orders. Commands decide on the current state and return the events
// to record; Apply rebuilds the state from events. It knows nothing of HTTP,
// SQL or Kafka.
package domain

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
)

// MaxNameLength bounds a customer's name, in characters.
const MaxNameLength = 200

// Errors commands return; handlers turn them into statuses.
var (
	// ErrNotFound: the customer was never registered.
	ErrNotFound = errors.New("customer not found")
	// ErrLimitBelowReserved: a credit limit below the credit already held.
	ErrLimitBelowReserved = errors.New("credit limit below reserved credit")
)

// ValidationError is a command argument that breaks a rule.
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Message }

// Customer is the state of one customer. Reserved is the credit held: the
// Reservations of orders still in flight, one per order, plus Settled, one
// sum for every approved order. It is kept as they change, so that no
// decision adds them up. Settling approved orders keeps the state as small
// as the orders in flight, however many orders the customer ever placed. A
// customer that was never registered can still have a stream: the refusals
// of orders placed for it.
type Customer struct {
	ID           uuid.UUID    `json:"id"`
	Registered   bool         `json:"registered"`
	Name         string       `json:"name"`
	CreditLimit  events.Money `json:"credit_limit"`
	Reserved     events.Money `json:"reserved"`
	Settled      events.Money `json:"settled"`
	Reservations Reservations `json:"reservations"`
}

// Available is the credit still free.
func (c Customer) Available() events.Money { return c.CreditLimit - c.Reserved }

// Register returns the event that creates customer id.
func Register(id uuid.UUID, name string, limit events.Money) ([]events.Event, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return nil, &ValidationError{"name", "is required"}
	case utf8.RuneCountInString(name) > MaxNameLength:
		return nil, &ValidationError{"name", fmt.Sprintf("is longer than %d characters", MaxNameLength)}
	case strings.ContainsFunc(name, unicode.IsControl):
		return nil, &ValidationError{"name", "contains control characters"}
	}
	if err := checkLimit(limit); err != nil {
		return nil, err
	}
	return []events.Event{customers.CustomerRegistered{CustomerID: id, Name: name, CreditLimit: limit}}, nil
}

func checkLimit(limit events.Money) error {
	if limit < 0 {
		return &ValidationError{"credit_limit", "is negative"}
	}
	return nil
}

// ChangeCreditLimit sets a new credit limit; it may not fall below the
// credit already reserved. The same limit again records nothing.
func (c Customer) ChangeCreditLimit(limit events.Money) ([]events.Event, error) {
	if !c.Registered {
		return nil, ErrNotFound
	}
	if err := checkLimit(limit); err != nil {
		return nil, err
	}
	if limit < c.Reserved {
		return nil, fmt.Errorf("%w: %s is reserved", ErrLimitBelowReserved, c.Reserved)
	}
	if limit == c.CreditLimit {
		return nil, nil
	}
	return []events.Event{customers.CreditLimitChanged{CustomerID: c.ID, CreditLimit: limit}}, nil
}

// ReserveCredit decides on an order's request for credit: reserved if the
// available credit covers amount, refused otherwise, or for a customer that
// does not exist. An order that already holds a reservation records nothing.
func (c Customer) ReserveCredit(orderID uuid.UUID, amount events.Money) ([]events.Event, error) {
	if amount < 0 {
		return nil, &ValidationError{"amount", "is negative"}
	}
	if !c.Registered {
		return []events.Event{customers.CreditReservationFailed{CustomerID: c.ID, OrderID: orderID, Amount: amount, Reason: customers.ReasonUnknownCustomer}}, nil
	}
	if _, held := c.Reservations.Get(orderID); held {
		return nil, nil
	}
	if amount > c.Available() {
		return []events.Event{customers.CreditReservationFailed{CustomerID: c.ID, OrderID: orderID, Amount: amount, Reason: customers.ReasonInsufficientCredit}}, nil
	}
	return []events.Event{customers.CreditReserved{CustomerID: c.ID, OrderID: orderID, Amount: amount}}, nil
}

// SettleCredit moves the credit held for an order that was approved from
// its reservation into the settled sum. An order without a reservation (its
// approval seen before) records nothing.
func (c Customer) SettleCredit(orderID uuid.UUID) []events.Event {
	amount, held := c.Reservations.Get(orderID)
	if !held {
		return nil
	}
	return []events.Event{customers.CreditSettled{CustomerID: c.ID, OrderID: orderID, Amount: amount}}
}

// ReleaseCredit frees the credit held for an order that was cancelled or
// rejected before it was approved, if any is.
func (c Customer) ReleaseCredit(orderID uuid.UUID) []events.Event {
	amount, held := c.Reservations.Get(orderID)
	if !held {
		return nil
	}
	return []events.Event{customers.CreditReleased{CustomerID: c.ID, OrderID: orderID, Amount: amount}}
}

// ReleaseApprovedCredit frees the credit of an approved order that was
// cancelled: its reservation if it still has one (approved before approvals
// were settled), else total from the settled sum. The settled sum does not
// know its orders, so it relies on each order being cancelled once (the
// order service's rule) and each cancellation applied once (the inbox); it
// never releases more than is settled.
func (c Customer) ReleaseApprovedCredit(orderID uuid.UUID, total events.Money) []events.Event {
	if evs := c.ReleaseCredit(orderID); evs != nil {
		return evs
	}
	if total <= 0 || total > c.Settled {
		return nil
	}
	return []events.Event{customers.CreditReleased{CustomerID: c.ID, OrderID: orderID, Amount: total}}
}

// Apply returns the state after e. It never changes c's reservations in
// place (a staged event may never commit), and never copies them whole
// either (see Reservations).
func Apply(c Customer, e events.Event) Customer {
	switch e := e.(type) {
	case customers.CustomerRegistered:
		c.ID, c.Registered, c.Name, c.CreditLimit = e.CustomerID, true, e.Name, e.CreditLimit
	case customers.CreditLimitChanged:
		c.CreditLimit = e.CreditLimit
	case customers.CreditReservationFailed:
		c.ID = e.CustomerID
	case customers.CreditReserved:
		c.Reservations = c.Reservations.with(e.OrderID, e.Amount)
		c.Reserved += e.Amount
	case customers.CreditSettled:
		if _, held := c.Reservations.Get(e.OrderID); held {
			c.Reservations = c.Reservations.without(e.OrderID)
			c.Settled += e.Amount
		}
	case customers.CreditReleased:
		if _, held := c.Reservations.Get(e.OrderID); held {
			c.Reservations = c.Reservations.without(e.OrderID)
		} else {
			c.Settled -= e.Amount // an approved order's, released from the settled sum
		}
		c.Reserved -= e.Amount
	}
	return c
}
