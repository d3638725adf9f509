package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/internal/testenv"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/services/order"
)

// An order that gets no credit decision (the customer service is down) is
// rejected with DEADLINE_EXCEEDED once its deadline has passed, not before.
// When the customer service comes back it reads the OrderCreated only then,
// after the rejection: it reserves, reads the rejection, and releases; the
// order service ignores the late reservation. One decision, nothing held.
func TestDeadlineRejectsAnUndecidedOrder(t *testing.T) {
	const deadline = 2 * time.Second
	s := startSystem(t, withOrderDeadline(deadline))
	c := s.register("Fay", "100.00")
	s.customer.stop() // no credit decision can come

	o := s.place(c, 1, "40.00")
	v := s.awaitStatus(o, "REJECTED")
	if v.RejectionReason == nil || *v.RejectionReason != "DEADLINE_EXCEEDED" || v.Version != 2 {
		t.Fatalf("order after its deadline: %+v", v)
	}
	var evs []events.Envelope
	mustCall(t, 200, &evs, "GET", s.order.url+"/orders/"+o.String()+"/events", "")
	if len(evs) != 2 {
		t.Fatalf("%d events", len(evs))
	}
	created, rejected := evs[0], evs[1]
	if waited := rejected.OccurredAt.Sub(created.OccurredAt); waited < deadline {
		t.Errorf("rejected %v after it was placed, before its deadline of %v", waited, deadline)
	}
	if rejected.CorrelationID != o || rejected.CausationID != created.EventID {
		t.Errorf("rejection correlation %s, causation %s; want the order %s and its OrderCreated %s",
			rejected.CorrelationID, rejected.CausationID, o, created.EventID)
	}

	// The customer service is back and reads OrderCreated, then OrderRejected.
	before := s.order.svc.ConsumerStats().Applied
	s.startCustomer()
	s.awaitSaga(o, []string{"OrderCreated", "OrderRejected"}, []string{"CreditReserved", "CreditReleased"})
	if r := s.sagaEvent(o, "CreditReserved"); !r.Env.OccurredAt.After(rejected.OccurredAt) {
		t.Errorf("the reservation (%s) came before the rejection (%s): not the arrival order under test", r.Env.OccurredAt, rejected.OccurredAt)
	}
	testenv.WaitFor(t, 10*time.Second, "the order service to read the late reservation and the release", func() bool {
		return s.order.svc.ConsumerStats().Applied >= before+2
	})
	if v := s.orderView(o); v.Status != "REJECTED" || v.Version != 2 {
		t.Errorf("order after the late reservation: %+v", v)
	}
	if cv := s.customerView(c); cv.Reserved != "0.00" || cv.Available != "100.00" {
		t.Errorf("customer %+v", cv)
	}
}

// The other arrival order: the customer service reserves credit for a
// PENDING order, but the order service does not hear of it before the
// deadline (here, an order service whose consumer reads a topic nobody
// writes to), rejects the order, and the customer service releases the
// credit when it reads the rejection. When the order service does read the
// reservation, late, it records nothing.
func TestReservationBeforeDeadlineIsReleased(t *testing.T) {
	const deadline = 3 * time.Second
	s := startSystem(t, withOrderDeadline(deadline))
	c := s.register("Gil", "100.00")
	s.order.stop()
	s.startDeafOrder()

	o := s.place(c, 1, "40.00")
	testenv.WaitFor(t, 10*time.Second, "the customer service to reserve", func() bool { return s.customerView(c).Reserved == "40.00" })
	if v := s.orderView(o); v.Status != "PENDING" {
		t.Fatalf("order %+v when its credit was reserved; want it PENDING, still before its deadline", v)
	}
	v := s.awaitStatus(o, "REJECTED")
	if v.RejectionReason == nil || *v.RejectionReason != "DEADLINE_EXCEEDED" || v.Version != 2 {
		t.Fatalf("order after its deadline: %+v", v)
	}
	s.awaitSaga(o, []string{"OrderCreated", "OrderRejected"}, []string{"CreditReserved", "CreditReleased"})
	testenv.WaitFor(t, 10*time.Second, "the credit to be released", func() bool { return s.customerView(c).Reserved == "0.00" })

	// The order service that hears the customer service is back: it reads
	// the reservation and the release, and records nothing.
	s.order.stop()
	s.startOrder()
	testenv.WaitFor(t, 20*time.Second, "the order service to read the late reservation and the release", func() bool {
		return s.order.svc.ConsumerStats().Applied >= 2
	})
	if v := s.orderView(o); v.Status != "REJECTED" || v.Version != 2 {
		t.Errorf("order after the late reservation: %+v", v)
	}
	if cv := s.customerView(c); cv.Reserved != "0.00" || cv.Available != "100.00" {
		t.Errorf("customer %+v", cv)
	}
	s.awaitSaga(o, []string{"OrderCreated", "OrderRejected"}, []string{"CreditReserved", "CreditReleased"})
}

