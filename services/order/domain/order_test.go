package domain

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
)

var (
	orderID    = uuid.MustParse("0190f5a0-0000-7000-8000-000000000001")
	customerID = uuid.MustParse("0190f5a0-0000-7000-8000-0000000000c1")
	twoItems   = []orders.Item{{ProductID: "apple", Quantity: 3, UnitPrice: 250}, {ProductID: "pear", Quantity: 1, UnitPrice: 1000}}
	created    = orders.OrderCreated{OrderID: orderID, CustomerID: customerID, Items: twoItems, Total: 1750}
)

func given(evs ...events.Event) Order {
	var o Order
	for _, e := range evs {
		o = Apply(o, e)
	}
	return o
}

func TestPlace(t *testing.T) {
	got, err := Place(orderID, customerID, twoItems)
	if err != nil || !reflect.DeepEqual(got, []events.Event{created}) {
		t.Fatalf("Place = %v, %v", got, err)
	}
	if o := given(got...); o.Status != orders.StatusPending || o.Total != 1750 {
		t.Errorf("after OrderCreated: %+v", o)
	}
}

func TestPlaceRefusals(t *testing.T) {
	many := make([]orders.Item, MaxItems+1)
	for i := range many {
		many[i] = orders.Item{ProductID: "p", Quantity: 1, UnitPrice: 1}
	}
	tests := []struct {
		name     string
		customer uuid.UUID
		items    []orders.Item
		field    string
	}{
		{"no customer", uuid.Nil, twoItems, "customer_id"},
		{"no items", customerID, nil, "items"},
		{"too many items", customerID, many, "items"},
		{"empty product", customerID, []orders.Item{{ProductID: " ", Quantity: 1, UnitPrice: 1}}, "items[0].product_id"},
		{"long product", customerID, []orders.Item{{ProductID: strings.Repeat("p", MaxProductIDLength+1), Quantity: 1, UnitPrice: 1}}, "items[0].product_id"},
		{"control char", customerID, []orders.Item{{ProductID: "a\x00b", Quantity: 1, UnitPrice: 1}}, "items[0].product_id"},
		{"zero quantity", customerID, []orders.Item{{ProductID: "p", Quantity: 0, UnitPrice: 1}}, "items[0].quantity"},
		{"negative quantity", customerID, []orders.Item{{ProductID: "p", Quantity: -2, UnitPrice: 1}}, "items[0].quantity"},
		{"huge quantity", customerID, []orders.Item{{ProductID: "p", Quantity: MaxQuantity + 1, UnitPrice: 1}}, "items[0].quantity"},
		{"negative price", customerID, []orders.Item{{ProductID: "p", Quantity: 1, UnitPrice: -1}}, "items[0].unit_price"},
		{"total overflow", customerID, []orders.Item{{ProductID: "p", Quantity: MaxQuantity, UnitPrice: events.MaxMoney / 2}}, "items"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := Place(orderID, tt.customer, tt.items)
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.field || evs != nil {
				t.Errorf("Place = %v, %v; want a validation error on %s", evs, err, tt.field)
			}
		})
	}
}

