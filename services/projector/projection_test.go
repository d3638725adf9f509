package projector

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
)

// history makes the events of n orders of a few customers, each order's
// events in version order: created, then approved or rejected, and some of
// the approved ones cancelled; and the customers' own events.
func history(r *rand.Rand, n int) (orderStreams, customerStreams [][]Event) {
	cust := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ev := func(id uuid.UUID, v int64, data events.Event) Event {
		at = at.Add(time.Millisecond)
		return Event{Env: events.Envelope{AggregateID: id, AggregateVersion: v, OccurredAt: at, EventType: data.EventType()}, Data: data}
	}
	for i := range n {
		id, c := uuid.New(), cust[i%len(cust)]
		total := events.Money(100 * (i + 1))
		s := []Event{ev(id, 1, orders.OrderCreated{OrderID: id, CustomerID: c, Total: total})}
		switch r.IntN(4) {
		case 0:
			s = append(s, ev(id, 2, orders.OrderRejected{OrderID: id, CustomerID: c, Reason: orders.ReasonInsufficientCredit}))
		case 1:
			s = append(s, ev(id, 2, orders.OrderApproved{OrderID: id, CustomerID: c, Total: total}),
				ev(id, 3, orders.OrderCancelled{OrderID: id, CustomerID: c, Total: total, PreviousStatus: orders.StatusApproved}))
		case 2:
			s = append(s, ev(id, 2, orders.OrderApproved{OrderID: id, CustomerID: c, Total: total}))
		} // 3: stays PENDING
		orderStreams = append(orderStreams, s)
	}
	for i, c := range cust {
		customerStreams = append(customerStreams, []Event{
			ev(c, 1, customers.CustomerRegistered{CustomerID: c, Name: fmt.Sprint("c", i), CreditLimit: 100000}),
			ev(c, 2, customers.CreditReserved{CustomerID: c, OrderID: uuid.New(), Amount: 500}),
			ev(c, 3, customers.CreditLimitChanged{CustomerID: c, CreditLimit: 90000}),
			ev(c, 4, customers.CreditReleased{CustomerID: c, OrderID: uuid.New(), Amount: 200}),
		})
	}
	return orderStreams, customerStreams
}

// interleave merges streams at random, keeping each stream's order, and
// sprinkles in redeliveries of events already given.
func interleave(r *rand.Rand, streams [][]Event) []Event {
	next := make([]int, len(streams))
	var out []Event
	for left := true; left; {
		left = false
		for _, i := range r.Perm(len(streams)) {
			if next[i] < len(streams[i]) {
				out = append(out, streams[i][next[i]])
				next[i]++
				left = true
				if r.IntN(5) == 0 { // a redelivery of something already given
					out = append(out, out[r.IntN(len(out))])
				}
				break
			}
		}
	}
	return out
}

// project runs evs through the folds in batches of random sizes, carrying
// rows and counts between batches as the database would.
func project(r *rand.Rand, orderEvs, customerEvs []Event) (map[uuid.UUID]OrderRow, map[uuid.UUID]CustomerRow, map[uuid.UUID]Counts) {
	orderRows := map[uuid.UUID]*OrderRow{}
	customerRows := map[uuid.UUID]*CustomerRow{}
	counts := map[uuid.UUID]Counts{}
	for len(orderEvs) > 0 {
		n := min(len(orderEvs), 1+r.IntN(7))
		_, delta, _ := foldOrders(orderRows, orderEvs[:n])
		for id, d := range delta {
			c := counts[id]
			c.Pending, c.Approved, c.Rejected, c.Cancelled = c.Pending+d.Pending, c.Approved+d.Approved, c.Rejected+d.Rejected, c.Cancelled+d.Cancelled
			counts[id] = c
		}
		orderEvs = orderEvs[n:]
	}
	for len(customerEvs) > 0 {
		n := min(len(customerEvs), 1+r.IntN(3))
		foldCustomers(customerRows, customerEvs[:n])
		customerEvs = customerEvs[n:]
	}
	o, c := map[uuid.UUID]OrderRow{}, map[uuid.UUID]CustomerRow{}
	for id, row := range orderRows {
		o[id] = *row
	}
	for id, row := range customerRows {
		c[id] = *row
	}
	return o, c, counts
}

// Whatever the interleaving of different aggregates, whatever duplicates and
// stale redeliveries, and however the events fall into batches, the read
// model comes out the same.
func TestProjectionIndependentOfInterleavingAndRedelivery(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	orderStreams, customerStreams := history(r, 60)
	var inOrder []Event
	for _, s := range orderStreams {
		inOrder = append(inOrder, s...)
	}
	var custInOrder []Event
	for _, s := range customerStreams {
		custInOrder = append(custInOrder, s...)
	}
	wantOrders, wantCustomers, wantCounts := project(r, inOrder, custInOrder)

	// The expected counts, from the orders' final statuses.
	byStatus := map[uuid.UUID]Counts{}
	for _, o := range wantOrders {
		c := byStatus[o.CustomerID]
		c.add(o.Status, 1)
		byStatus[o.CustomerID] = c
	}
	if !reflect.DeepEqual(byStatus, wantCounts) {
		t.Fatalf("counts %v do not match the orders' statuses %v", wantCounts, byStatus)
	}
	for _, c := range wantCustomers {
		if !c.Registered || c.Reserved != 300 || c.CreditLimit != 90000 || c.Version != 4 {
			t.Fatalf("customer row %+v", c)
		}
	}

	for trial := range 50 {
		o, c, k := project(r, interleave(r, orderStreams), interleave(r, customerStreams))
		if !reflect.DeepEqual(o, wantOrders) || !reflect.DeepEqual(c, wantCustomers) || !reflect.DeepEqual(k, wantCounts) {
			t.Fatalf("trial %d: a different read model", trial)
		}
	}
}
