package domain

import (
	"encoding/json"
	"maps"
	"runtime"
	"testing"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
)

// A snapshot reads back as the state it was taken of: every reservation
// with its amount, none of those released, whatever the shard.
func TestReservationsSurviveASnapshot(t *testing.T) {
	c := given(registered)
	want := map[uuid.UUID]events.Money{}
	for i := range 600 {
		order := uuid.Must(uuid.NewV7())
		amount := events.Money(i * 7)
		c = Apply(c, customers.CreditReserved{CustomerID: cid, OrderID: order, Amount: amount})
		want[order] = amount
		if i%3 == 0 {
			c = Apply(c, customers.CreditReleased{CustomerID: cid, OrderID: order, Amount: amount})
			delete(want, order)
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var got Customer
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if held := maps.Collect(got.Reservations.All()); !maps.Equal(held, want) || got.Reservations.Len() != len(want) {
		t.Errorf("%d reservations read back (Len %d), want %d; equal: %v", len(held), got.Reservations.Len(), len(want), maps.Equal(held, want))
	}
	if got.Reserved != c.Reserved || got.CreditLimit != c.CreditLimit || got.Name != c.Name || !got.Registered {
		t.Errorf("read back %+v", got)
	}
	// Decisions on the state read back are those on the original.
	for order := range want {
		if a, b := c.ReleaseCredit(order), got.ReleaseCredit(order); len(a) != 1 || len(b) != 1 || a[0] != b[0] {
			t.Fatalf("release of %s: %v from the state, %v from its snapshot", order, a, b)
		}
	}

	var empty Customer
	for _, in := range []string{`{"reservations": null}`, `{"reservations": ""}`, `{}`} {
		if err := json.Unmarshal([]byte(in), &empty); err != nil || empty.Reservations.Len() != 0 {
			t.Errorf("%s: %v, %d reservations", in, err, empty.Reservations.Len())
		}
	}
	if b, err := json.Marshal(Customer{}); err != nil || json.Unmarshal(b, &empty) != nil || empty.Reservations.Len() != 0 {
		t.Errorf("an empty customer: %s, %v", b, err)
	}
	for _, bad := range []string{`{"reservations": "not base64!"}`, `{"reservations": "AAAA"}`, `{"reservations": {"x": "1.00"}}`} {
		if err := json.Unmarshal([]byte(bad), &empty); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// Apply on a customer with many reservations copies a small part of them,
// not all: a decision must not cost in proportion to every order the
// customer ever had approved.
func TestApplyCopiesLittleOfManyReservations(t *testing.T) {
	const n = 20_000
	orders := make([]uuid.UUID, n)
	for i := range orders {
		orders[i] = uuid.Must(uuid.NewV7())
	}
	c := manyReservations(cid, orders)
	if c.Reservations.Len() != n || c.Reserved != n*100 {
		t.Fatalf("%d reservations, %s reserved", c.Reservations.Len(), c.Reserved)
	}
	const applies = 100
	evs := make([]events.Event, applies)
	for i := range evs {
		if i%2 == 0 {
			evs[i] = customers.CreditReserved{CustomerID: cid, OrderID: uuid.Must(uuid.NewV7()), Amount: 100}
		} else {
			evs[i] = customers.CreditReleased{CustomerID: cid, OrderID: orders[i], Amount: 100}
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, e := range evs {
		_ = Apply(c, e)
	}
	runtime.ReadMemStats(&after)
	// Copying all 20,000 would allocate over 500 KiB an event; a shard's
	// share, about 80 of them, and the shard index a few KiB.
	if perApply := (after.TotalAlloc - before.TotalAlloc) / applies; perApply > 64<<10 {
		t.Errorf("Apply allocated %d bytes an event on a customer with %d reservations; want under 64 KiB", perApply, n)
	}
	if c.Reservations.Len() != n {
		t.Errorf("the state applied to changed: %d reservations", c.Reservations.Len())
	}
}
