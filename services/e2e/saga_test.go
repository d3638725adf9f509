package e2e

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/testenv"
)

func TestSagaOutcomes(t *testing.T) {
	s := startSystem(t)

	t.Run("approved", func(t *testing.T) {
		c := s.register("Ada", "100.00")
		o := s.place(c, 3, "10.00")
		v := s.awaitStatus(o, "APPROVED")
		if v.Total != "30.00" || v.CustomerID != c || v.RejectionReason != nil || v.Version != 2 {
			t.Errorf("order %+v", v)
		}
		s.awaitSaga(o, []string{"OrderCreated", "OrderApproved"}, []string{"CreditReserved", "CreditSettled"})
		if cv := s.customerView(c); cv.Reserved != "30.00" || cv.Available != "70.00" {
			t.Errorf("customer %+v", cv)
		}
	})

	t.Run("refused for credit", func(t *testing.T) {
		c := s.register("Bob", "50.00")
		o := s.place(c, 1, "50.01")
		v := s.awaitStatus(o, "REJECTED")
		if v.RejectionReason == nil || *v.RejectionReason != "INSUFFICIENT_CREDIT" {
			t.Errorf("order %+v", v)
		}
		s.awaitSaga(o, []string{"OrderCreated", "OrderRejected"}, []string{"CreditReservationFailed"})
		if cv := s.customerView(c); cv.Reserved != "0.00" || cv.Available != "50.00" {
			t.Errorf("customer %+v", cv)
		}
	})

	t.Run("unknown customer", func(t *testing.T) {
		stranger := uuid.New()
		o := s.place(stranger, 1, "1.00")
		v := s.awaitStatus(o, "REJECTED")
		if v.RejectionReason == nil || *v.RejectionReason != "UNKNOWN_CUSTOMER" {
			t.Errorf("order %+v", v)
		}
		s.awaitSaga(o, []string{"OrderCreated", "OrderRejected"}, []string{"CreditReservationFailed"})
		mustCall(t, 404, nil, "GET", s.customer.url+"/customers/"+stranger.String(), "")
	})

	t.Run("cancelled approved order gives its credit back", func(t *testing.T) {
		c := s.register("Cy", "100.00")
		o := s.place(c, 4, "20.00")
		s.awaitStatus(o, "APPROVED")
		if cv := s.customerView(c); cv.Reserved != "80.00" {
			t.Fatalf("customer %+v", cv)
		}
		var v orderView
		mustCall(t, 200, &v, "POST", s.order.url+"/orders/"+o.String()+"/cancel", "")
		if v.Status != "CANCELLED" {
			t.Errorf("cancel answered %+v", v)
		}
		s.awaitSaga(o, []string{"OrderCreated", "OrderApproved", "OrderCancelled"}, []string{"CreditReserved", "CreditSettled", "CreditReleased"})
		testenv.WaitFor(t, 10*time.Second, "the credit to come back", func() bool { return s.customerView(c).Reserved == "0.00" })
		if cv := s.customerView(c); cv.Available != "100.00" {
			t.Errorf("customer %+v", cv)
		}
		// Cancelling again, or cancelling a rejected order, is refused.
		mustCall(t, 409, nil, "POST", s.order.url+"/orders/"+o.String()+"/cancel", "")
	})

	t.Run("history by version and time", func(t *testing.T) {
		c := s.register("Dee", "10.00")
		o := s.place(c, 1, "5.00")
		s.awaitStatus(o, "APPROVED")
		var evs []struct {
			OccurredAt string `json:"occurred_at"`
			EventType  string `json:"event_type"`
		}
		mustCall(t, 200, &evs, "GET", s.order.url+"/orders/"+o.String()+"/events", "")
		if len(evs) != 2 || evs[0].EventType != "OrderCreated" || evs[1].EventType != "OrderApproved" {
			t.Fatalf("events %+v", evs)
		}
		var at1 orderView
		mustCall(t, 200, &at1, "GET", s.order.url+"/orders/"+o.String()+"?version=1", "")
		if at1.Status != "PENDING" || at1.Version != 1 {
			t.Errorf("at version 1: %+v", at1)
		}
		var atCreation orderView
		mustCall(t, 200, &atCreation, "GET", s.order.url+"/orders/"+o.String()+"?at="+evs[0].OccurredAt, "")
		if atCreation.Status != "PENDING" && evs[0].OccurredAt != evs[1].OccurredAt {
			t.Errorf("as of creation: %+v", atCreation)
		}
		mustCall(t, 404, nil, "GET", s.order.url+"/orders/"+o.String()+"?version=3", "")
		mustCall(t, 404, nil, "GET", s.order.url+"/orders/"+o.String()+"?at=2001-01-01T00:00:00Z", "")
	})
}

