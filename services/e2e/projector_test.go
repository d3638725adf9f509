package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/internal/testenv"
	"github.com/eventsaga/eventsaga/services/projector"
)

type readOrder struct {
	OrderID         uuid.UUID `json:"order_id"`
	CustomerID      uuid.UUID `json:"customer_id"`
	Status          string    `json:"status"`
	Total           string    `json:"total"`
	RejectionReason *string   `json:"rejection_reason"`
	Version         int64     `json:"version"`
	UpdatedAt       string    `json:"updated_at"`
}

type readCustomer struct {
	CustomerID  uuid.UUID        `json:"customer_id"`
	Name        string           `json:"name"`
	CreditLimit string           `json:"credit_limit"`
	Reserved    string           `json:"reserved"`
	Available   string           `json:"available"`
	Orders      map[string]int64 `json:"orders"`
}

// readOrderAt asks the read model for an order at least at version min.
func (s *system) readOrderAt(id uuid.UUID, min int64) readOrder {
	s.t.Helper()
	var v readOrder
	mustCall(s.t, 200, &v, "GET", fmt.Sprintf("%s/orders/%s?min_version=%d", s.projector.url, id, min), "")
	return v
}

// workload places orders for customers at random, cancels some, and
// returns the orders placed.
func (s *system) workload(r *rand.Rand, custs []uuid.UUID, n int) []uuid.UUID {
	s.t.Helper()
	var mu sync.Mutex
	var placed []uuid.UUID
	var wg sync.WaitGroup
	for w := range 4 {
		seed := r.Uint64() // drawn here: r is not safe for the workers to share
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), seed))
			for range n / 4 {
				c := custs[r.IntN(len(custs))]
				if r.IntN(20) == 0 {
					c = uuid.New() // an unknown customer
				}
				o := s.place(c, 1+r.IntN(5), fmt.Sprintf("%d.%02d", 1+r.IntN(40), r.IntN(100)))
				if r.IntN(5) == 0 {
					call(s.t, "POST", s.order.url+"/orders/"+o.String()+"/cancel", "") // may be 200 or 409
				}
				mu.Lock()
				placed = append(placed, o)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return placed
}

// awaitQuiet waits until every order has a decision and the read model has
// every event: the orders are no longer PENDING and the projector's lag is 0.
func (s *system) awaitQuiet(placed []uuid.UUID) {
	s.t.Helper()
	for _, o := range placed {
		testenv.WaitFor(s.t, 30*time.Second, "a decision", func() bool { return s.orderView(o).Status != "PENDING" })
	}
	s.awaitProjected()
}

// compareReadModel checks every order and customer of the read model
// against what the write services report.
func (s *system) compareReadModel(placed, custs []uuid.UUID) {
	s.t.Helper()
	for _, o := range placed {
		w := s.orderView(o)
		r := s.readOrderAt(o, w.Version)
		if r.Status != w.Status || r.Total != w.Total || r.Version != w.Version || r.CustomerID != w.CustomerID ||
			fmt.Sprint(r.RejectionReason) != fmt.Sprint(w.RejectionReason) && (r.RejectionReason == nil || w.RejectionReason == nil || *r.RejectionReason != *w.RejectionReason) {
			s.t.Errorf("order %s: read model %+v, write side %+v", o, r, w)
		}
	}
	perCustomer := map[uuid.UUID]map[string]int64{}
	for _, o := range placed {
		w := s.orderView(o)
		if perCustomer[w.CustomerID] == nil {
			perCustomer[w.CustomerID] = map[string]int64{"PENDING": 0, "APPROVED": 0, "REJECTED": 0, "CANCELLED": 0}
		}
		perCustomer[w.CustomerID][w.Status]++
	}
	for _, c := range custs {
		w := s.customerView(c)
		var r readCustomer
		mustCall(s.t, 200, &r, "GET", s.projector.url+"/customers/"+c.String(), "")
		want := perCustomer[c]
		if want == nil {
			want = map[string]int64{"PENDING": 0, "APPROVED": 0, "REJECTED": 0, "CANCELLED": 0}
		}
		if r.Name != w.Name || r.CreditLimit != w.CreditLimit || r.Reserved != w.Reserved || r.Available != w.Available || fmt.Sprint(r.Orders) != fmt.Sprint(want) {
			s.t.Errorf("customer %s: read model %+v, write side %+v with orders %v", c, r, w, want)
		}
	}
}

// After a few hundred orders across many customers, the read model says
// what the write services say about every order and every customer.
func TestReadModelMatchesWriteSide(t *testing.T) {
	s := startSystem(t)
	r := rand.New(rand.NewPCG(3, 4))
	var custs []uuid.UUID
	for i := range 30 {
		custs = append(custs, s.register(fmt.Sprint("customer-", i), fmt.Sprintf("%d.00", 50+r.IntN(400))))
	}
	placed := s.workload(r, custs, 300)
	s.awaitQuiet(placed)
	s.compareReadModel(placed, custs)

	// Paging through GET /orders?customer_id= finds each of a customer's
	// orders exactly once.
	mine := map[uuid.UUID]bool{}
	for _, o := range placed {
		if s.orderView(o).CustomerID == custs[0] {
			mine[o] = true
		}
	}
	seen := map[uuid.UUID]int{}
	after := ""
	for pages := 0; ; pages++ {
		var page struct {
			Orders []readOrder `json:"orders"`
			Next   *string     `json:"next"`
		}
		mustCall(t, 200, &page, "GET", s.projector.url+"/orders?limit=3&customer_id="+custs[0].String()+after, "")
		for _, o := range page.Orders {
			seen[o.OrderID]++
		}
		if page.Next == nil || pages > 1000 {
			break
		}
		after = "&after=" + *page.Next
	}
	if len(seen) != len(mine) {
		t.Errorf("paging found %d orders of the customer, want %d", len(seen), len(mine))
	}
	for id, n := range seen {
		if n != 1 || !mine[id] {
			t.Errorf("order %s seen %d times (the customer's: %v)", id, n, mine[id])
		}
	}
	var approved struct {
		Orders []readOrder `json:"orders"`
	}
	mustCall(t, 200, &approved, "GET", s.projector.url+"/orders?status=APPROVED&limit=500", "")
	for _, o := range approved.Orders {
		if o.Status != "APPROVED" {
			t.Errorf("status filter returned %+v", o)
		}
	}
}

