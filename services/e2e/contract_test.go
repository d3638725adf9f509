package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/internal/contracttest"
)

// The API documents of docs/, loaded once.
var contract struct {
	once   sync.Once
	api    *contracttest.OpenAPI
	events *contracttest.Events
	err    error
}

func contracts(t testing.TB) (*contracttest.OpenAPI, *contracttest.Events) {
	t.Helper()
	contract.once.Do(func() { contract.api, contract.events, contract.err = contracttest.Load() })
	if contract.err != nil {
		t.Fatal(contract.err)
	}
	return contract.api, contract.events
}

// apiClient is the client of every request the tests send: t fails on a
// request or a response that disagrees with docs/openapi.yaml.
func apiClient(t testing.TB) *http.Client {
	api, _ := contracts(t)
	return &http.Client{Transport: api.Transport(t, http.DefaultTransport)}
}

// sendMalformed is send for a request made invalid on purpose: only its
// response is validated against docs/openapi.yaml.
func sendMalformed(t *testing.T, method, url, body string, headers ...string) (int, []byte, http.Header) {
	t.Helper()
	return sendContext(contracttest.Malformed(context.Background()), t, method, url, body, headers...)
}

// checkRecords validates every record on the two topics against
// docs/asyncapi.yaml and the schemas of docs/schemas; startSystem runs it
// as the test ends.
func (s *system) checkRecords() {
	t := s.t
	_, evs := contracts(t)
	const shown = 10
	bad := 0
	for _, topic := range []struct{ name, channel string }{
		{s.ordersTopic, "orders.events"}, {s.customersTopic, "customers.events"},
	} {
		n := int(s.kafka.Count(t, topic.name))
		recs := s.kafka.ReadAll(t, topic.name, n, 20*time.Second)
		if len(recs) < n {
			t.Errorf("read %d of the %d records of %s", len(recs), n, topic.name)
		}
		for _, r := range recs {
			err := evs.ValidateRecord(topic.channel, r)
			if err == nil {
				continue
			}
			if bad++; bad <= shown {
				headers := ""
				for _, h := range r.Headers {
					headers += fmt.Sprintf(" %s=%q", h.Key, h.Value)
				}
				t.Errorf("record %s/%d@%d disagrees with docs/asyncapi.yaml: %v\nkey %s, headers%s, value %s",
					r.Topic, r.Partition, r.Offset, err, r.Key, headers, r.Value)
			}
		}
	}
	if bad > shown {
		t.Errorf("and %d more records disagree with docs/asyncapi.yaml", bad-shown)
	}
}

// A run that goes through every route of docs/openapi.yaml and publishes
// every message of docs/asyncapi.yaml, each exchange and record validated
// (by apiClient and checkRecords).
func TestAPIDocuments(t *testing.T) {
	s := startSystem(t)
	const trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	o, c, p := s.order.url, s.customer.url, s.projector.url

	cust := s.register("Contract", "100.00")
	mustCall(t, 200, nil, "PUT", c+"/customers/"+cust.String()+"/credit-limit", `{"credit_limit": "150"}`, "traceparent", trace)
	var placed struct {
		OrderID uuid.UUID `json:"order_id"`
	}
	body := `{"customer_id": "` + cust.String() + `", "items": [{"product_id": "sku-1", "quantity": 2, "unit_price": "10.5"}, {"product_id": "sku-2", "quantity": 1, "unit_price": "9"}]}`
	mustCall(t, 201, &placed, "POST", o+"/orders", body, "Idempotency-Key", "contract-1", "traceparent", trace)
	mustCall(t, 201, nil, "POST", o+"/orders", body, "Idempotency-Key", "contract-1")
	approved := placed.OrderID
	refused := s.place(cust, 1, "1000.00")
	unknown := s.place(uuid.New(), 1, "1.00")
	s.awaitStatus(approved, "APPROVED")
	s.awaitSaga(refused, []string{"OrderCreated", "OrderRejected"}, []string{"CreditReservationFailed"})
	s.awaitSaga(unknown, []string{"OrderCreated", "OrderRejected"}, []string{"CreditReservationFailed"})
	mustCall(t, 200, nil, "POST", o+"/orders/"+approved.String()+"/cancel", "", "traceparent", trace)
	s.awaitSaga(approved, []string{"OrderCreated", "OrderApproved", "OrderCancelled"}, []string{"CreditReserved", "CreditSettled", "CreditReleased"})

	// Every message of the document is on the topics.
	published := map[string][]string{}
	for _, e := range seenOn(t, s.topics) {
		ch := map[string]string{s.ordersTopic: "orders.events", s.customersTopic: "customers.events"}[e.Topic]
		if !slices.Contains(published[ch], e.Env.EventType) {
			published[ch] = append(published[ch], e.Env.EventType)
		}
	}
	_, evs := contracts(t)
	for _, ch := range []string{"orders.events", "customers.events"} {
		slices.Sort(published[ch])
		if want := evs.Messages(ch); !slices.Equal(published[ch], want) {
			t.Errorf("%s: the run published %v, the document has %v", ch, published[ch], want)
		}
	}

	// The write side's other routes.
	var evsOfOrder []struct {
		OccurredAt string `json:"occurred_at"`
	}
	mustCall(t, 200, &evsOfOrder, "GET", o+"/orders/"+approved.String()+"/events", "")
	mustCall(t, 200, nil, "GET", o+"/orders/"+approved.String()+"?version=1", "")
	mustCall(t, 200, nil, "GET", o+"/orders/"+approved.String()+"?at="+evsOfOrder[0].OccurredAt, "")
	mustCall(t, 200, nil, "GET", o+"/orders/"+refused.String(), "")
	mustCall(t, 200, nil, "GET", c+"/customers/"+cust.String()+"/events", "")

	// The read model's.
	s.awaitProjected()
	mustCall(t, 200, nil, "GET", fmt.Sprintf("%s/orders/%s?min_version=3", p, approved), "")
	mustCall(t, 200, nil, "GET", fmt.Sprintf("%s/orders/%s?min_version=2", p, refused), "")
	mustCall(t, 200, nil, "GET", p+"/customers/"+cust.String(), "")
	var page struct {
		Next *string `json:"next"`
	}
	mustCall(t, 200, &page, "GET", p+"/orders?limit=1&customer_id="+cust.String(), "")
	if page.Next == nil {
		t.Fatal("a full page has no next")
	}
	mustCall(t, 200, nil, "GET", p+"/orders?status=REJECTED&after="+*page.Next, "")
	mustCall(t, 200, nil, "GET", p+"/status", "")
	for _, url := range []string{o, c, p} {
		mustCall(t, 200, nil, "GET", url+"/healthz", "")
		mustCall(t, 200, nil, "GET", url+"/readyz", "")
	}
}
