package sagacheck

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/pkg/events"
)

// Decisions records when each order's decision (OrderApproved or
// OrderRejected) was first seen on orders.events, and the steps of its saga
// on the way, to show where a stall was.
type Decisions struct {
	mu    sync.Mutex
	at    map[uuid.UUID]time.Time
	steps map[uuid.UUID]*[nSteps]time.Time
	stop  func()
}

// The steps of a saga as the topics show them: when the order service's
// relay produced OrderCreated (the record's timestamp), when the customer
// service decided (the credit event's occurred_at) and its relay produced
// the decision, when the order service decided and its relay produced that.
const (
	createdProduced = iota
	customerDecided
	customerProduced
	orderDecided
	orderProduced
	nSteps
)

var stepNames = [nSteps + 1]string{"created out", "credit decided", "credit out", "order decided", "decision out", "seen"}

// WatchDecisions reads orders.events and customers.events from their ends
// as they are now; start it before placing the orders it is to time.
func WatchDecisions(ctx context.Context, brokers []string) (*Decisions, error) {
	ctx, cancel := context.WithCancel(ctx)
	d := &Decisions{at: map[uuid.UUID]time.Time{}, steps: map[uuid.UUID]*[nSteps]time.Time{}}
	var wg sync.WaitGroup
	var clients []*kgo.Client
	d.stop = func() {
		cancel()
		wg.Wait()
		for _, cl := range clients {
			cl.Close()
		}
	}
	for _, topic := range []string{"orders.events", "customers.events"} {
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), kgo.FetchMaxWait(100*time.Millisecond))
		if err != nil {
			d.stop()
			return nil, err
		}
		clients = append(clients, cl)
		ready := make(chan struct{})
		wg.Go(func() { d.consume(ctx, cl, ready) })
		// The first poll returns once the client knows where the end is (or
		// after its wait): nothing produced after that is missed.
		select {
		case <-ready:
		case <-time.After(10 * time.Second):
		}
	}
	return d, nil
}

func (d *Decisions) consume(ctx context.Context, cl *kgo.Client, ready chan struct{}) {
	first := true
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		if first {
			close(ready)
			first = false
		}
		now := time.Now()
		d.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			env, err := events.ParseEnvelope(r.Value)
			if err != nil {
				return
			}
			order := env.CorrelationID // a saga is correlated by its order's ID
			switch env.EventType {
			case "OrderCreated":
				d.step(order, createdProduced, r.Timestamp)
			case "CreditReserved", "CreditReservationFailed":
				d.step(order, customerDecided, env.OccurredAt)
				d.step(order, customerProduced, r.Timestamp)
			case "OrderApproved", "OrderRejected":
				d.step(order, orderDecided, env.OccurredAt)
				d.step(order, orderProduced, r.Timestamp)
				if _, seen := d.at[env.AggregateID]; !seen {
					d.at[env.AggregateID] = now
				}
			}
		})
		d.mu.Unlock()
	}
}

func (d *Decisions) step(order uuid.UUID, i int, at time.Time) {
	s := d.steps[order]
	if s == nil {
		s = new([nSteps]time.Time)
		d.steps[order] = s
	}
	if s[i].IsZero() {
		s[i] = at
	}
}

// Stop stops reading.
func (d *Decisions) Stop() { d.stop() }

// Latency is POST → decision of some orders.
type Latency struct {
	Orders        int // orders of the window whose decision was seen
	P50, P99, Max time.Duration
}

// Latency measures the orders whose POST began in [from, to) (all of them
// when both are zero). Orders cancelled or never decided are left out.
func (d *Decisions) Latency(orders []Order, from, to time.Time) Latency {
	d.mu.Lock()
	defer d.mu.Unlock()
	var lat []time.Duration
	for _, o := range orders {
		if !from.IsZero() && (o.Begun.Before(from) || !o.Begun.Before(to)) {
			continue
		}
		if at, ok := d.at[o.ID]; ok {
			lat = append(lat, at.Sub(o.Begun))
		}
	}
	if len(lat) == 0 {
		return Latency{}
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)].Round(time.Millisecond) }
	return Latency{Orders: len(lat), P50: q(0.5), P99: q(0.99), Max: lat[len(lat)-1].Round(time.Millisecond)}
}

