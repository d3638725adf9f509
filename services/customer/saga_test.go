package customer

import (
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
	"github.com/eventsaga/eventsaga/services/customer/domain"
)

// The customer's reactions to the order events of one saga, in the order
// they come on the order's partition: a reservation is released when the
// order ends cancelled or rejected, whenever the reservation was made, and
// only once; an approval settles it, once, and the approved order's
// cancellation releases it from the settled sum; nothing else is released.
func TestDecideReleasesForEndedOrders(t *testing.T) {
	cid := uuid.MustParse("0190f5a0-0000-7000-8000-0000000000c1")
	oid := uuid.MustParse("0190f5a0-0000-7000-8000-000000000001")
	registered := customers.CustomerRegistered{CustomerID: cid, Name: "Ada", CreditLimit: 10000}
	created := func(total events.Money) orders.OrderCreated {
		return orders.OrderCreated{OrderID: oid, CustomerID: cid, Total: total, Items: []orders.Item{{ProductID: "p", Quantity: 1, UnitPrice: total}}}
	}
	rejected := func(reason string) orders.OrderRejected {
		return orders.OrderRejected{OrderID: oid, CustomerID: cid, Reason: reason}
	}
	cancelled := orders.OrderCancelled{OrderID: oid, CustomerID: cid, Total: 4000, PreviousStatus: orders.StatusPending}
	reserved := customers.CreditReserved{CustomerID: cid, OrderID: oid, Amount: 4000}
	released := customers.CreditReleased{CustomerID: cid, OrderID: oid, Amount: 4000}
	refused := customers.CreditReservationFailed{CustomerID: cid, OrderID: oid, Amount: 20000, Reason: customers.ReasonInsufficientCredit}
	approved := orders.OrderApproved{OrderID: oid, CustomerID: cid, Total: 4000}
	settled := customers.CreditSettled{CustomerID: cid, OrderID: oid, Amount: 4000}
	cancelledApproved := orders.OrderCancelled{OrderID: oid, CustomerID: cid, Total: 4000, PreviousStatus: orders.StatusApproved}
	other := customers.CreditReserved{CustomerID: cid, OrderID: uuid.New(), Amount: 500}

	tests := []struct {
		name     string
		customer []events.Event // the customer's history
		saga     []events.Event // the order's events, in topic order
		want     []events.Event // what the customer records
	}{
		{"rejected for its deadline after the reservation", []events.Event{registered},
			[]events.Event{created(4000), rejected(orders.ReasonDeadlineExceeded)}, []events.Event{reserved, released}},
		{"a second rejection: released once", []events.Event{registered},
			[]events.Event{created(4000), rejected(orders.ReasonDeadlineExceeded), rejected(orders.ReasonDeadlineExceeded)}, []events.Event{reserved, released}},
		{"cancelled after the reservation", []events.Event{registered},
			[]events.Event{created(4000), cancelled}, []events.Event{reserved, released}},
		{"rejected after a refusal: nothing held", []events.Event{registered},
			[]events.Event{created(20000), rejected(orders.ReasonInsufficientCredit)}, []events.Event{refused}},
		{"approved, then cancelled: settled, then released from the settled sum", []events.Event{registered},
			[]events.Event{created(4000), approved, cancelledApproved}, []events.Event{reserved, settled, released}},
		{"an approval seen twice settles once", []events.Event{registered},
			[]events.Event{created(4000), approved, approved, cancelledApproved}, []events.Event{reserved, settled, released}},
		{"approved before approvals were settled, then cancelled: the reservation is released", []events.Event{registered, reserved},
			[]events.Event{cancelledApproved}, []events.Event{released}},
		{"an approved order's cancellation never releases more than is settled", []events.Event{registered, other},
			[]events.Event{cancelledApproved}, nil},
		{"rejected with nothing reserved", []events.Event{registered},
			[]events.Event{rejected(orders.ReasonDeadlineExceeded)}, nil},
		{"unknown customer", nil,
			[]events.Event{rejected(orders.ReasonDeadlineExceeded)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c domain.Customer
			for _, e := range tt.customer {
				c = domain.Apply(c, e)
			}
			c.ID = cid
			var got []events.Event
			for _, e := range tt.saga {
				evs, err := decide(c, e)
				if err != nil {
					t.Fatalf("%T: %v", e, err)
				}
				for _, d := range evs {
					c = domain.Apply(c, d)
				}
				got = append(got, evs...)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("recorded %v, want %v", got, tt.want)
			}
			var others events.Money // the reservations of other orders
			for o, amount := range c.Reservations.All() {
				if o != oid {
					others += amount
				}
			}
			if held := c.Reserved - others; held != 0 || c.Settled != 0 {
				t.Errorf("%s still reserved for the order, %s settled", held, c.Settled)
			}
		})
	}
}