// An order cancelled while PENDING, before the customer service reserved
// its credit: the reservation arrives after the cancellation and is
// released; the order stays CANCELLED and nothing stays reserved.
func TestReservationAfterCancelIsReleased(t *testing.T) {
	s := startSystem(t)
	c := s.register("Eve", "100.00")
	s.customer.stop() // the customer service is down while the order is placed and cancelled

	o := s.place(c, 1, "40.00")
	var v orderView
	mustCall(t, 200, &v, "POST", s.order.url+"/orders/"+o.String()+"/cancel", "")
	if v.Status != "CANCELLED" {
		t.Fatalf("cancel answered %+v", v)
	}

	s.startCustomer() // it now sees OrderCreated, then OrderCancelled
	s.awaitSaga(o, []string{"OrderCreated", "OrderCancelled"}, []string{"CreditReserved", "CreditReleased"})
	testenv.WaitFor(t, 10*time.Second, "the order service to see the reservation", func() bool {
		return s.order.svc.ConsumerStats().Applied >= 1
	})
	if v := s.orderView(o); v.Status != "CANCELLED" || v.Version != 2 {
		t.Errorf("order after the late reservation: %+v", v)
	}
	if cv := s.customerView(c); cv.Reserved != "0.00" || cv.Available != "100.00" {
		t.Errorf("customer %+v", cv)
	}
}

// 200 orders of 10.00 at once against a limit of 1000.00: exactly 100 are
// approved, 100 rejected, and 1000.00 is reserved.
func TestContention(t *testing.T) {
	s := startSystem(t)
	c := s.register("Contended", "1000.00")
	const n = 200
	ids := make([]uuid.UUID, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { ids[i] = s.place(c, 1, "10.00") })
	}
	wg.Wait()

	decided := map[uuid.UUID]string{}
	testenv.WaitFor(t, 60*time.Second, "every order to be decided", func() bool {
		for _, e := range seenOn(t, s.topics) {
			if e.Topic == s.ordersTopic && (e.Env.EventType == "OrderApproved" || e.Env.EventType == "OrderRejected") {
				decided[e.Env.AggregateID] = e.Env.EventType
			}
		}
		return len(decided) >= n
	})
	approved, rejected := 0, 0
	for _, id := range ids {
		switch decided[id] {
		case "OrderApproved":
			approved++
		case "OrderRejected":
			rejected++
		}
	}
	if approved != 100 || rejected != 100 || len(decided) != n {
		t.Errorf("%d approved, %d rejected, %d decided; want 100, 100, 200", approved, rejected, len(decided))
	}
	if cv := s.customerView(c); cv.Reserved != "1000.00" || cv.Available != "0.00" {
		t.Errorf("customer %+v", cv)
	}
	for _, id := range ids[:10] { // REST agrees with the topic
		if want := map[string]string{"OrderApproved": "APPROVED", "OrderRejected": "REJECTED"}[decided[id]]; s.orderView(id).Status != want {
			t.Errorf("order %s: REST says %s, topic %s", id, s.orderView(id).Status, decided[id])
		}
	}
}

