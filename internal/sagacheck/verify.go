package sagacheck

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/pkg/events"
)

// Report is what Verify found.
type Report struct {
	Orders   int
	ByStatus map[string]int
	ByReason map[string]int // REJECTED orders by rejection_reason
	// Duplicates: records of a credit decision seen more than once on
	// customers.events (the same event ID: a relay that published again
	// after a lost acknowledgement). Allowed: consumers skip them.
	Duplicates int
	Problems   []string // each broken promise; empty when all hold
}

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// orderState is an order as a service answers GET /orders/{id}.
type orderState struct {
	OrderID         uuid.UUID    `json:"order_id"`
	CustomerID      uuid.UUID    `json:"customer_id"`
	Status          string       `json:"status"`
	Total           events.Money `json:"total"`
	RejectionReason *string      `json:"rejection_reason"`
	Version         int64        `json:"version"`
}

func (o orderState) String() string {
	reason := "-"
	if o.RejectionReason != nil {
		reason = *o.RejectionReason
	}
	return fmt.Sprintf("%s %s %s v%d", o.Status, o.Total, reason, o.Version)
}

// customerState is a customer as the customer service or the projector
// answers GET /customers/{id}.
type customerState struct {
	CreditLimit events.Money   `json:"credit_limit"`
	Reserved    events.Money   `json:"reserved"`
	Available   events.Money   `json:"available"`
	Orders      map[string]int `json:"orders"` // the projector's only
}

// Verify checks, once the system has had up to settle to finish the sagas
// of p: every order APPROVED, REJECTED or CANCELLED; exactly one credit
// decision per order on customers.events and at most one decision per
// order on orders.events; each customer's reserved credit equal to the sum
// of its APPROVED orders; the read model equal to the write model, order by
// order and customer by customer; every dlq.* topic empty.
func Verify(ctx context.Context, ep Endpoints, p *Placed, settle time.Duration) (*Report, error) {
	c := newClient()
	r := &Report{Orders: len(p.Orders), ByStatus: map[string]int{}, ByReason: map[string]int{}}

	// 1. Every order terminal, as the order service folds it.
	orders, err := terminal(ctx, c, ep, p.Orders, time.Now().Add(settle))
	if err != nil {
		return nil, err
	}
	for _, o := range p.Orders {
		st := orders[o.ID]
		r.ByStatus[st.Status]++
		if st.RejectionReason != nil {
			r.ByReason[*st.RejectionReason]++
		}
		if st.Status == "PENDING" {
			r.problem("order %s still PENDING after %v", o.ID, settle)
		}
	}

	// 2. Credit: reserved = Σ APPROVED, customer by customer.
	approved := map[uuid.UUID]events.Money{}
	count := map[uuid.UUID]map[string]int{}
	for _, o := range orders {
		if o.Status == "APPROVED" {
			approved[o.CustomerID] += o.Total
		}
		if count[o.CustomerID] == nil {
			count[o.CustomerID] = map[string]int{}
		}
		count[o.CustomerID][o.Status]++
	}
	customers, err := fetchAll[customerState](ctx, c, ep.Customer, p.Customers, func(id uuid.UUID) string { return "/customers/" + id.String() })
	if err != nil {
		return nil, err
	}
	for _, id := range p.Customers {
		cs := customers[id]
		if cs.Reserved != approved[id] {
			r.problem("customer %s: reserved %s, but its APPROVED orders total %s", id, cs.Reserved, approved[id])
		}
	}

	// 3. The read model equals the write model, once it has caught up.
	if err := caughtUp(ctx, c, ep, time.Now().Add(settle)); err != nil {
		r.problem("read model: %v", err)
	}
	read, err := fetchAll[orderState](ctx, c, ep.Projector, keys(orders), func(id uuid.UUID) string {
		return fmt.Sprintf("/orders/%s?min_version=%d", id, orders[id].Version)
	})
	if err != nil {
		return nil, err
	}
	for id, w := range orders {
		if rd := read[id]; rd.String() != w.String() || rd.OrderID != w.OrderID || rd.CustomerID != w.CustomerID {
			r.problem("order %s: read model %v, write model %v", id, rd, w)
		}
	}
	readCustomers, err := fetchAll[customerState](ctx, c, ep.Projector, p.Customers, func(id uuid.UUID) string { return "/customers/" + id.String() })
	if err != nil {
		return nil, err
	}
	for _, id := range p.Customers {
		w, rd := customers[id], readCustomers[id]
		if rd.CreditLimit != w.CreditLimit || rd.Reserved != w.Reserved || rd.Available != w.Available {
			r.problem("customer %s: read model limit/reserved/available %s/%s/%s, write model %s/%s/%s",
				id, rd.CreditLimit, rd.Reserved, rd.Available, w.CreditLimit, w.Reserved, w.Available)
		}
		for _, s := range []string{"PENDING", "APPROVED", "REJECTED", "CANCELLED"} {
			if rd.Orders[s] != count[id][s] {
				r.problem("customer %s: read model has %d %s orders, write model %d", id, rd.Orders[s], s, count[id][s])
			}
		}
	}

	// 4. Decisions on the topics, and 5. the dead letters.
	if err := topics(ctx, ep.Brokers, orders, r); err != nil {
		return nil, err
	}
	return r, nil
}

