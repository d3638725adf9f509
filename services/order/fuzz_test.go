package order

// Fuzz targets of the REST API's request decoding. The handlers run on a
// Service without a database: a request the decoder refuses never reaches
// one, and one it accepts is checked at the decoder (placeCommand,
// parseOrderQuery, httpapi.ParseUUID) instead of being sent on.

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/eventsaga/eventsaga/internal/httpapi"
	"github.com/eventsaga/eventsaga/internal/httpapi/httpapitest"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
	"github.com/eventsaga/eventsaga/services/order/domain"
)

// fuzzAPI is the service's routes on a Service with no database.
func fuzzAPI() *echo.Echo {
	return (&Service{log: slog.New(slog.DiscardHandler)}).routes()
}

const (
	validCustomer = "0190f5a0-0000-7000-8000-0000000000c1"
	validTrace    = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
)

var (
	traceParentSyntax = regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)
	keySyntax         = regexp.MustCompile(`^[\x21-\x7e]{1,255}$`)
)

// FuzzPlaceOrder checks POST /orders with any body, Idempotency-Key headers
// (none, one or two of key) and traceparent. A refusal is a 4xx problem
// from the real route. An accepted request was one JSON object; its command
// has at most MaxItems items, each with a quantity from 1 to MaxQuantity and
// a unit price from 0 to MaxMoney, the key that came (printable ASCII, at
// most MaxIdempotencyKeyLength) and a valid traceparent or none; the
// command written back as a canonical request decodes to itself; and the
// domain either places it, with a total that is the sum of its lines within
// 0 to MaxMoney, or refuses it with a 422.
func FuzzPlaceOrder(f *testing.F) {
	item := `{"product_id":"apple","quantity":3,"unit_price":"2.50"}`
	valid := `{"customer_id":"` + validCustomer + `","items":[` + item + `]}`
	withItem := func(it string) string { return `{"customer_id":"` + validCustomer + `","items":[` + it + `]}` }
	for _, body := range []string{
		valid, " \n\t" + valid + "\r\n", "\ufeff" + valid, "\u00a0" + valid,
		"", " ", "null", "[]", `"{}"`, "1", "{}", "{", valid[:len(valid)-1], valid + valid, valid + " {}", valid + "}", valid + "]", valid + "x",
		`{"customer_id":null,"items":[]}`, `{"customer_id":"` + validCustomer + `"}`, `{"customer_id":"` + validCustomer + `","items":null}`,
		`{"customer_id":"` + validCustomer + `","items":[]}`, `{"customer_id":"` + validCustomer + `","items":{}}`,
		`{"customer_id":5,"items":[]}`, `{"customer_id":"nope","items":[]}`, `{"customer_id":"00000000-0000-0000-0000-000000000000","items":[` + item + `]}`,
		`{"customer_id":"{` + validCustomer + `}","items":[]}`, `{"customer_id":"` + strings.ToUpper(validCustomer) + `","items":[` + item + `]}`,
		`{"CUSTOMER_ID":"` + validCustomer + `","Items":[` + item + `]}`, `{"customer_id":"x","customer_id":"` + validCustomer + `","items":[` + item + `]}`,
		`{"customer_id":"` + validCustomer + `","items":[` + item + `],"items":[{}]}`, `{"customer_id":"` + validCustomer + `","items":[` + item + `],"extra":1}`,
		withItem(`null`), withItem(`{}`), withItem(`[]`), withItem(`{"product_id":"a"}`), withItem(`{"product_id":"a","quantity":1}`),
		withItem(`{"product_id":null,"quantity":1,"unit_price":"1"}`), withItem(`{"product_id":7,"quantity":1,"unit_price":"1"}`),
		withItem(`{"product_id":"","quantity":1,"unit_price":"1"}`), withItem(`{"product_id":" ","quantity":1,"unit_price":"1"}`),
		withItem(`{"product_id":"a\u0000b","quantity":1,"unit_price":"1"}`), withItem(`{"product_id":"` + strings.Repeat("p", 65) + `","quantity":1,"unit_price":"1"}`),
		withItem(`{"product_id":"りんご🍎","quantity":1,"unit_price":"1"}`), withItem("{\"product_id\":\"\xff\xfe\",\"quantity\":1,\"unit_price\":\"1\"}"),
		withItem(`{"product_id":"a","quantity":"3","unit_price":"1"}`), withItem(`{"product_id":"a","quantity":true,"unit_price":"1"}`),
		withItem(`{"product_id":"a","quantity":null,"unit_price":"1"}`), withItem(`{"product_id":"a","quantity":[1],"unit_price":"1"}`),
		withItem(`{"product_id":"a","quantity":0,"unit_price":"1"}`), withItem(`{"product_id":"a","quantity":-1,"unit_price":"1"}`),
		withItem(`{"product_id":"a","quantity":-0,"unit_price":"1"}`), withItem(`{"product_id":"a","quantity":1.5,"unit_price":"1"}`),
		withItem(`{"product_id":"a","quantity":1.0,"unit_price":"1"}`), withItem(`{"product_id":"a","quantity":1e3,"unit_price":"1"}`),
		withItem(`{"product_id":"a","quantity":1000000,"unit_price":"1"}`), withItem(`{"product_id":"a","quantity":1000001,"unit_price":"1"}`),
		withItem(`{"product_id":"a","quantity":9223372036854775808,"unit_price":"1"}`), withItem(`{"product_id":"a","quantity":NaN,"unit_price":"1"}`),
		withItem(`{"product_id":"a","quantity":1,"unit_price":1}`), withItem(`{"product_id":"a","quantity":1,"unit_price":null}`),
		withItem(`{"product_id":"a","quantity":1,"unit_price":"-1.00"}`), withItem(`{"product_id":"a","quantity":1,"unit_price":"-0.00"}`),
		withItem(`{"product_id":"a","quantity":1,"unit_price":"1.005"}`), withItem(`{"product_id":"a","quantity":1,"unit_price":"1e3"}`),
		withItem(`{"product_id":"a","quantity":1,"unit_price":"NaN"}`), withItem(`{"product_id":"a","quantity":1,"unit_price":"Inf"}`),
		withItem(`{"product_id":"a","quantity":1,"unit_price":"１２"}`), withItem(`{"product_id":"a","quantity":1,"unit_price":"\u0031"}`),
		withItem(`{"product_id":"a","quantity":1,"unit_price":"999999999999999.99"}`), withItem(`{"product_id":"a","quantity":1,"unit_price":"1000000000000000"}`),
		withItem(`{"product_id":"a","quantity":1000000,"unit_price":"999999999999999.99"}`), // the total overflows
		withItem(`{"product_id":"a","quantity":1,"unit_price":"0"}`),
		withItem(strings.TrimSuffix(strings.Repeat(item+",", domain.MaxItems), ",")), withItem(strings.TrimSuffix(strings.Repeat(item+",", domain.MaxItems+1), ",")),
		`{"customer_id":"` + validCustomer + `","items":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
		`{"customer_id":"` + validCustomer + `","items":[` + item + `],"x":"` + strings.Repeat("x", httpapi.MaxBodyBytes) + `"}`,
	} {
		f.Add(body, "", uint8(0), "")
	}
	for _, key := range []string{"", "order-1", "k", strings.Repeat("k", MaxIdempotencyKeyLength), strings.Repeat("k", MaxIdempotencyKeyLength+1), "with space", "é", "a\x7f", "a\tb"} {
		f.Add(valid, key, uint8(1), validTrace)
		f.Add(valid, key, uint8(2), "")
	}
	for _, trace := range []string{validTrace, strings.ToUpper(validTrace), "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "garbage"} {
		f.Add(valid, "", uint8(0), trace)
	}
	e := fuzzAPI()
	f.Fuzz(func(t *testing.T, body, key string, keys uint8, trace string) {
		keys %= 3
		request := func() *http.Request {
			req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(body))
			req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
			for range keys {
				req.Header.Add("Idempotency-Key", key)
			}
			if trace != "" {
				req.Header.Set("traceparent", trace)
			}
			return req
		}
		cmd, err := placeCommand(httpapitest.Routed(e, request()))
		if err != nil {
			httpapitest.WantProblem(t, e, request(), err)
			return
		}
		httpapitest.WantJSONObject(t, body)
		switch {
		case keys == 2:
			t.Fatalf("accepted two Idempotency-Key headers")
		case keys == 1 && cmd.IdempotencyKey != key, keys == 0 && cmd.IdempotencyKey != "":
			t.Fatalf("Idempotency-Key %q (%d headers) became %q", key, keys, cmd.IdempotencyKey)
		case cmd.IdempotencyKey != "" && !keySyntax.MatchString(cmd.IdempotencyKey):
			t.Fatalf("accepted Idempotency-Key %q", cmd.IdempotencyKey)
		case traceParentSyntax.MatchString(trace) && cmd.TraceParent != trace,
			!traceParentSyntax.MatchString(trace) && cmd.TraceParent != "":
			t.Fatalf("traceparent %q became %q", trace, cmd.TraceParent)
		case len(cmd.Items) > domain.MaxItems:
			t.Fatalf("accepted %d items", len(cmd.Items))
		}
		for i, it := range cmd.Items {
			if it.Quantity < 1 || it.Quantity > domain.MaxQuantity || it.UnitPrice < 0 || it.UnitPrice > events.MaxMoney {
				t.Fatalf("accepted item %d: %+v", i, it)
			}
		}

		// The command as a canonical request decodes to itself.
		canon := canonicalPlace(cmd)
		req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(canon))
		if cmd.IdempotencyKey != "" {
			req.Header.Set("Idempotency-Key", cmd.IdempotencyKey)
		}
		if cmd.TraceParent != "" {
			req.Header.Set("traceparent", cmd.TraceParent)
		}
		again, err := placeCommand(httpapitest.Routed(e, req))
		if err != nil || !reflect.DeepEqual(again, cmd) {
			t.Fatalf("%q decoded as %+v; written back as %s it decodes as %+v, %v", body, cmd, canon, again, err)
		}

		evs, err := domain.Place(uuid.New(), cmd.CustomerID, cmd.Items)
		if err != nil {
			var p *httpapi.Problem
			if !errors.As(problem(err), &p) || p.Status != http.StatusUnprocessableEntity {
				t.Fatalf("the domain refused %+v with %v, which answers %v", cmd, err, problem(err))
			}
			return
		}
		var sum int64
		for _, it := range cmd.Items {
			sum += int64(it.UnitPrice) * it.Quantity // both bounded: no overflow
		}
		if total := evs[0].(orders.OrderCreated).Total; int64(total) != sum || total < 0 || total > events.MaxMoney {
			t.Fatalf("%+v placed with total %v, want %d cents", cmd, total, sum)
		}
	})
}

// canonicalPlace is the body of POST /orders that asks for cmd.
func canonicalPlace(cmd PlaceOrder) string {
	items := make([]string, len(cmd.Items))
	for i, it := range cmd.Items {
		pid, _ := json.Marshal(it.ProductID)
		items[i] = fmt.Sprintf(`{"product_id":%s,"quantity":%d,"unit_price":"%s"}`, pid, it.Quantity, it.UnitPrice)
	}
	return fmt.Sprintf(`{"customer_id":"%s","items":[%s]}`, cmd.CustomerID, strings.Join(items, ","))
}

// FuzzOrderPaths checks the order ID in GET /orders/{id}, GET
// /orders/{id}/events and POST /orders/{id}/cancel, and the version and at
// query parameters of the first. A refusal is a 4xx problem from the real
// route. An accepted ID is the UUID in the path; an accepted version is a
// whole number of at least 1 that came as such; an accepted at is an RFC
// 3339 time that came alone and renders back to the same instant.
func FuzzOrderPaths(f *testing.F) {
	id := "0190f5a0-0000-7000-8000-000000000001"
	for _, c := range []struct{ id, query string }{
		{id, ""}, {strings.ToUpper(id), ""}, {"", ""}, {"nope", ""}, {id + "0", ""}, {"{" + id + "}", ""}, {"urn:uuid:" + id, ""},
		{"0190f5a000007000800000000000000001", ""}, {"0190f5a0-0000-7000-8000-00000000000g", ""}, {"../" + id, ""}, {id + "/x", ""}, {"ü", ""},
		{id, "version=1"}, {id, "version=9223372036854775807"}, {id, "version=9223372036854775808"}, {id, "version=0"}, {id, "version=-1"},
		{id, "version=+1"}, {id, "version=1.0"}, {id, "version=1e3"}, {id, "version=NaN"}, {id, "version=%ef%bc%91"}, {id, "version="},
		{id, "at=2026-11-23T10:00:00Z"}, {id, "at=2026-11-23T10:00:00.123456789%2B05:30"}, {id, "at=2026-11-23T10:00:00+05:30"},
		{id, "at=0000-01-01T00:00:00Z"}, {id, "at=9999-12-31T23:59:59-23:59"}, {id, "at=2026-02-30T10:00:00Z"}, {id, "at=yesterday"},
		{id, "at=2026-11-23T24:00:00Z"}, {id, "at=1795000000"}, {id, "version=1&at=2026-11-23T10:00:00Z"},
		{id, "version=x&version=1"}, {id, "version=1&version=x"}, {id, "version=%zz"}, {id, "version=1;at=x"}, {id, "&&=&"},
	} {
		f.Add(c.id, c.query)
	}
	e := fuzzAPI()
	f.Fuzz(func(t *testing.T, id, query string) {
		request := func(method, suffix string) *http.Request {
			req := httptest.NewRequest(method, "/orders/"+url.PathEscape(id)+suffix, nil)
			req.URL.RawQuery = query
			return req
		}
		c := httpapitest.Routed(e, request(http.MethodGet, ""))
		if c.Path() != "/orders/:id" {
			httpapitest.WantProblem(t, e, request(http.MethodGet, ""), nil)
		} else if q, err := parseOrderQuery(c); err != nil {
			httpapitest.WantProblem(t, e, request(http.MethodGet, ""), err)
		} else {
			if !strings.EqualFold(q.id.String(), c.Param("id")) {
				t.Fatalf("path id %q became %v", c.Param("id"), q.id)
			}
			version, at := c.QueryParam("version"), c.QueryParam("at")
			switch {
			case version != "" && at != "":
				t.Fatalf("accepted both version %q and at %q", version, at)
			case version != "":
				if n, err := strconv.ParseInt(version, 10, 64); err != nil || q.version < 1 || q.version != n || q.asOf {
					t.Fatalf("version %q became %+v", version, q)
				}
			case at != "":
				back, err := time.Parse(time.RFC3339Nano, q.at.Format(time.RFC3339Nano))
				if !q.asOf || q.version != 0 || err != nil || !back.Equal(q.at) {
					t.Fatalf("at %q became %+v, which renders as %q", at, q, q.at.Format(time.RFC3339Nano))
				}
			case q.version != 0 || q.asOf:
				t.Fatalf("no version or at, yet %+v", q)
			}
		}
		for _, r := range []struct{ method, suffix string }{{http.MethodGet, "/events"}, {http.MethodPost, "/cancel"}} {
			c := httpapitest.Routed(e, request(r.method, r.suffix))
			if c.Path() != "/orders/:id"+r.suffix {
				httpapitest.WantProblem(t, e, request(r.method, r.suffix), nil)
				continue
			}
			got, err := httpapi.ParseUUID("id", c.Param("id"))
			if err != nil {
				httpapitest.WantProblem(t, e, request(r.method, r.suffix), err)
			} else if !strings.EqualFold(got.String(), c.Param("id")) {
				t.Fatalf("path id %q became %v", c.Param("id"), got)
			}
		}
	})
}
