package contracttest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

var docs struct {
	once sync.Once
	api  *OpenAPI
	evs  *Events
	err  error
}

func load(t *testing.T) (*OpenAPI, *Events) {
	t.Helper()
	docs.once.Do(func() { docs.api, docs.evs, docs.err = Load() })
	if docs.err != nil {
		t.Fatal(docs.err)
	}
	return docs.api, docs.evs
}

const (
	id      = "0191b2c3-1111-7aaa-8bbb-123456789abc"
	orderOK = `{"order_id":"` + id + `","customer_id":"` + id + `","status":"APPROVED","total":"30.00",` +
		`"items":[{"product_id":"sku-1","quantity":3,"unit_price":"10.00"}],"rejection_reason":null,"version":2}`
	notFound = `{"type":"urn:eventsaga:problem:not-found","title":"Not found","status":404,"detail":"no such order"}`
	created  = `{"event_id":"` + id + `","event_type":"OrderCreated","schema_version":1,"aggregate_type":"order","aggregate_id":"` + id +
		`","aggregate_version":1,"occurred_at":"2026-11-23T10:00:00.123456Z","correlation_id":"` + id + `","causation_id":"` + id +
		`","data":{"order_id":"` + id + `","customer_id":"` + id + `","items":[{"product_id":"sku-1","quantity":3,"unit_price":"10.00"}],"total":"30.00"}}`
)

func exchange(method, url, reqBody string, status int, contentType, body string) Exchange {
	req, err := http.NewRequest(method, "http://127.0.0.1:1234"+url, strings.NewReader(reqBody))
	if err != nil {
		panic(err)
	}
	if reqBody != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return Exchange{Request: req, RequestBody: []byte(reqBody), Status: status, Header: http.Header{"Content-Type": {contentType}}, Body: []byte(body)}
}

func TestOpenAPIAcceptsTheServicesAnswers(t *testing.T) {
	api, _ := load(t)
	for _, x := range []Exchange{
		exchange("GET", "/orders/"+id, "", 200, "application/json", orderOK),
		exchange("GET", "/orders/"+id+"?version=1", "", 404, "application/problem+json", notFound),
		exchange("GET", "/orders/"+id+"/events", "", 200, "application/json", "["+created+"]"),
		exchange("POST", "/orders", `{"customer_id":"`+id+`","items":[{"product_id":"p","quantity":1,"unit_price":"1.5"}]}`,
			201, "application/json", `{"order_id":"`+id+`","status":"PENDING","total":"1.50","version":1}`),
		exchange("GET", "/orders?status=APPROVED&limit=2", "", 200, "application/json", `{"orders":[],"next":null}`),
		exchange("GET", "/status", "", 200, "application/json",
			`{"generation":1,"consumer_group":"projector.g1","projected":{"Applied":3,"Duplicates":0,"DeadLettered":0},"lag":{"orders.events":{"0":0,"1":2}},"total_lag":2}`),
		exchange("GET", "/healthz", "", 200, "application/json", `{"status":"ok"}`),
	} {
		if err := api.Validate(x); err != nil {
			t.Errorf("%s %s: %v", x.Request.Method, x.Request.URL, err)
		}
	}
}