func TestDecisionsAndCancel(t *testing.T) {
	approved := orders.OrderApproved{OrderID: orderID, CustomerID: customerID, Total: 1750}
	rejected := orders.OrderRejected{OrderID: orderID, CustomerID: customerID, Reason: orders.ReasonInsufficientCredit}
	cancelledPending := orders.OrderCancelled{OrderID: orderID, CustomerID: customerID, Total: 1750, PreviousStatus: orders.StatusPending}
	cancelledApproved := orders.OrderCancelled{OrderID: orderID, CustomerID: customerID, Total: 1750, PreviousStatus: orders.StatusApproved}
	expired := orders.OrderRejected{OrderID: orderID, CustomerID: customerID, Reason: orders.ReasonDeadlineExceeded}
	expire := func(o Order) ([]events.Event, error) { return o.Expire(), nil }

	tests := []struct {
		name   string
		given  []events.Event
		when   func(Order) ([]events.Event, error)
		then   []events.Event
		err    error
		status string // after the events
	}{
		{"pending is approved", []events.Event{created}, func(o Order) ([]events.Event, error) { return o.Approve(), nil }, []events.Event{approved}, nil, orders.StatusApproved},
		{"pending is rejected", []events.Event{created}, func(o Order) ([]events.Event, error) { return o.Reject(orders.ReasonInsufficientCredit), nil }, []events.Event{rejected}, nil, orders.StatusRejected},
		{"approved again: nothing", []events.Event{created, approved}, func(o Order) ([]events.Event, error) { return o.Approve(), nil }, nil, nil, orders.StatusApproved},
		{"rejected then reserved: nothing", []events.Event{created, rejected}, func(o Order) ([]events.Event, error) { return o.Approve(), nil }, nil, nil, orders.StatusRejected},
		{"cancelled then reserved: nothing", []events.Event{created, cancelledPending}, func(o Order) ([]events.Event, error) { return o.Approve(), nil }, nil, nil, orders.StatusCancelled},
		{"cancelled then refused: nothing", []events.Event{created, cancelledPending}, func(o Order) ([]events.Event, error) { return o.Reject("X"), nil }, nil, nil, orders.StatusCancelled},
		{"approved then refused: nothing", []events.Event{created, approved}, func(o Order) ([]events.Event, error) { return o.Reject("X"), nil }, nil, nil, orders.StatusApproved},
		{"pending past its deadline is rejected", []events.Event{created}, expire, []events.Event{expired}, nil, orders.StatusRejected},
		{"approved past its deadline: nothing", []events.Event{created, approved}, expire, nil, nil, orders.StatusApproved},
		{"rejected past its deadline: nothing", []events.Event{created, rejected}, expire, nil, nil, orders.StatusRejected},
		{"cancelled past its deadline: nothing", []events.Event{created, cancelledPending}, expire, nil, nil, orders.StatusCancelled},
		{"expired twice: nothing", []events.Event{created, expired}, expire, nil, nil, orders.StatusRejected},
		{"expired then reserved: nothing", []events.Event{created, expired}, func(o Order) ([]events.Event, error) { return o.Approve(), nil }, nil, nil, orders.StatusRejected},
		{"expired then refused: nothing", []events.Event{created, expired}, func(o Order) ([]events.Event, error) { return o.Reject(orders.ReasonInsufficientCredit), nil }, nil, nil, orders.StatusRejected},
		{"cancel expired", []events.Event{created, expired}, Order.Cancel, nil, ErrCannotCancel, orders.StatusRejected},
		{"cancel pending", []events.Event{created}, Order.Cancel, []events.Event{cancelledPending}, nil, orders.StatusCancelled},
		{"cancel approved", []events.Event{created, approved}, Order.Cancel, []events.Event{cancelledApproved}, nil, orders.StatusCancelled},
		{"cancel rejected", []events.Event{created, rejected}, Order.Cancel, nil, ErrCannotCancel, orders.StatusRejected},
		{"cancel cancelled", []events.Event{created, cancelledPending}, Order.Cancel, nil, ErrCannotCancel, orders.StatusCancelled},
		{"cancel nothing", nil, Order.Cancel, nil, ErrNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := given(tt.given...)
			got, err := tt.when(o)
			if !errors.Is(err, tt.err) || !reflect.DeepEqual(got, tt.then) {
				t.Fatalf("got %v, %v; want %v, %v", got, err, tt.then, tt.err)
			}
			if after := applyAll(o, got); after.Status != tt.status {
				t.Errorf("status %q, want %q", after.Status, tt.status)
			}
		})
	}
	if o := given(created, rejected); o.RejectionReason != orders.ReasonInsufficientCredit {
		t.Errorf("rejection reason %q", o.RejectionReason)
	}
	if o := given(created, expired); o.RejectionReason != orders.ReasonDeadlineExceeded {
		t.Errorf("rejection reason after the deadline %q", o.RejectionReason)
	}
}

// applyAll applies evs in order.
func applyAll(o Order, evs []events.Event) Order {
	for _, e := range evs {
		o = Apply(o, e)
	}
	return o
}
