package projector

import (
	"time"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
)

// OrderRow is an order in the read model.
type OrderRow struct {
	OrderID         uuid.UUID
	CustomerID      uuid.UUID
	Status          string
	Total           events.Money
	RejectionReason string
	Version         int64
	UpdatedAt       time.Time
}

// CustomerRow is the part of a customer in the read model that the
// customer's own events decide; the counts of its orders come from the order
// events and are kept apart (see Counts).
type CustomerRow struct {
	CustomerID  uuid.UUID
	Registered  bool
	Name        string
	CreditLimit events.Money
	Reserved    events.Money
	Version     int64
	UpdatedAt   time.Time
}

// Counts is a change in the number of a customer's orders per status.
type Counts struct {
	Pending, Approved, Rejected, Cancelled int64
}

func (c *Counts) add(status string, n int64) {
	switch status {
	case orders.StatusPending:
		c.Pending += n
	case orders.StatusApproved:
		c.Approved += n
	case orders.StatusRejected:
		c.Rejected += n
	case orders.StatusCancelled:
		c.Cancelled += n
	}
}

// Event is an envelope with its decoded payload.
type Event struct {
	Env  events.Envelope
	Data events.Event
	// TraceParent is the record's W3C traceparent header, if any.
	TraceParent string
}

// foldOrders applies order events, oldest first, to the rows they concern
// (rows holds those that exist; it is updated in place) and returns the
// rows that changed, the change in each customer's order counts, and the
// events it applied.
//
// An event whose version is not past its row's is a duplicate or stale, and
// changes nothing: that, with the row's version stored in the same
// transaction, is what makes the projection effectively-once. The counts
// change by the status an order leaves and the one it enters, so they are
// right whatever order the events of different orders come in.
func foldOrders(rows map[uuid.UUID]*OrderRow, evs []Event) (changed []*OrderRow, counts map[uuid.UUID]*Counts, applied []Event) {
	counts = map[uuid.UUID]*Counts{}
	touched := map[uuid.UUID]bool{}
	for _, e := range evs {
		row := rows[e.Env.AggregateID]
		if row != nil && e.Env.AggregateVersion <= row.Version {
			continue
		}
		if row == nil {
			row = &OrderRow{OrderID: e.Env.AggregateID}
			rows[row.OrderID] = row
		}
		before := row.Status
		switch d := e.Data.(type) {
		case orders.OrderCreated:
			row.CustomerID, row.Total, row.Status = d.CustomerID, d.Total, orders.StatusPending
		case orders.OrderApproved:
			row.CustomerID, row.Total, row.Status = d.CustomerID, d.Total, orders.StatusApproved
		case orders.OrderRejected:
			row.CustomerID, row.Status, row.RejectionReason = d.CustomerID, orders.StatusRejected, d.Reason
		case orders.OrderCancelled:
			row.CustomerID, row.Total, row.Status = d.CustomerID, d.Total, orders.StatusCancelled
		}
		row.Version, row.UpdatedAt = e.Env.AggregateVersion, e.Env.OccurredAt
		applied = append(applied, e)
		if before != row.Status {
			c := counts[row.CustomerID]
			if c == nil {
				c = &Counts{}
				counts[row.CustomerID] = c
			}
			c.add(before, -1)
			c.add(row.Status, 1)
		}
		if !touched[row.OrderID] {
			touched[row.OrderID] = true
			changed = append(changed, row)
		}
	}
	return changed, counts, applied
}

// foldCustomers applies customer events, oldest first, like foldOrders. It
// also returns the customer's credit around each event it applied, for the
// saga log: only the fold knows the row as each event found it.
func foldCustomers(rows map[uuid.UUID]*CustomerRow, evs []Event) (changed []*CustomerRow, credits []creditChange) {
	touched := map[uuid.UUID]bool{}
	for _, e := range evs {
		row := rows[e.Env.AggregateID]
		if row != nil && e.Env.AggregateVersion <= row.Version {
			continue
		}
		if row == nil {
			row = &CustomerRow{CustomerID: e.Env.AggregateID}
			rows[row.CustomerID] = row
		}
		reservedBefore := row.Reserved
		switch d := e.Data.(type) {
		case customers.CustomerRegistered:
			row.Registered, row.Name, row.CreditLimit = true, d.Name, d.CreditLimit
		case customers.CreditLimitChanged:
			row.CreditLimit = d.CreditLimit
		case customers.CreditReserved:
			row.Reserved += d.Amount
		case customers.CreditReleased:
			row.Reserved -= d.Amount
		}
		row.Version, row.UpdatedAt = e.Env.AggregateVersion, e.Env.OccurredAt
		credits = append(credits, creditChange{Event: e, Limit: row.CreditLimit, ReservedBefore: reservedBefore, ReservedAfter: row.Reserved})
		if !touched[row.CustomerID] {
			touched[row.CustomerID] = true
			changed = append(changed, row)
		}
	}
	return changed, credits
}
