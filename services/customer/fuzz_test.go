package customer

// Fuzz targets of the REST API's request decoding. The handlers run on a
// Service without a database: a request the decoder refuses never reaches
// one, and one it accepts is checked at the decoder (decodeRegister,
// decodeCreditLimit, httpapi.ParseUUID) instead of being sent on.

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/eventsaga/eventsaga/internal/httpapi"
	"github.com/eventsaga/eventsaga/internal/httpapi/httpapitest"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/services/customer/domain"
)

// fuzzAPI is the service's routes on a Service with no database.
func fuzzAPI() *echo.Echo {
	return (&Service{log: slog.New(slog.DiscardHandler)}).routes()
}

// wantLimit checks an accepted credit limit: within 0 to MaxMoney, and
// written back as text it reads as itself.
func wantLimit(t *testing.T, limit events.Money) {
	t.Helper()
	if limit < 0 || limit > events.MaxMoney {
		t.Fatalf("accepted credit limit %d cents", int64(limit))
	}
	if back, err := httpapi.ParseMoney("credit_limit", limit.String()); err != nil || back != limit {
		t.Fatalf("credit limit %d renders as %q, which reads as %d, %v", int64(limit), limit, int64(back), err)
	}
}

// limitSeeds are credit limits, as JSON, accepted and refused.
var limitSeeds = []string{
	`"1000.00"`, `"0"`, `"0.00"`, `"-0"`, `"007.5"`, `"999999999999999.99"`, `"1000000000000000"`, `"-1.00"`, `"-0.01"`,
	`"1.005"`, `"1."`, `".5"`, `""`, `" 1"`, `"1e3"`, `"+1"`, `"NaN"`, `"Inf"`, `"-Inf"`, `"Infinity"`, `"１２"`, `"\u0031"`,
	`"9223372036854775808"`, `1000`, `1.5`, `null`, `true`, `["1"]`, `{"amount":"1"}`,
}