// The validator finds what drifts, including through the 3.1 keywords
// (const, if/then/else, dependentRequired, type null) and the schemas of
// docs/schemas that the document refers to.
func TestOpenAPIRejects(t *testing.T) {
	api, _ := load(t)
	malformed := func(x Exchange) Exchange { x.Malformed = true; return x }
	for _, tt := range []struct {
		name string
		x    Exchange
		want string // in the error
	}{
		{"a required field missing", exchange("GET", "/orders/"+id, "", 200, "application/json",
			strings.Replace(orderOK, `,"version":2`, "", 1)), "version"},
		{"an amount as a JSON number", exchange("GET", "/orders/"+id, "", 200, "application/json",
			strings.Replace(orderOK, `"total":"30.00"`, `"total":30.0`, 1)), "total"},
		{"an amount with one decimal place", exchange("GET", "/orders/"+id, "", 200, "application/json",
			strings.Replace(orderOK, `"total":"30.00"`, `"total":"30.0"`, 1)), "total"},
		{"a field the document does not name", exchange("GET", "/orders/"+id, "", 200, "application/json",
			strings.Replace(orderOK, `"version":2`, `"version":2,"note":"x"`, 1)), "note"},
		{"a rejection reason on an approved order (if/then/else)", exchange("GET", "/orders/"+id, "", 200, "application/json",
			strings.Replace(orderOK, `"rejection_reason":null`, `"rejection_reason":"UNKNOWN_CUSTOMER"`, 1)), "rejection_reason"},
		{"an undocumented status", exchange("GET", "/orders/"+id, "", 201, "application/json", orderOK), "status"},
		{"a problem of another status", exchange("GET", "/orders/"+id, "", 404, "application/problem+json",
			strings.Replace(notFound, `"status":404`, `"status":400`, 1)), "404"},
		{"a problem as application/json", exchange("GET", "/orders/"+id, "", 404, "application/json", notFound), "Content-Type"},
		{"an event at an undocumented schema version (const, in docs/schemas)", exchange("GET", "/orders/"+id+"/events", "", 200, "application/json",
			"["+strings.Replace(created, `"schema_version":1`, `"schema_version":2`, 1)+"]"), "schema_version"},
		{"an event's data with a float amount", exchange("GET", "/orders/"+id+"/events", "", 200, "application/json",
			"["+strings.Replace(created, `"total":"30.00"`, `"total":30`, 1)+"]"), "total"},
		{"lag without projected (dependentRequired)", exchange("GET", "/status", "", 200, "application/json",
			`{"generation":1,"consumer_group":"projector.g1","lag":{},"total_lag":0}`), "projected"},
		{"a request no operation matches", exchange("GET", "/nowhere", "", 404, "application/problem+json",
			`{"type":"urn:eventsaga:problem:http","title":"Not Found","status":404}`), "no operation"},
		{"a request body with a float amount", exchange("POST", "/customers", `{"name":"Ada","credit_limit":10.5}`,
			201, "application/json", `{"customer_id":"`+id+`","version":1}`), "credit_limit"},
		{"a query parameter out of range", exchange("GET", "/orders?limit=501", "", 200, "application/json",
			`{"orders":[],"next":null}`), "limit"},
		{"an Idempotency-Key with a space", func() Exchange {
			x := exchange("POST", "/orders", `{"customer_id":"`+id+`","items":[{"product_id":"p","quantity":1,"unit_price":"1"}]}`,
				201, "application/json", `{"order_id":"`+id+`","status":"PENDING","total":"1.00","version":1}`)
			x.Request.Header.Set("Idempotency-Key", "a key")
			return x
		}(), "Idempotency-Key"},
		{"a malformed request's answer that is no problem detail", malformed(exchange("POST", "/customers", `{"name":5}`,
			400, "application/problem+json", `{"title":"Malformed request","status":400}`)), "type"},
		{"a malformed request to no operation answered without a problem", malformed(exchange("DELETE", "/orders", "",
			405, "application/json", `{"message":"Method Not Allowed"}`)), "Content-Type"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := api.Validate(tt.x)
			if err == nil {
				t.Fatal("accepted")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error does not name %q: %v", tt.want, err)
			}
			if len(err.Error()) > 2000 {
				t.Errorf("error of %d bytes", len(err.Error()))
			}
		})
	}
}

// A request made malformed on purpose is not validated; its answer is.
func TestOpenAPIMalformedRequestsOnlyHaveTheirAnswerValidated(t *testing.T) {
	api, _ := load(t)
	x := exchange("POST", "/customers", `{"name":5}`, 400, "application/problem+json",
		`{"type":"urn:eventsaga:problem:malformed-request","title":"Malformed request","status":400,"detail":"field name must be a JSON string, not number","errors":[{"field":"name","message":"wrong JSON type"}]}`)
	if err := api.Validate(x); err == nil {
		t.Error("a malformed request passed")
	}
	x.Malformed = true
	if err := api.Validate(x); err != nil {
		t.Error(err)
	}
	unknown := exchange("GET", "/nowhere", "", 404, "application/problem+json", `{"type":"urn:eventsaga:problem:http","title":"Not Found","status":404,"detail":"Not Found"}`)
	unknown.Malformed = true
	if err := api.Validate(unknown); err != nil {
		t.Error(err)
	}
}

type reporter struct {
	mu   sync.Mutex
	errs []string
}

func (r *reporter) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// The transport reports a disagreement with the method, path and status,
// and the caller still gets the whole response.
func TestTransport(t *testing.T) {
	api, _ := load(t)
	var sent string
	next := roundTripper(func(r *http.Request) (*http.Response, error) {
		b, _ := io.ReadAll(r.Body)
		sent = string(b)
		body := strings.Replace(orderOK, `,"version":2`, "", 1) // no version
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
	})
	var rep reporter
	client := &http.Client{Transport: api.Transport(&rep, next)}

	resp, err := client.Post("http://127.0.0.1:1/orders/"+id+"/cancel", "application/json", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != strings.Replace(orderOK, `,"version":2`, "", 1) {
		t.Errorf("the caller got %s", b)
	}
	if len(rep.errs) != 1 || !strings.Contains(rep.errs[0], "POST /orders/"+id+"/cancel answered 200") || !strings.Contains(rep.errs[0], "version") {
		t.Errorf("reported %q", rep.errs)
	}

	// A malformed request, flagged as such: the body reaches the server
	// and nothing is reported about the request (the answer is checked).
	rep.errs = nil
	req, _ := http.NewRequestWithContext(Malformed(context.Background()), "POST", "http://127.0.0.1:1/customers", strings.NewReader(`{"name":5}`))
	next = func(r *http.Request) (*http.Response, error) {
		b, _ := io.ReadAll(r.Body)
		sent = string(b)
		return &http.Response{StatusCode: 400, Header: http.Header{"Content-Type": {"application/problem+json"}},
			Body: io.NopCloser(strings.NewReader(`{"type":"urn:eventsaga:problem:malformed-request","title":"Malformed request","status":400}`)), Request: r}, nil
	}
	client.Transport = api.Transport(&rep, next)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if sent != `{"name":5}` || len(rep.errs) != 0 {
		t.Errorf("sent %q, reported %q", sent, rep.errs)
	}
}