// An order service that was down for longer than the deadline applies the
// credit decisions that waited for it before it enforces the deadline: an
// order whose credit was reserved meanwhile is approved, not rejected.
func TestRestartAppliesWaitingDecisionsFirst(t *testing.T) {
	const deadline = 2 * time.Second
	s := startSystem(t, withOrderDeadline(deadline))
	c := s.register("Ivy", "100.00")
	s.customer.stop()
	o := s.place(c, 1, "40.00")
	s.order.stop()
	s.startCustomer()
	testenv.WaitFor(t, 10*time.Second, "the customer service to reserve", func() bool { return s.customerView(c).Reserved == "40.00" })
	time.Sleep(deadline + time.Second) // the order is long past its deadline when the order service is back

	s.startOrder()
	v := s.awaitStatus(o, "APPROVED")
	if v.Version != 2 {
		t.Errorf("order %+v", v)
	}
	s.awaitSaga(o, []string{"OrderCreated", "OrderApproved"}, []string{"CreditReserved", "CreditSettled"})
}

// startDeafOrder starts, in place of s.order, an order service on the same
// database that never hears of credit decisions: its consumer reads a topic
// nobody writes to. It places orders and enforces their deadline.
func (s *system) startDeafOrder() {
	cfg := order.Config{Config: s.base(s.orderDB, "order-service-deaf"), Deadline: s.orderDeadline}
	cfg.CustomersTopic = s.kafka.Topic("customers.unheard")
	svc, err := order.New(context.Background(), cfg, testenv.Logger(s.t).With("service", "order (deaf)"))
	if err != nil {
		s.t.Fatal(err)
	}
	s.order = serve(s.t, svc, svc.Serve)
}

// sagaEvent returns the event of type typ of the saga of orderID, as read
// from the topics.
func (s *system) sagaEvent(orderID uuid.UUID, typ string) seen {
	s.t.Helper()
	for _, e := range seenOn(s.t, s.topics) {
		if e.Env.CorrelationID == orderID && e.Env.EventType == typ {
			return e
		}
	}
	s.t.Fatalf("no %s in the saga of %s", typ, orderID)
	return seen{}
}

// GET /sagas/stuck on the projector lists the orders PENDING for longer than
// older_than, and only those, a page at a time; a bad parameter is a 400.
func TestStuckSagas(t *testing.T) {
	s := startSystem(t) // the default deadline, 30 s: longer than this test
	c := s.register("Hal", "100.00")
	decided := s.place(c, 1, "10.00")
	s.awaitStatus(decided, "APPROVED")
	s.customer.stop() // the next orders stay PENDING
	stuck := []uuid.UUID{s.place(c, 1, "20.00"), s.place(c, 1, "30.00")}
	slices.SortFunc(stuck, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	for _, o := range stuck {
		s.readOrderAt(o, 1)
	}
	s.readOrderAt(decided, 2)

	stuckNow := func(query string) (ids []uuid.UUID, next *string) {
		t.Helper()
		var page struct {
			Orders []readOrder `json:"orders"`
			Next   *string     `json:"next"`
		}
		mustCall(t, 200, &page, "GET", s.projector.url+"/sagas/stuck"+query, "")
		for _, o := range page.Orders {
			if o.Status != "PENDING" {
				t.Errorf("stuck order %+v is not PENDING", o)
			}
			ids = append(ids, o.OrderID)
		}
		return ids, page.Next
	}
	// Both are younger than the default, 10 s, and than an hour.
	if ids, _ := stuckNow(""); len(ids) != 0 {
		t.Errorf("stuck for 10 s: %v; want none yet", ids)
	}
	if ids, _ := stuckNow("?older_than=1h"); len(ids) != 0 {
		t.Errorf("stuck for an hour: %v; want none", ids)
	}
	var ids []uuid.UUID
	testenv.WaitFor(t, 10*time.Second, "the orders to be PENDING for 1 s", func() bool {
		ids, _ = stuckNow("?older_than=1s")
		return len(ids) >= len(stuck)
	})
	if !slices.Equal(ids, stuck) {
		t.Errorf("stuck for 1 s: %v; want %v (and not the approved %s)", ids, stuck, decided)
	}
	first, next := stuckNow("?older_than=1s&limit=1")
	if !slices.Equal(first, stuck[:1]) || next == nil || *next != stuck[0].String() {
		t.Errorf("first page of 1: %v, next %v; want %v, next %s", first, next, stuck[:1], stuck[0])
	}
	if second, next := stuckNow("?older_than=1s&limit=1&after=" + stuck[0].String()); !slices.Equal(second, stuck[1:]) || next == nil {
		t.Errorf("second page of 1: %v, next %v; want %v and a next page", second, next, stuck[1:])
	}

	for _, query := range []string{"older_than=ten", "older_than=-1s", "older_than=10", "limit=0", "limit=501", "after=nope"} {
		status, body, header := sendMalformed(t, "GET", s.projector.url+"/sagas/stuck?"+query, "")
		if status != 400 || header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("?%s: %d %s %s; want a 400 problem", query, status, header.Get("Content-Type"), body)
		}
	}
}
