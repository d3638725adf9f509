package customer

import (
	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/services/customer/domain"
)

// replayMeasured: a replay of the whole stream is quick enough to measure.
const replayMeasured = true

// largeCustomer is the large customer at version v: registered, then
// holding 1.00 for each order, reserved and settled.
func largeCustomer(id uuid.UUID, orders []uuid.UUID, v int64) domain.Customer {
	c := domain.Apply(domain.Customer{}, customers.CustomerRegistered{CustomerID: id, Name: "Big Buyer", CreditLimit: 10_000_000_000})
	for i, o := range orders {
		if int64(2*i+2) > v {
			break
		}
		c = domain.Apply(c, customers.CreditReserved{CustomerID: id, OrderID: o, Amount: 100})
		if int64(2*i+3) > v {
			break
		}
		c = domain.Apply(c, customers.CreditSettled{CustomerID: id, OrderID: o, Amount: 100})
	}
	return c
}
