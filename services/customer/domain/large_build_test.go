package domain

import (
	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
)

// manyReservations is a registered customer holding 1.00 for each order.
func manyReservations(id uuid.UUID, orders []uuid.UUID) Customer {
	c := Apply(Customer{}, customers.CustomerRegistered{CustomerID: id, Name: "Big Buyer", CreditLimit: events.MaxMoney})
	for _, o := range orders {
		c = Apply(c, customers.CreditReserved{CustomerID: id, OrderID: o, Amount: 100})
	}
	return c
}
