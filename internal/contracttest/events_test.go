package contracttest

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
)

var (
	orderID    = uuid.MustParse("0191b2c3-2222-7aaa-8bbb-123456789abc")
	customerID = uuid.MustParse("0191b2c3-3333-7aaa-8bbb-123456789abc")
)

// samples holds an event of every type the services publish, with the
// channel it is published on.
var samples = []struct {
	channel string
	event   events.Event
}{
	{"orders.events", orders.OrderCreated{OrderID: orderID, CustomerID: customerID, Total: 3050,
		Items: []orders.Item{{ProductID: "sku-1", Quantity: 2, UnitPrice: 1000}, {ProductID: "sku-2", Quantity: 1, UnitPrice: 1050}}}},
	{"orders.events", orders.OrderApproved{OrderID: orderID, CustomerID: customerID, Total: 3050}},
	{"orders.events", orders.OrderRejected{OrderID: orderID, CustomerID: customerID, Reason: orders.ReasonInsufficientCredit}},
	{"orders.events", orders.OrderCancelled{OrderID: orderID, CustomerID: customerID, Total: 3050, PreviousStatus: orders.StatusApproved}},
	{"customers.events", customers.CustomerRegistered{CustomerID: customerID, Name: "Ada", CreditLimit: 10000}},
	{"customers.events", customers.CreditLimitChanged{CustomerID: customerID, CreditLimit: 0}},
	{"customers.events", customers.CreditReserved{CustomerID: customerID, OrderID: orderID, Amount: 3050}},
	{"customers.events", customers.CreditReservationFailed{CustomerID: customerID, OrderID: orderID, Amount: 3050, Reason: customers.ReasonUnknownCustomer}},
	{"customers.events", customers.CreditSettled{CustomerID: customerID, OrderID: orderID, Amount: 3050}},
	{"customers.events", customers.CreditReleased{CustomerID: customerID, OrderID: orderID, Amount: 3050}},
}

func registry(t *testing.T) *events.Registry {
	r := events.NewRegistry()
	if err := orders.Register(r); err != nil {
		t.Fatal(err)
	}
	if err := customers.Register(r); err != nil {
		t.Fatal(err)
	}
	return r
}

// record is e as the relay publishes it: encoded by the registry at its
// current schema version, in its envelope, with its key and headers.
func record(t *testing.T, r *events.Registry, channel string, e events.Event) *kgo.Record {
	t.Helper()
	typ, version, data, err := r.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	aggType, aggID := orders.AggregateType, orderID
	if channel == "customers.events" {
		aggType, aggID = customers.AggregateType, customerID
	}
	env := events.Envelope{
		EventID: uuid.New(), EventType: typ, SchemaVersion: version, AggregateType: aggType, AggregateID: aggID,
		AggregateVersion: 3, OccurredAt: time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.FixedZone("", 3600)),
		CorrelationID: orderID, CausationID: uuid.New(), Data: data,
	}
	value, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: channel, Key: []byte(aggID.String()), Value: value, Headers: []kgo.RecordHeader{
		{Key: events.HeaderEventType, Value: []byte(typ)},
		{Key: events.HeaderEventID, Value: []byte(env.EventID.String())},
		{Key: events.HeaderTraceParent, Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")},
	}}
}

// Every event type of the Go code, encoded by the registry at its current
// schema version, matches the document; and the document has no message
// the code does not publish.
func TestAsyncAPIMatchesTheRegistry(t *testing.T) {
	_, evs := load(t)
	if got := evs.Channels(); !slices.Equal(got, []string{"customers.events", "dlq.{group}", "orders.events"}) {
		t.Errorf("channels %v", got)
	}
	reg := registry(t)
	published := map[string][]string{}
	for _, s := range samples {
		if err := evs.ValidateRecord(s.channel, record(t, reg, s.channel, s.event)); err != nil {
			t.Errorf("%s on %s: %v", s.event.EventType(), s.channel, err)
		}
		published[s.channel] = append(published[s.channel], s.event.EventType())
	}
	for _, ch := range []string{"orders.events", "customers.events"} {
		slices.Sort(published[ch])
		if got := evs.Messages(ch); !slices.Equal(got, published[ch]) {
			t.Errorf("messages of %s: %v, the code publishes %v", ch, got, published[ch])
		}
	}
}

// The validator finds what drifts.
func TestAsyncAPIRejects(t *testing.T) {
	_, evs := load(t)
	reg := registry(t)
	created := func() *kgo.Record { return record(t, reg, "orders.events", samples[0].event) }
	value := func(old, new string) func(*kgo.Record) {
		return func(r *kgo.Record) {
			if !strings.Contains(string(r.Value), old) {
				t.Fatalf("%s not in %s", old, r.Value)
			}
			r.Value = []byte(strings.Replace(string(r.Value), old, new, 1))
		}
	}
	for _, tt := range []struct {
		name    string
		channel string
		change  func(*kgo.Record)
		want    string // in the error
	}{
		{"a float amount", "orders.events", value(`"total":"30.50"`, `"total":30.5`), "total"},
		{"an amount with three decimal places", "orders.events", value(`"unit_price":"10.00"`, `"unit_price":"10.000"`), "unit_price"},
		{"an unknown event type", "orders.events", func(r *kgo.Record) {
			value(`"event_type":"OrderCreated"`, `"event_type":"OrderShipped"`)(r)
			r.Headers[0].Value = []byte("OrderShipped")
		}, "OrderShipped"},
		{"an event on the other channel", "customers.events", func(*kgo.Record) {}, "not a message of channel customers.events"},
		{"an undocumented schema version", "orders.events", value(`"schema_version":1`, `"schema_version":2`), "schema_version"},
		{"a missing data field", "orders.events", value(`,"total":"30.50"`, ``), "total"},
		{"an undocumented data field", "orders.events", value(`"total":"30.50"`, `"total":"30.50","currency":"EUR"`), "currency"},
		{"a missing envelope field", "orders.events", value(`"causation_id"`, `"causation"`), "causation"},
		{"occurred_at not in UTC microseconds", "orders.events", value(`.123456Z"`, `.123Z"`), "occurred_at"},
		{"a missing event_id header", "orders.events", func(r *kgo.Record) { r.Headers = r.Headers[:1] }, "event_id"},
		{"an event_type header that is not the envelope's", "orders.events", func(r *kgo.Record) { r.Headers[0].Value = []byte("OrderApproved") }, "event_type"},
		{"an event_id header that is not the envelope's", "orders.events", func(r *kgo.Record) { r.Headers[1].Value = []byte(uuid.NewString()) }, "event_id"},
		{"a key that is not the aggregate", "orders.events", func(r *kgo.Record) { r.Key = []byte(customerID.String()) }, "aggregate_id"},
		{"data of another aggregate", "orders.events", value(`"data":{"order_id":"`+orderID.String(), `"data":{"order_id":"`+customerID.String()), "data.order_id"},
		{"a key that is no UUID", "orders.events", func(r *kgo.Record) { r.Key = []byte("order-1") }, "key"},
		{"an unknown channel", "payments.events", func(*kgo.Record) {}, "no channel"},
		{"a value that is not JSON", "orders.events", func(r *kgo.Record) { r.Value = []byte("{") }, "not JSON"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := created()
			if err := evs.ValidateRecord("orders.events", r); err != nil {
				t.Fatalf("the unchanged record: %v", err)
			}
			tt.change(r)
			err := evs.ValidateRecord(tt.channel, r)
			if err == nil {
				t.Fatal("accepted")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error does not name %q: %v", tt.want, err)
			}
		})
	}
}
