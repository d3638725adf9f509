package customer

import (
	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/services/customer/domain"
)

// replayMeasured: a replay of the whole stream is quick enough to measure.
const replayMeasured = true

// largeCustomer is a registered customer holding 1.00 for each order.
func largeCustomer(id uuid.UUID, orders []uuid.UUID) domain.Customer {
	c := domain.Apply(domain.Customer{}, customers.CustomerRegistered{CustomerID: id, Name: "Big Buyer", CreditLimit: 10_000_000_000})
	for _, o := range orders {
		c = domain.Apply(c, customers.CreditReserved{CustomerID: id, OrderID: o, Amount: 100})
	}
	return c
}
