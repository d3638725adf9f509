package projector

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
)

// The saga log is what the saga view (ui.go) shows of one order: every
// event of both services that concerns it, keyed by the order's ID (the
// saga's correlation ID), with the customer's credit around each credit
// event. It is a table of the generation like the read models, written in
// the same transaction, so a rebuild rebuilds it and a redelivery adds
// nothing (the key is the event's aggregate and version).
//
// migrations/002_saga_log.sql makes the same table for the generations that
// existed before it: keep the two in step.
const createSagaLog = `
CREATE TABLE IF NOT EXISTS %[3]s (
    order_id        uuid        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    uuid        NOT NULL,
    version         bigint      NOT NULL,
    event_type      text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    amount          bigint,
    detail          text,
    credit_limit    bigint,
    reserved_before bigint,
    reserved_after  bigint,
    trace_id        text,
    PRIMARY KEY (order_id, aggregate_id, version)
)`

// creditChange is a customer's credit just before and after one of its
// events, as foldCustomers applied it.
type creditChange struct {
	Event                         Event
	Limit                         events.Money
	ReservedBefore, ReservedAfter events.Money
}

// sagaLog is a batch's rows of the saga log, as columns for one INSERT.
type sagaLog struct {
	orderIDs, aggregateIDs [][16]byte
	aggregateTypes, types  []string
	versions               []int64
	at                     []time.Time
	amounts                []*int64
	details, traces        []*string
	limits, before, after  []*int64
}

func (l *sagaLog) add(orderID uuid.UUID, e Event, amount *events.Money, detail string, c *creditChange) {
	l.orderIDs = append(l.orderIDs, orderID)
	l.aggregateIDs = append(l.aggregateIDs, e.Env.AggregateID)
	l.aggregateTypes = append(l.aggregateTypes, e.Env.AggregateType)
	l.types = append(l.types, e.Env.EventType)
	l.versions = append(l.versions, e.Env.AggregateVersion)
	l.at = append(l.at, e.Env.OccurredAt)
	l.amounts = append(l.amounts, moneyPtr(amount))
	l.details = append(l.details, stringPtr(detail))
	l.traces = append(l.traces, stringPtr(traceID(e.TraceParent)))
	if c == nil {
		l.limits, l.before, l.after = append(l.limits, nil), append(l.before, nil), append(l.after, nil)
		return
	}
	l.limits = append(l.limits, moneyPtr(&c.Limit))
	l.before = append(l.before, moneyPtr(&c.ReservedBefore))
	l.after = append(l.after, moneyPtr(&c.ReservedAfter))
}

// addOrders logs order events. A duplicate or stale one is in the log
// already (it was logged when it was applied, in the same generation) and
// the INSERT skips it.
func (l *sagaLog) addOrders(evs []Event) {
	for _, e := range evs {
		switch d := e.Data.(type) {
		case orders.OrderCreated:
			l.add(d.OrderID, e, &d.Total, "", nil)
		case orders.OrderApproved:
			l.add(d.OrderID, e, &d.Total, "", nil)
		case orders.OrderRejected:
			l.add(d.OrderID, e, nil, d.Reason, nil)
		case orders.OrderCancelled:
			l.add(d.OrderID, e, &d.Total, "was "+d.PreviousStatus, nil)
		}
	}
}

// addCredits logs the credit events of orders, with the credit around
// them; a customer's own events (registration, limit) are not a saga's.
func (l *sagaLog) addCredits(cs []creditChange) {
	for i := range cs {
		c := &cs[i]
		switch d := c.Event.Data.(type) {
		case customers.CreditReserved:
			l.add(d.OrderID, c.Event, &d.Amount, "", c)
		case customers.CreditReservationFailed:
			l.add(d.OrderID, c.Event, &d.Amount, d.Reason, c)
		case customers.CreditSettled:
			l.add(d.OrderID, c.Event, &d.Amount, "", c)
		case customers.CreditReleased:
			l.add(d.OrderID, c.Event, &d.Amount, "", c)
		}
	}
}

// writeSagaLog adds the batch's rows, in one statement.
func (g generation) writeSagaLog(ctx context.Context, tx pgx.Tx, l sagaLog) error {
	if len(l.orderIDs) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, fmt.Sprintf(`
INSERT INTO %s (order_id, aggregate_id, aggregate_type, event_type, version, occurred_at, amount, detail, trace_id, credit_limit, reserved_before, reserved_after)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::timestamptz[], $7::bigint[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[])
ON CONFLICT DO NOTHING`, g.sagaLog()),
		l.orderIDs, l.aggregateIDs, l.aggregateTypes, l.types, l.versions, l.at, l.amounts, l.details, l.traces, l.limits, l.before, l.after)
	return err
}

// traceID is the trace ID of a W3C traceparent (version-trace-parent-flags),
// or "" when there is none or it is not well formed.
func traceID(traceParent string) string {
	parts := strings.Split(traceParent, "-")
	if len(parts) < 4 || len(parts[1]) != 32 || parts[1] == strings.Repeat("0", 32) {
		return ""
	}
	for _, r := range parts[1] {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return ""
		}
	}
	return parts[1]
}

func moneyPtr(m *events.Money) *int64 {
	if m == nil {
		return nil
	}
	v := int64(*m)
	return &v
}

func stringPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// sagaRow is an order with what the saga log knows of its saga.
type sagaRow struct {
	OrderRow
	CustomerName string
	// Started and Last are the times of the saga's first and last events
	// in the log; nil when the log has none (the order was projected
	// before this generation had a saga log).
	Started, Last *time.Time
	Steps         int
}

// Duration is the time from the saga's first event to its last.
func (r sagaRow) Duration() time.Duration {
	if r.Started == nil || r.Last == nil {
		return 0
	}
	return r.Last.Sub(*r.Started)
}

// sagaFilter selects sagas; zero fields select all.
type sagaFilter struct {
	CustomerID uuid.UUID
	Status     string
	Before     uuid.UUID   // the last order of the previous page
	IDs        []uuid.UUID // only these orders (the live feed's)
	Limit      int
}

// recentSagas returns orders newest first (IDs are time-ordered), with their
// customers' names and their sagas' times. The saga log's key starts with
// the order ID, so each order's times cost one index range.
func (g generation) recentSagas(ctx context.Context, q pgxQuerier, f sagaFilter) ([]sagaRow, error) {
	var ids any
	if f.IDs != nil {
		list := make([][16]byte, len(f.IDs))
		for i, id := range f.IDs {
			list[i] = id
		}
		ids = list
	}
	rows, _ := q.Query(ctx, fmt.Sprintf(`
SELECT o.order_id, o.customer_id, o.status, o.total, coalesce(o.rejection_reason, ''), o.version, o.updated_at,
       coalesce(c.name, ''), l.started, l.last, l.steps
FROM %[1]s o
LEFT JOIN %[2]s c ON c.customer_id = o.customer_id
CROSS JOIN LATERAL (SELECT min(occurred_at), max(occurred_at), count(*) FROM %[3]s WHERE order_id = o.order_id) l (started, last, steps)
WHERE ($1::uuid IS NULL OR o.customer_id = $1)
  AND ($2::text IS NULL OR o.status = $2)
  AND ($3::uuid IS NULL OR o.order_id < $3)
  AND ($4::uuid[] IS NULL OR o.order_id = ANY($4))
ORDER BY o.order_id DESC
LIMIT $5`, g.orders(), g.customers(), g.sagaLog()),
		nullUUID(f.CustomerID), nullString(f.Status), nullUUID(f.Before), ids, f.Limit)
	var out []sagaRow
	var r sagaRow
	var oid, cid [16]byte
	_, err := pgx.ForEachRow(rows, []any{&oid, &cid, &r.Status, &r.Total, &r.RejectionReason, &r.Version, &r.UpdatedAt,
		&r.CustomerName, &r.Started, &r.Last, &r.Steps}, func() error {
		r.OrderID, r.CustomerID = oid, cid
		out = append(out, r)
		return nil
	})
	return out, err
}

// sagaStep is one event of a saga, as the log has it.
type sagaStep struct {
	AggregateType string
	AggregateID   uuid.UUID
	Version       int64
	EventType     string
	OccurredAt    time.Time
	Amount        *events.Money
	Detail        string
	TraceID       string
	// Credit is the customer's credit around a credit event; nil for an
	// order event.
	Credit *creditAround
	// Offset is the time since the order was placed (its OrderCreated).
	Offset time.Duration
}

// creditAround is a customer's credit before and after an event.
type creditAround struct {
	Limit, ReservedBefore, ReservedAfter events.Money
}

func (c creditAround) AvailableBefore() events.Money { return c.Limit - c.ReservedBefore }
func (c creditAround) AvailableAfter() events.Money  { return c.Limit - c.ReservedAfter }

// sagaSteps returns an order's saga, oldest first, each step with its offset
// from the OrderCreated. The services' clocks order the steps: on one host
// they agree; across hosts, skew may show a reaction before its cause. On a
// tie an order event comes first (the customer's events react to them).
func (g generation) sagaSteps(ctx context.Context, q pgxQuerier, orderID uuid.UUID) ([]sagaStep, error) {
	rows, _ := q.Query(ctx, fmt.Sprintf(`
SELECT aggregate_type, aggregate_id, version, event_type, occurred_at, amount, coalesce(detail, ''), coalesce(trace_id, ''),
       credit_limit, reserved_before, reserved_after
FROM %s WHERE order_id = $1
ORDER BY occurred_at, aggregate_type = 'order' DESC, version`, g.sagaLog()), [16]byte(orderID))
	var out []sagaStep
	var s sagaStep
	var id [16]byte
	var amount, limit, before, after *int64
	_, err := pgx.ForEachRow(rows, []any{&s.AggregateType, &id, &s.Version, &s.EventType, &s.OccurredAt, &amount, &s.Detail, &s.TraceID,
		&limit, &before, &after}, func() error {
		step := s
		step.AggregateID = id
		if amount != nil {
			m := events.Money(*amount)
			step.Amount = &m
		}
		if limit != nil && before != nil && after != nil {
			step.Credit = &creditAround{Limit: events.Money(*limit), ReservedBefore: events.Money(*before), ReservedAfter: events.Money(*after)}
		}
		out = append(out, step)
		return nil
	})
	if err != nil || len(out) == 0 {
		return out, err
	}
	start := out[0].OccurredAt
	for _, st := range out {
		if st.EventType == (orders.OrderCreated{}).EventType() {
			start = st.OccurredAt
			break
		}
	}
	for i := range out {
		out[i].Offset = out[i].OccurredAt.Sub(start)
	}
	return out, nil
}