// min_version waits for the read model to reach the version and answers as
// soon as it does; it answers clearly when the version does not come.
func TestMinVersion(t *testing.T) {
	s := startSystem(t)
	c := s.register("Waiter", "100.00")
	s.customer.stop() // no decision until it is back: the order stays at version 1

	o := s.place(c, 1, "10.00")
	if v := s.readOrderAt(o, 1); v.Status != "PENDING" {
		t.Fatalf("at version 1: %+v", v)
	}
	answered := make(chan readOrder, 1)
	go func() {
		// A restart can outlast one bounded wait on a loaded machine: ask
		// again while the answer is "not yet" (409), never taking it for
		// the order.
		var v readOrder
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			status, body := call(t, "GET", fmt.Sprintf("%s/orders/%s?min_version=2", s.projector.url, o), "")
			if status != 409 {
				if status == 200 {
					_ = json.Unmarshal(body, &v)
				}
				break
			}
		}
		answered <- v
	}()
	s.startCustomer() // the approval now comes, while the request waits
	v := <-answered
	if v.Status != "APPROVED" || v.Version != 2 {
		t.Errorf("waiting for version 2 answered %+v", v)
	}

	// A version that never comes: 409 with what there is; an order that
	// never comes: 404. Both after the bounded wait.
	start := time.Now()
	status, body := call(t, "GET", fmt.Sprintf("%s/orders/%s?min_version=9", s.projector.url, o), "")
	if status != 409 || time.Since(start) < projector.MinVersionWait {
		t.Errorf("unreachable version: %d after %v: %s", status, time.Since(start), body)
	}
	if status, body := call(t, "GET", fmt.Sprintf("%s/orders/%s?min_version=1", s.projector.url, uuid.New()), ""); status != 404 {
		t.Errorf("unknown order: %d %s", status, body)
	}
	if status, _, _ := sendMalformed(t, "GET", fmt.Sprintf("%s/orders/%s?min_version=zero", s.projector.url, o), ""); status != 400 {
		t.Errorf("bad min_version: %d", status)
	}
}

// A rebuild while orders keep coming builds a new generation from the start
// of the topics, switches to it, and ends with the same read model as the
// write side (and so as the live one).
func TestRebuildWhileOrdersKeepComing(t *testing.T) {
	s := startSystem(t)
	r := rand.New(rand.NewPCG(5, 6))
	var custs []uuid.UUID
	for i := range 10 {
		custs = append(custs, s.register(fmt.Sprint("rebuild-", i), "300.00"))
	}
	placed := s.workload(r, custs, 80)

	// Orders keep coming during the rebuild, at up to 250/s: a writer with
	// no bound could outpace a rebuild on a slower broker for minutes, and
	// then the test would compare tens of thousands of orders.
	ctx, stopWriting := context.WithCancel(context.Background())
	more := make(chan []uuid.UUID)
	var written atomic.Int64
	pace := time.NewTicker(4 * time.Millisecond)
	defer pace.Stop()
	go func() {
		var ids []uuid.UUID
		defer func() { more <- ids }()
		for ctx.Err() == nil {
			<-pace.C
			body := `{"customer_id": "` + custs[len(ids)%len(custs)].String() + `", "items": [{"product_id": "p", "quantity": 1, "unit_price": "1.00"}]}`
			var out struct {
				OrderID uuid.UUID `json:"order_id"`
			}
			status, b := call(t, "POST", s.order.url+"/orders", body)
			if status != 201 || json.Unmarshal(b, &out) != nil {
				t.Errorf("writer: %d %s", status, b) // not Fatal: this is not the test's goroutine
				return
			}
			ids = append(ids, out.OrderID)
			written.Add(1)
		}
	}()

	cfg := s.base(s.readDB, "projector")
	res, err := projector.Rebuild(context.Background(), cfg, testenv.Logger(t), projector.RebuildOptions{CaughtUp: 5})
	if err != nil {
		t.Fatal(err)
	}
	if res.Generation != 2 || res.Events == 0 {
		t.Fatalf("rebuild %+v", res)
	}
	testenv.WaitFor(t, 10*time.Second, "the projector to switch", func() bool {
		var st struct {
			Generation int `json:"generation"`
		}
		mustCall(t, 200, &st, "GET", s.projector.url+"/status", "")
		return st.Generation == 2
	})
	// More orders land on the new generation before the writer stops.
	after := written.Load()
	testenv.WaitFor(t, 10*time.Second, "orders after the switch", func() bool { return written.Load() >= after+10 })
	stopWriting()
	placed = append(placed, <-more...)

	s.awaitQuiet(placed)
	s.compareReadModel(placed, custs)
}
