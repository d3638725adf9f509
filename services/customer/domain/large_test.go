package domain

import (
	"encoding/json"
	"testing"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
)

// approved is how many orders the large customer holds credit for.
const approved = 100_000

// largeCustomer returns a registered customer holding 1.00 for each of
// approved orders, and events reserving credit for 99 more: the most a load
// folds after a snapshot (SNAPSHOT_EVERY 100).
func largeCustomer(b testing.TB) (Customer, []events.Event) {
	b.Helper()
	ids := make([]uuid.UUID, approved)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7())
	}
	c := manyReservations(cid, ids)
	if c.Reserved != approved*100 {
		b.Fatalf("reserved %s", c.Reserved)
	}
	tail := make([]events.Event, 99)
	for i := range tail {
		tail[i] = customers.CreditReserved{CustomerID: cid, OrderID: uuid.Must(uuid.NewV7()), Amount: 100}
	}
	return c, tail
}

// The costs of a customer with 100,000 approved orders, in memory: what a
// decision costs (ReserveCredit, then Apply twice, as DecideAll does: once
// for the decisions after it, once to stage), what a snapshot costs to
// write and read, and a load (snapshot plus 99 events). The snapshot's size
// is reported as snapshot-bytes.
//
//	go test -run '^$' -bench LargeCustomer -benchtime 20x ./services/customer/domain/
func BenchmarkLargeCustomer(b *testing.B) {
	c, tail := largeCustomer(b)
	snap, err := json.Marshal(c)
	if err != nil {
		b.Fatal(err)
	}
	next := uuid.Must(uuid.NewV7())
	b.Run("Decision", func(b *testing.B) {
		for b.Loop() {
			evs, err := c.ReserveCredit(next, 100)
			if err != nil || len(evs) != 1 {
				b.Fatal(evs, err)
			}
			_ = Apply(Apply(c, evs[0]), evs[0])
		}
	})
	b.Run("ReleaseDecision", func(b *testing.B) {
		held := tail[0].(customers.CreditReserved)
		c := Apply(c, held)
		for b.Loop() {
			evs := c.ReleaseCredit(held.OrderID)
			if len(evs) != 1 {
				b.Fatal(evs)
			}
			_ = Apply(Apply(c, evs[0]), evs[0])
		}
	})
	b.Run("SnapshotEncode", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(c); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(snap)), "snapshot-bytes")
	})
	b.Run("Load", func(b *testing.B) {
		for b.Loop() {
			var got Customer
			if err := json.Unmarshal(snap, &got); err != nil {
				b.Fatal(err)
			}
			for _, e := range tail {
				got = Apply(got, e)
			}
			if got.Reserved != (approved+99)*100 {
				b.Fatalf("reserved %s", got.Reserved)
			}
		}
	})
}
