package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/internal/httpapi"
	"github.com/eventsaga/eventsaga/internal/testenv"
)

// A stalled database does not hang commands: with a service's events table
// locked, as a stalled server holds every write, POST /orders and
// POST /customers answer 503 with a problem body within the request
// timeout. Once the stall is over, the client's retry with the same
// Idempotency-Key gets the order, created once (by the first request after
// all, or by the retry), and its saga completes.
func TestCommandsAgainstAStalledDatabaseAnswer503(t *testing.T) {
	s := startSystem(t)
	cust := s.register("Stall", "100.00")
	releaseOrders := testenv.LockTable(t, s.orderPool, "events")
	releaseCustomers := testenv.LockTable(t, s.customerPool, "events")

	order := `{"customer_id": "` + cust.String() + `", "items": [{"product_id": "sku-1", "quantity": 1, "unit_price": "10.00"}]}`
	for _, req := range []struct {
		url, body string
		headers   []string
	}{
		{s.order.url + "/orders", order, []string{"Idempotency-Key", "stall-1"}},
		{s.customer.url + "/customers", `{"name": "Stalled", "credit_limit": "1.00"}`, nil},
	} {
		start := time.Now()
		status, body, header := send(t, "POST", req.url, req.body, req.headers...)
		took := time.Since(start)
		var p httpapi.Problem
		_ = json.Unmarshal(body, &p)
		if status != 503 || header.Get("Content-Type") != httpapi.ContentType || p.Type != "urn:eventsaga:problem:unavailable" {
			t.Errorf("POST %s against a stalled database: %d %s %s; want a 503 problem", req.url, status, header.Get("Content-Type"), body)
		}
		if took > httpapi.RequestTimeout+2*time.Second {
			t.Errorf("POST %s answered after %v; the request timeout is %v", req.url, took, httpapi.RequestTimeout)
		}
	}

	releaseOrders()
	releaseCustomers()
	var placed struct {
		OrderID uuid.UUID `json:"order_id"`
	}
	mustCall(t, 201, &placed, "POST", s.order.url+"/orders", order, "Idempotency-Key", "stall-1")
	var orders int
	err := s.orderPool.QueryRow(context.Background(),
		"SELECT count(*) FROM events WHERE event_type = 'OrderCreated' AND data->>'customer_id' = $1", cust.String()).Scan(&orders)
	if err != nil || orders != 1 {
		t.Errorf("%d orders created for the customer (%v), want 1", orders, err)
	}
	s.awaitSaga(placed.OrderID, []string{"OrderCreated", "OrderApproved"}, []string{"CreditReserved", "CreditSettled"})
}