// Every record of a run delivered a second time changes nothing: no event
// is appended, no state moves, and both consumers count every copy as a
// duplicate.
func TestRedeliveryChangesNothing(t *testing.T) {
	s := startSystem(t)
	rich, poor := s.register("Rich", "1000.00"), s.register("Poor", "5.00")
	var orders []uuid.UUID
	for i := range 6 {
		orders = append(orders, s.place(rich, 1+i, "10.00"))
	}
	orders = append(orders, s.place(poor, 1, "10.00"), s.place(uuid.New(), 1, "1.00"))
	for _, o := range orders {
		testenv.WaitFor(t, 20*time.Second, "a decision", func() bool { return s.orderView(o).Status != "PENDING" })
	}
	mustCall(t, 200, nil, "POST", s.order.url+"/orders/"+orders[0].String()+"/cancel", "")
	mustCall(t, 200, nil, "PUT", s.customer.url+"/customers/"+rich.String()+"/credit-limit", `{"credit_limit": "900.00"}`)
	testenv.WaitFor(t, 20*time.Second, "the release", func() bool {
		_, onCustomers := s.saga(orders[0])
		return len(onCustomers) == 3 // reserved, settled, released
	})

	s.awaitProjected()
	before := s.state(orders, rich, poor)
	recs := seenOn(t, s.topics)
	// Wait until the consumers have seen everything once.
	testenv.WaitFor(t, 20*time.Second, "the consumers to catch up", func() bool {
		return s.consumed() == len(recs)
	})
	dupsBefore := s.order.svc.ConsumerStats().Duplicates + s.customer.svc.ConsumerStats().Duplicates

	// Deliver every record again, after the originals, keys and headers kept.
	var copies []*kgo.Record
	for _, r := range s.topics.Records() {
		copies = append(copies, &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers})
	}
	cl := s.kafka.Client(t, kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err := cl.ProduceSync(context.Background(), copies...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "every copy to be consumed", func() bool {
		dups := s.order.svc.ConsumerStats().Duplicates + s.customer.svc.ConsumerStats().Duplicates
		return dups-dupsBefore >= int64(len(copies))
	})
	s.awaitProjected()
	if after := s.state(orders, rich, poor); after != before {
		t.Errorf("state changed by redelivery:\nbefore %s\nafter  %s", before, after)
	}
	if got := len(seenOn(t, s.topics)); got != 2*len(recs) {
		t.Errorf("%d records on the topics, want %d (the originals and their copies, nothing new)", got, 2*len(recs))
	}

	// A third delivery of only the first event of every stream: a replay
	// of whole streams can cancel itself out, a stale event alone cannot.
	var firsts []*kgo.Record
	for _, e := range seenOn(t, s.topics)[:len(recs)] {
		if e.Env.AggregateVersion == 1 {
			firsts = append(firsts, &kgo.Record{Topic: e.Topic, Key: []byte(e.Key), Value: mustJSON(t, e.Env), Headers: e.Headers})
		}
	}
	dupsBefore = s.order.svc.ConsumerStats().Duplicates + s.customer.svc.ConsumerStats().Duplicates
	if err := cl.ProduceSync(context.Background(), firsts...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "the first events to be consumed again", func() bool {
		dups := s.order.svc.ConsumerStats().Duplicates + s.customer.svc.ConsumerStats().Duplicates
		return dups-dupsBefore >= int64(len(firsts))
	})
	s.awaitProjected()
	if after := s.state(orders, rich, poor); after != before {
		t.Errorf("state changed by a stale redelivery:\nbefore %s\nafter  %s", before, after)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// awaitProjected waits until the projector has every record on the topics.
func (s *system) awaitProjected() {
	s.t.Helper()
	testenv.WaitFor(s.t, 30*time.Second, "the projector to catch up", func() bool {
		var st struct {
			TotalLag *int64 `json:"total_lag"`
		}
		mustCall(s.t, 200, &st, "GET", s.projector.url+"/status", "")
		return st.TotalLag != nil && *st.TotalLag == 0
	})
}

// consumed is how many records the two consumers have dealt with.
func (s *system) consumed() int {
	o, c := s.order.svc.ConsumerStats(), s.customer.svc.ConsumerStats()
	// Each consumer reads one topic; records of the other are not counted.
	return int(o.Applied+o.Duplicates+o.DeadLettered) + int(c.Applied+c.Duplicates+c.DeadLettered)
}

// state renders everything a redelivery could change.
func (s *system) state(orders []uuid.UUID, customers ...uuid.UUID) string {
	s.t.Helper()
	out := ""
	for _, o := range orders {
		v := s.orderView(o)
		out += v.Status + "/" + itoa(int(v.Version)) + " "
	}
	for _, c := range customers {
		v := s.customerView(c)
		out += v.Reserved + "/" + v.CreditLimit + "/" + itoa(int(v.Version)) + " "
	}
	out += "| read model: "
	for _, o := range orders {
		_, b := call(s.t, "GET", s.projector.url+"/orders/"+o.String(), "")
		out += string(b)
	}
	for _, c := range customers {
		_, b := call(s.t, "GET", s.projector.url+"/customers/"+c.String(), "")
		out += string(b)
	}
	return out + "events " + itoa(count(s.t, s.orderPool, "events")) + "+" + itoa(count(s.t, s.customerPool, "events"))
}