// terminal polls the orders' states until none is PENDING or the deadline.
func terminal(ctx context.Context, c *client, ep Endpoints, placed []Order, deadline time.Time) (map[uuid.UUID]orderState, error) {
	ids := make([]uuid.UUID, len(placed))
	for i, o := range placed {
		ids[i] = o.ID
	}
	all := map[uuid.UUID]orderState{}
	for {
		got, err := fetchAll[orderState](ctx, c, ep.Order, ids, func(id uuid.UUID) string { return "/orders/" + id.String() })
		if err != nil {
			return nil, err
		}
		var pending []uuid.UUID
		for id, o := range got {
			all[id] = o
			if o.Status == "PENDING" {
				pending = append(pending, id)
			}
		}
		if len(pending) == 0 || time.Now().After(deadline) {
			return all, nil
		}
		ids = pending
		time.Sleep(time.Second)
	}
}

// caughtUp waits until the projector has every record of the topics.
func caughtUp(ctx context.Context, c *client, ep Endpoints, deadline time.Time) error {
	for {
		var st struct {
			TotalLag *int64 `json:"total_lag"`
		}
		err := c.do(ctx, "GET", ep.Projector, "/status", "", "", &st)
		if err == nil && st.TotalLag != nil && *st.TotalLag == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil && st.TotalLag != nil {
				err = fmt.Errorf("lag %d", *st.TotalLag)
			}
			return fmt.Errorf("not caught up with the topics: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// fetchAll GETs path(id) for every id from 16 requests in flight.
func fetchAll[T any](ctx context.Context, c *client, urls []string, ids []uuid.UUID, path func(uuid.UUID) string) (map[uuid.UUID]T, error) {
	var (
		mu   sync.Mutex
		out  = make(map[uuid.UUID]T, len(ids))
		errs []error
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, 16)
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var v T
			err := c.do(ctx, "GET", urls, path(id), "", "", &v)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("GET %s: %w", path(id), err))
				return
			}
			out[id] = v
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, fmt.Errorf("%d requests failed, the first: %w", len(errs), errs[0])
	}
	return out, nil
}

func keys[V any](m map[uuid.UUID]V) []uuid.UUID {
	out := make([]uuid.UUID, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// topics reads customers.events and orders.events whole and checks the
// decisions in them, then that every dlq.* topic is empty.
func topics(ctx context.Context, brokers []string, orders map[uuid.UUID]orderState, r *Report) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx)
	if err != nil {
		return fmt.Errorf("end offsets: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx)
	if err != nil {
		return fmt.Errorf("start offsets: %w", err)
	}
	if err := ends.Error(); err != nil {
		return fmt.Errorf("end offsets: %w", err)
	}
	for _, o := range ends.Offsets().Sorted() {
		if !strings.HasPrefix(o.Topic, "dlq.") {
			continue
		}
		start, _ := starts.Lookup(o.Topic, o.Partition)
		if n := o.At - start.Offset; n > 0 {
			r.problem("%s partition %d holds %d dead letters", o.Topic, o.Partition, n)
		}
	}

	decisions := map[string]map[uuid.UUID]map[uuid.UUID]int{ // topic → order → event ID → records
		"customers.events": {}, "orders.events": {},
	}
	for topic, byOrder := range decisions {
		err := readAll(ctx, brokers, topic, ends, func(env events.Envelope) {
			switch env.EventType {
			case "CreditReserved", "CreditReservationFailed", "OrderApproved", "OrderRejected":
			default:
				return
			}
			order := env.CorrelationID // a saga is correlated by its order's ID
			if byOrder[order] == nil {
				byOrder[order] = map[uuid.UUID]int{}
			}
			byOrder[order][env.EventID]++
		})
		if err != nil {
			return err
		}
	}
	for id, o := range orders {
		credit := decisions["customers.events"][id]
		if len(credit) != 1 {
			r.problem("order %s: %d credit decisions on customers.events, want 1", id, len(credit))
		}
		for _, n := range credit {
			r.Duplicates += n - 1
		}
		// An order cancelled before its credit decision arrived has no decision of its own.
		if n := len(decisions["orders.events"][id]); n > 1 || (o.Status != "CANCELLED" && n != 1) {
			r.problem("order %s (%s): %d decisions on orders.events", id, o.Status, n)
		}
	}
	return nil
}

// readAll reads topic from its start up to the end offsets in ends.
func readAll(ctx context.Context, brokers []string, topic string, ends kadm.ListedOffsets, f func(events.Envelope)) error {
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Topic == topic && o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	if len(want) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("reading %s: %w (partitions left: %d)", topic, ctx.Err(), len(want))
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = errors.Join(ferr, err) })
		if ferr != nil {
			return fmt.Errorf("reading %s: %w", topic, ferr)
		}
		fs.EachRecord(func(rec *kgo.Record) {
			if env, err := events.ParseEnvelope(rec.Value); err == nil {
				f(env)
			}
			if end, ok := want[rec.Partition]; ok && rec.Offset+1 >= end {
				delete(want, rec.Partition)
			}
		})
	}
	return nil
}