// FuzzRegisterCustomer checks POST /customers with any body. A refusal is a
// 4xx problem from the real route. An accepted request was one JSON object;
// its credit limit is within 0 to MaxMoney; name and limit written back as a
// canonical request decode to themselves; and the domain either registers
// the customer, with a name that is trimmed, non-empty, at most
// MaxNameLength characters and free of control characters, or refuses with
// a 422.
func FuzzRegisterCustomer(f *testing.F) {
	for _, limit := range limitSeeds {
		f.Add(`{"name":"Ada","credit_limit":` + limit + `}`)
	}
	for _, body := range []string{
		"", " ", "null", "[]", `"{}"`, "1", "{}", "{", `{"name":"Ada","credit_limit":"1.00"}{}`, `{"name":"Ada","credit_limit":"1.00"}}`,
		`{"name":"Ada","credit_limit":"1.00"}]`, ` {"name":"Ada","credit_limit":"1.00"} `, "\ufeff{}", `{"name":"Ada"}`, `{"credit_limit":"1.00"}`,
		`{"name":null,"credit_limit":"1.00"}`, `{"name":7,"credit_limit":"1.00"}`, `{"name":["Ada"],"credit_limit":"1.00"}`,
		`{"name":"","credit_limit":"1.00"}`, `{"name":"  \t ","credit_limit":"1.00"}`, `{"name":" Ada ","credit_limit":"1.00"}`,
		`{"name":"A\u0000da","credit_limit":"1.00"}`, `{"name":"A\nda","credit_limit":"1.00"}`, `{"name":"Ада Лавлейс 👩‍💻","credit_limit":"1.00"}`,
		"{\"name\":\"\xff\xfe\",\"credit_limit\":\"1.00\"}", `{"name":"\ud800","credit_limit":"1.00"}`,
		`{"name":"` + strings.Repeat("é", domain.MaxNameLength) + `","credit_limit":"1.00"}`,
		`{"name":"` + strings.Repeat("é", domain.MaxNameLength+1) + `","credit_limit":"1.00"}`,
		`{"":"","name":"Ada","credit_limit":"1.00"}`, `{"na\"me":"Ada","credit_limit":"1.00"}`, `{"NAME":"Ada","Credit_Limit":"1.00"}`, `{"name":"Ada","name":"Bob","credit_limit":"1.00"}`, `{"name":"Ada","credit_limit":"1.00","vip":true}`,
		`{"name":"Ada","credit_limit":"1.00","x":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
		`{"name":"` + strings.Repeat("x", httpapi.MaxBodyBytes) + `","credit_limit":"1.00"}`,
	} {
		f.Add(body)
	}
	e := fuzzAPI()
	f.Fuzz(func(t *testing.T, body string) {
		request := func(body string) *http.Request {
			req := httptest.NewRequest(http.MethodPost, "/customers", strings.NewReader(body))
			req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
			return req
		}
		name, limit, err := decodeRegister(httpapitest.Routed(e, request(body)))
		if err != nil {
			httpapitest.WantProblem(t, e, request(body), err)
			return
		}
		httpapitest.WantJSONObject(t, body)
		wantLimit(t, limit)
		jname, _ := json.Marshal(name)
		canon := fmt.Sprintf(`{"name":%s,"credit_limit":"%s"}`, jname, limit)
		if n, l, err := decodeRegister(httpapitest.Routed(e, request(canon))); err != nil || n != name || l != limit {
			t.Fatalf("%q decoded as %q, %v; written back as %s it decodes as %q, %v, %v", body, name, limit, canon, n, l, err)
		}

		evs, err := domain.Register(uuid.New(), name, limit)
		if err != nil {
			var p *httpapi.Problem
			if !errors.As(problem(err), &p) || p.Status != http.StatusUnprocessableEntity {
				t.Fatalf("the domain refused %q, %v with %v, which answers %v", name, limit, err, problem(err))
			}
			return
		}
		got := evs[0].(customers.CustomerRegistered)
		if got.Name != strings.TrimSpace(got.Name) || got.Name == "" || utf8.RuneCountInString(got.Name) > domain.MaxNameLength ||
			strings.ContainsFunc(got.Name, unicode.IsControl) || got.CreditLimit != limit {
			t.Fatalf("%q, %v registered as %+v", name, limit, got)
		}
	})
}

// FuzzCustomerPaths checks PUT /customers/{id}/credit-limit with any ID and
// body, and the ID of GET /customers/{id} and GET /customers/{id}/events. A
// refusal is a 4xx problem from the real route. An accepted ID is the UUID
// in the path; an accepted body was one JSON object with a credit limit
// within 0 to MaxMoney, and the limit written back as a canonical request
// decodes to itself.
func FuzzCustomerPaths(f *testing.F) {
	id := "0190f5a0-0000-7000-8000-0000000000c1"
	for _, limit := range limitSeeds {
		f.Add(id, `{"credit_limit":`+limit+`}`)
	}
	for _, c := range []struct{ id, body string }{
		{strings.ToUpper(id), `{"credit_limit":"5.00"}`}, {"", `{"credit_limit":"5.00"}`}, {"nope", `{"credit_limit":"5.00"}`},
		{id + "0", `{}`}, {"{" + id + "}", `{}`}, {"urn:uuid:" + id, `{}`}, {"00000000-0000-0000-0000-000000000000", `{"credit_limit":"5.00"}`},
		{"0190f5a0-0000-7000-8000-0000000000cg", `{}`}, {id + "/x", `{}`}, {"../" + id, `{}`}, {"ü", `{}`},
		{id, ""}, {id, "null"}, {id, "[]"}, {id, "{}"}, {id, `{"credit_limit":null}`}, {id, `{"credit_limit":"5.00"}}`},
		{id, `{"credit_limit":"5.00","credit_limit":"-5.00"}`}, {id, `{"Credit_Limit":"5.00"}`}, {id, `{"credit_limit":"5.00","name":"Ada"}`},
		{id, `{"credit_limit":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`},
	} {
		f.Add(c.id, c.body)
	}
	e := fuzzAPI()
	f.Fuzz(func(t *testing.T, id, body string) {
		request := func(method, suffix, body string) *http.Request {
			req := httptest.NewRequest(method, "/customers/"+url.PathEscape(id)+suffix, strings.NewReader(body))
			req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
			return req
		}
		put := func(body string) *http.Request { return request(http.MethodPut, "/credit-limit", body) }
		c := httpapitest.Routed(e, put(body))
		if c.Path() != "/customers/:id/credit-limit" {
			httpapitest.WantProblem(t, e, put(body), nil)
		} else if cid, limit, err := decodeCreditLimit(c); err != nil {
			httpapitest.WantProblem(t, e, put(body), err)
		} else {
			if !strings.EqualFold(cid.String(), c.Param("id")) {
				t.Fatalf("path id %q became %v", c.Param("id"), cid)
			}
			httpapitest.WantJSONObject(t, body)
			wantLimit(t, limit)
			canon := fmt.Sprintf(`{"credit_limit":"%s"}`, limit)
			if cid2, l, err := decodeCreditLimit(httpapitest.Routed(e, put(canon))); err != nil || cid2 != cid || l != limit {
				t.Fatalf("%q decoded as %v; written back as %s it decodes as %v, %v", body, limit, canon, l, err)
			}
		}
		for _, suffix := range []string{"", "/events"} {
			c := httpapitest.Routed(e, request(http.MethodGet, suffix, ""))
			if c.Path() != "/customers/:id"+suffix {
				httpapitest.WantProblem(t, e, request(http.MethodGet, suffix, ""), nil)
				continue
			}
			if got, err := httpapi.ParseUUID("id", c.Param("id")); err != nil {
				httpapitest.WantProblem(t, e, request(http.MethodGet, suffix, ""), err)
			} else if !strings.EqualFold(got.String(), c.Param("id")) {
				t.Fatalf("path id %q became %v", c.Param("id"), got)
			}
		}
	})
}
