package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// Bad requests get the status of the contract with a problem+json body,
// never a 5xx, and append nothing.
func TestHostileInput(t *testing.T) {
	s := startSystem(t)
	cust := s.register("Hostile", "100.00")
	rejected := s.place(cust, 1, "500.00")
	s.awaitStatus(rejected, "REJECTED")
	approved := s.place(cust, 1, "60.00")
	s.awaitStatus(approved, "APPROVED")
	good := `{"customer_id": "` + cust.String() + `", "items": [{"product_id": "p", "quantity": 1, "unit_price": "1.00"}]}`
	counts := func() (int, int) { return count(t, s.orderPool, "events"), count(t, s.customerPool, "events") }

	// An Idempotency-Key repeated with the same request answers as the
	// first time (however the JSON is spaced) and creates nothing.
	var first, again struct {
		OrderID uuid.UUID `json:"order_id"`
		Status  string    `json:"status"`
		Total   string    `json:"total"`
		Version int64     `json:"version"`
	}
	mustCall(t, 201, &first, "POST", s.order.url+"/orders", good, "Idempotency-Key", "key-1")
	s.awaitStatus(first.OrderID, "APPROVED") // the counts below move only if a bad request appends
	ordersBefore, _ := counts()
	mustCall(t, 201, &again, "POST", s.order.url+"/orders", strings.ReplaceAll(good, " ", ""), "Idempotency-Key", "key-1")
	if again != first {
		t.Errorf("repeated key answered %+v, first time %+v", again, first)
	}
	if ordersAfter, _ := counts(); ordersAfter != ordersBefore {
		t.Errorf("repeated key appended %d events", ordersAfter-ordersBefore)
	}

	item := func(fields string) string {
		return `{"customer_id": "` + cust.String() + `", "items": [{` + fields + `}]}`
	}
	items := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = `{"product_id": "p", "quantity": 1, "unit_price": "1.00"}`
		}
		return `{"customer_id": "` + cust.String() + `", "items": [` + strings.Join(parts, ",") + `]}`
	}
	huge := `{"customer_id": "` + cust.String() + `", "items": [{"product_id": "` + strings.Repeat("x", 70<<10) + `", "quantity": 1, "unit_price": "1.00"}]}`
	o, c := s.order.url, s.customer.url
	unknown := uuid.New().String()

	tests := []struct {
		name, method, url, body string
		headers                 []string
		want                    int
	}{
		{"malformed JSON", "POST", o + "/orders", `{"customer_id": `, nil, 400},
		{"not an object", "POST", o + "/orders", `[1, 2]`, nil, 400},
		{"empty body", "POST", o + "/orders", ``, nil, 400},
		{"null body", "POST", o + "/orders", `null`, nil, 400},
		{"two JSON values", "POST", o + "/orders", good + good, nil, 400},
		{"customer_id a number", "POST", o + "/orders", `{"customer_id": 7, "items": []}`, nil, 400},
		{"customer_id not a UUID", "POST", o + "/orders", `{"customer_id": "abc", "items": [{"product_id": "p", "quantity": 1, "unit_price": "1.00"}]}`, nil, 400},
		{"customer_id missing", "POST", o + "/orders", `{"items": [{"product_id": "p", "quantity": 1, "unit_price": "1.00"}]}`, nil, 422},
		{"items missing", "POST", o + "/orders", `{"customer_id": "` + cust.String() + `"}`, nil, 422},
		{"items empty", "POST", o + "/orders", items(0), nil, 422},
		{"items not a list", "POST", o + "/orders", `{"customer_id": "` + cust.String() + `", "items": "x"}`, nil, 400},
		{"too many items", "POST", o + "/orders", items(101), nil, 422},
		{"zero quantity", "POST", o + "/orders", item(`"product_id": "p", "quantity": 0, "unit_price": "1.00"`), nil, 422},
		{"negative quantity", "POST", o + "/orders", item(`"product_id": "p", "quantity": -3, "unit_price": "1.00"`), nil, 422},
		{"fractional quantity", "POST", o + "/orders", item(`"product_id": "p", "quantity": 1.5, "unit_price": "1.00"`), nil, 422},
		{"quantity a string", "POST", o + "/orders", item(`"product_id": "p", "quantity": "2", "unit_price": "1.00"`), nil, 400},
		{"huge quantity", "POST", o + "/orders", item(`"product_id": "p", "quantity": 1000000000000, "unit_price": "1.00"`), nil, 422},
		{"price with three decimals", "POST", o + "/orders", item(`"product_id": "p", "quantity": 1, "unit_price": "1.005"`), nil, 422},
		{"negative price", "POST", o + "/orders", item(`"product_id": "p", "quantity": 1, "unit_price": "-1.00"`), nil, 422},
		{"price a number", "POST", o + "/orders", item(`"product_id": "p", "quantity": 1, "unit_price": 12.5`), nil, 400},
		{"price not a decimal", "POST", o + "/orders", item(`"product_id": "p", "quantity": 1, "unit_price": "ten"`), nil, 400},
		{"price too large", "POST", o + "/orders", item(`"product_id": "p", "quantity": 1, "unit_price": "10000000000000000.00"`), nil, 422},
		{"product_id missing", "POST", o + "/orders", item(`"quantity": 1, "unit_price": "1.00"`), nil, 422},
		{"product_id empty", "POST", o + "/orders", item(`"product_id": "", "quantity": 1, "unit_price": "1.00"`), nil, 422},
		{"unknown field", "POST", o + "/orders", `{"customer_id": "` + cust.String() + `", "items": [], "coupon": "FREE"}`, nil, 400},
		{"unknown item field", "POST", o + "/orders", item(`"product_id": "p", "quantity": 1, "unit_price": "1.00", "discount": "1.00"`), nil, 400},
		{"body over 64 KiB", "POST", o + "/orders", huge, nil, 413},
		{"Idempotency-Key reused with another body", "POST", o + "/orders", item(`"product_id": "q", "quantity": 2, "unit_price": "1.00"`), []string{"Idempotency-Key", "key-1"}, 422},
		{"Idempotency-Key too long", "POST", o + "/orders", good, []string{"Idempotency-Key", strings.Repeat("k", 256)}, 400},
		{"Idempotency-Key with spaces", "POST", o + "/orders", good, []string{"Idempotency-Key", "a key"}, 400},
		{"order id not a UUID", "GET", o + "/orders/not-a-uuid", "", nil, 400},
		{"unknown order", "GET", o + "/orders/" + unknown, "", nil, 404},
		{"version not a number", "GET", o + "/orders/" + approved.String() + "?version=abc", "", nil, 400},
		{"version zero", "GET", o + "/orders/" + approved.String() + "?version=0", "", nil, 400},
		{"version and at", "GET", o + "/orders/" + approved.String() + "?version=1&at=2026-01-01T00:00:00Z", "", nil, 400},
		{"at not a time", "GET", o + "/orders/" + approved.String() + "?at=yesterday", "", nil, 400},
		{"events of unknown order", "GET", o + "/orders/" + unknown + "/events", "", nil, 404},
		{"cancel unknown order", "POST", o + "/orders/" + unknown + "/cancel", "", nil, 404},
		{"cancel rejected order", "POST", o + "/orders/" + rejected.String() + "/cancel", "", nil, 409},
		{"cancel with bad id", "POST", o + "/orders/123/cancel", "", nil, 400},
		{"unknown route", "GET", o + "/nowhere", "", nil, 404},
		{"wrong method", "DELETE", o + "/orders", "", nil, 405},
		{"customer name missing", "POST", c + "/customers", `{"credit_limit": "10.00"}`, nil, 422},
		{"customer name blank", "POST", c + "/customers", `{"name": "  ", "credit_limit": "10.00"}`, nil, 422},
		{"customer name a number", "POST", c + "/customers", `{"name": 5, "credit_limit": "10.00"}`, nil, 400},
		{"customer name too long", "POST", c + "/customers", `{"name": "` + strings.Repeat("n", 201) + `", "credit_limit": "10.00"}`, nil, 422},
		{"credit limit a number", "POST", c + "/customers", `{"name": "N", "credit_limit": 10}`, nil, 400},
		{"credit limit negative", "POST", c + "/customers", `{"name": "N", "credit_limit": "-10.00"}`, nil, 422},
		{"credit limit three decimals", "POST", c + "/customers", `{"name": "N", "credit_limit": "10.001"}`, nil, 422},
		{"credit limit missing", "POST", c + "/customers", `{"name": "N"}`, nil, 422},
		{"credit limit below reserved", "PUT", c + "/customers/" + cust.String() + "/credit-limit", `{"credit_limit": "10.00"}`, nil, 422},
		{"credit limit of unknown customer", "PUT", c + "/customers/" + unknown + "/credit-limit", `{"credit_limit": "10.00"}`, nil, 404},
		{"customer id not a UUID", "GET", c + "/customers/xyz", "", nil, 400},
		{"unknown customer", "GET", c + "/customers/" + unknown, "", nil, 404},
		{"events of unknown customer", "GET", c + "/customers/" + unknown + "/events", "", nil, 404},
		{"customer body over 64 KiB", "POST", c + "/customers", `{"name": "` + strings.Repeat("n", 70<<10) + `", "credit_limit": "1.00"}`, nil, 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ordersBefore, customersBefore := counts()
			status, body, header := sendMalformed(t, tt.method, tt.url, tt.body, tt.headers...)
			if status != tt.want {
				t.Errorf("status %d, want %d: %s", status, tt.want, body)
			}
			if status >= 500 {
				t.Errorf("a request made a %d", status)
			}
			var p struct {
				Type   string `json:"type"`
				Title  string `json:"title"`
				Status int    `json:"status"`
			}
			if err := json.Unmarshal(body, &p); err != nil || p.Status != status || p.Title == "" || p.Type == "" {
				t.Errorf("not a problem detail: %s (%v)", body, err)
			}
			if ct := header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q", ct)
			}
			if ordersAfter, customersAfter := counts(); ordersAfter != ordersBefore || customersAfter != customersBefore {
				t.Errorf("events appended: orders %d -> %d, customers %d -> %d", ordersBefore, ordersAfter, customersBefore, customersAfter)
			}
		})
	}
	if len(tests) < 25 {
		t.Fatalf("only %d cases", len(tests))
	}

}