// Timeline prints, for each step of time since start, the orders placed in
// it, how many of them were decided, the longest POST → decision among them
// and the longest wait at each step of their sagas: where a stall was.
func (d *Decisions) Timeline(w io.Writer, orders []Order, start time.Time, step time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	type bucket struct {
		placed, decided int
		longest         time.Duration
		steps           [nSteps + 1]time.Duration
	}
	var bs []bucket
	for _, o := range orders {
		i := int(o.Begun.Sub(start) / step)
		if i < 0 {
			continue
		}
		for len(bs) <= i {
			bs = append(bs, bucket{})
		}
		b := &bs[i]
		b.placed++
		at, ok := d.at[o.ID]
		if !ok {
			continue
		}
		b.decided++
		b.longest = max(b.longest, at.Sub(o.Begun))
		if s := d.steps[o.ID]; s != nil && !slices.ContainsFunc(s[:], time.Time.IsZero) {
			prev := o.Begun
			for j, t := range append(s[:], at) {
				b.steps[j] = max(b.steps[j], t.Sub(prev))
				prev = t
			}
		}
	}
	fmt.Fprintf(w, "  %-10s %6s %7s %9s   longest wait at each step:", "POST at", "placed", "decided", "longest")
	for _, n := range stepNames {
		fmt.Fprintf(w, " %14s", n)
	}
	fmt.Fprintln(w)
	for i, b := range bs {
		fmt.Fprintf(w, "  %3.0fs-%3.0fs %7d %7d %9v  %26s", (time.Duration(i) * step).Seconds(), (time.Duration(i+1) * step).Seconds(),
			b.placed, b.decided, b.longest.Round(time.Millisecond), "")
		for _, s := range b.steps {
			fmt.Fprintf(w, " %14v", s.Round(time.Millisecond))
		}
		fmt.Fprintln(w)
	}
}

// LagLog samples consumer groups' lag (records on their topics not yet
// committed) and members while a run goes on: which service fell behind,
// and when.
type LagLog struct {
	mu      sync.Mutex
	samples []lagSample
	stop    func()
}

type lagSample struct {
	at      time.Time
	lag     map[string]int64 // group → total lag
	members map[string]int   // group → members
}

// WatchLag samples groups every every until Stop.
func WatchLag(ctx context.Context, brokers []string, groups []string, every time.Duration) (*LagLog, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, err
	}
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithCancel(ctx)
	l := &LagLog{}
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			s := lagSample{at: time.Now(), lag: map[string]int64{}, members: map[string]int{}}
			sctx, done := context.WithTimeout(ctx, every)
			// A copy: kadm sorts the groups it is given.
			if lags, err := adm.Lag(sctx, slices.Clone(groups)...); err == nil {
				for g, dl := range lags {
					if dl.FetchErr != nil || dl.DescribeErr != nil {
						s.lag[g] = -1
						continue
					}
					s.lag[g] = dl.Lag.Total()
					s.members[g] = len(dl.Members)
				}
			}
			done()
			l.mu.Lock()
			l.samples = append(l.samples, s)
			l.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	l.stop = func() { cancel(); wg.Wait(); cl.Close() }
	return l, nil
}

// Stop stops sampling.
func (l *LagLog) Stop() { l.stop() }

// Print prints, for each step of time since start, each group's largest
// lag and fewest members in it (-1: Kafka did not tell).
func (l *LagLog) Print(w io.Writer, groups []string, start time.Time, step time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(w, "  %-10s", "time")
	for _, g := range groups {
		fmt.Fprintf(w, " %26s", g+" lag/members")
	}
	fmt.Fprintln(w)
	for from := start; ; from = from.Add(step) {
		var in []lagSample
		for _, s := range l.samples {
			if !s.at.Before(from) && s.at.Before(from.Add(step)) {
				in = append(in, s)
			}
		}
		if len(in) == 0 {
			if from.After(time.Now()) || !l.any(from) {
				return
			}
			continue
		}
		fmt.Fprintf(w, "  %3.0fs-%3.0fs ", from.Sub(start).Seconds(), from.Add(step).Sub(start).Seconds())
		for _, g := range groups {
			most, fewest := int64(0), -1
			for _, s := range in {
				most = max(most, s.lag[g])
				if n, ok := s.members[g]; ok && (fewest < 0 || n < fewest) {
					fewest = n
				}
			}
			fmt.Fprintf(w, " %26s", fmt.Sprintf("%d/%d", most, fewest))
		}
		fmt.Fprintln(w)
	}
}

// any reports whether a sample was taken at or after t.
func (l *LagLog) any(t time.Time) bool {
	for _, s := range l.samples {
		if !s.at.Before(t) {
			return true
		}
	}
	return false
}
