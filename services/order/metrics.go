package order

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
)

// The saga's metrics: how orders end, and how long their decision took.
//
// An order's decision takes it out of PENDING: APPROVED, REJECTED (with the
// customer service's reason, or DEADLINE_EXCEEDED), or CANCELLED while
// PENDING. Its latency is measured between the events, from the
// OrderCreated's occurred_at to the decision's, as the event store recorded
// them: it does not depend on when this process saw either, so it stays
// right across restarts and redeliveries. It is observed once the decision
// has committed, by the instance that made it.
type sagaMetrics struct {
	outcomes *prometheus.CounterVec
	decision *prometheus.HistogramVec
}

func newSagaMetrics(reg prometheus.Registerer) (*sagaMetrics, error) {
	m := &sagaMetrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eventsaga_saga_outcomes_total",
			Help: "Orders that reached APPROVED, REJECTED or CANCELLED, by result and reason: the rejection's reason, " +
				"or for a cancellation the status it ended (PENDING or APPROVED); empty for an approval.",
		}, []string{"result", "reason"}),
		decision: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "eventsaga_saga_decision_seconds",
			Help: "From an order's OrderCreated to the event that took it out of PENDING (occurred_at to occurred_at), by result.",
			// Milliseconds on a quiet system, up to the deadline (30 s by
			// default) and past it while a broker fails over.
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.outcomes, m.decision} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// The series a dashboard expects are there from the start, at zero.
	m.outcomes.WithLabelValues(orders.StatusApproved, "")
	for _, r := range []string{orders.ReasonInsufficientCredit, orders.ReasonUnknownCustomer, orders.ReasonDeadlineExceeded} {
		m.outcomes.WithLabelValues(orders.StatusRejected, r)
	}
	for _, s := range []string{orders.StatusApproved, orders.StatusRejected, orders.StatusCancelled} {
		m.decision.WithLabelValues(s)
	}
	return m, nil
}

// outcome is an order's move to a status, as decided in one transaction.
type outcome struct {
	orderID uuid.UUID
	result  string // orders.StatusApproved, StatusRejected or StatusCancelled
	reason  string
	// version is the order's version once decided; 2 for the decision
	// that took it out of PENDING (its OrderCreated is version 1).
	version int64
	// created and decided are when the OrderCreated and the decision
	// occurred; zero when unknown.
	created, decided time.Time
}

// reasonLabel bounds the reason label to the reasons the contract knows.
func reasonLabel(reason string) string {
	switch reason {
	case "", orders.ReasonInsufficientCredit, orders.ReasonUnknownCustomer, orders.ReasonDeadlineExceeded,
		orders.StatusPending, orders.StatusApproved:
		return reason
	}
	return "OTHER"
}

// record counts outcomes that committed.
func (m *sagaMetrics) record(os []outcome) {
	for _, o := range os {
		m.outcomes.WithLabelValues(o.result, reasonLabel(o.reason)).Inc()
		if o.version == 2 && !o.created.IsZero() && !o.decided.IsZero() {
			m.decision.WithLabelValues(o.result).Observe(o.decided.Sub(o.created).Seconds())
		}
	}
}

// decisionTimesOf fills in when each outcome's decision occurred, from the
// envelopes staged for it.
func decisionTimesOf(os []outcome, staged []events.Envelope) {
	type key struct {
		id      uuid.UUID
		version int64
	}
	at := make(map[key]time.Time, len(staged))
	for _, e := range staged {
		at[key{e.AggregateID, e.AggregateVersion}] = e.OccurredAt
	}
	for i, o := range os {
		os[i].decided = at[key{o.orderID, o.version}]
	}
}

// decisionTimes reads, within a deadline sweep's transaction, when the
// orders of $1 were created and when their versions $2 occurred: two
// primary-key lookups an order (the function of migration 004 keeps them
// lookups whatever the statistics say), sent with the statement that ends
// their deadlines. A consumer has both times at hand (saga.go).
const decisionTimes = `SELECT order_id, created, decided FROM order_decision_times($1::uuid[], $2::bigint[])`

// dropPendingAndTime ends the deadlines of the orders of ids, in a sweep's
// transaction that holds their rows (dropPending), and fills in when each
// outcome's order was created and decided: one round trip.
func dropPendingAndTime(ctx context.Context, tx pgx.Tx, ids [][16]byte, os []outcome) error {
	decided := make([][16]byte, len(os))
	versions := make([]int64, len(os))
	at := make(map[uuid.UUID]int, len(os))
	for i, o := range os {
		decided[i], versions[i], at[o.orderID] = o.orderID, o.version, i
	}
	var b pgx.Batch
	b.Queue(dropPending, ids)
	b.Queue(decisionTimes, decided, versions)
	br := tx.SendBatch(ctx, &b)
	err := func() error {
		if _, err := br.Exec(); err != nil {
			return err
		}
		rows, _ := br.Query()
		var id [16]byte
		var created, decidedAt time.Time
		_, err := pgx.ForEachRow(rows, []any{&id, &created, &decidedAt}, func() error {
			if i, ok := at[id]; ok {
				os[i].created, os[i].decided = created, decidedAt
			}
			return nil
		})
		return err
	}()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}
