package projector

// Fuzz targets of the query API's path and query parameters. The handlers
// run on a Service without a database: a request the decoder refuses never
// reaches one, and one it accepts is checked at the decoder
// (parseOrderQuery, parseListQuery, parseStuckQuery, httpapi.ParseUUID)
// instead of being sent on.

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/eventsaga/eventsaga/internal/httpapi"
	"github.com/eventsaga/eventsaga/internal/httpapi/httpapitest"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
)

// fuzzAPI is the service's routes on a Service with no database.
func fuzzAPI() *echo.Echo {
	return (&Service{log: slog.New(slog.DiscardHandler)}).routes()
}

// get is a GET of path (escaped already) with rawQuery as it came, however
// malformed.
func get(path, rawQuery string) *http.Request {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.URL.RawQuery = rawQuery
	return req
}

// wantUUIDParam checks an ID the decoder accepted from query parameter
// name: Nil when the parameter is absent, else the UUID it spells.
func wantUUIDParam(t *testing.T, c echo.Context, name string, got uuid.UUID) {
	t.Helper()
	q := c.QueryParam(name)
	if (q == "" && got != uuid.Nil) || (q != "" && !strings.EqualFold(got.String(), q)) {
		t.Fatalf("%s=%q became %v", name, q, got)
	}
}

// wantLimit checks an accepted page size: DefaultPageSize when limit is
// absent, else the number it spells, within 1 to MaxPageSize.
func wantLimit(t *testing.T, c echo.Context, got int) {
	t.Helper()
	q := c.QueryParam("limit")
	n, err := strconv.Atoi(q)
	if got < 1 || got > MaxPageSize || (q == "" && got != DefaultPageSize) || (q != "" && (err != nil || n != got)) {
		t.Fatalf("limit=%q became %d", q, got)
	}
}

const sampleID = "0190f5a0-0000-7000-8000-000000000001"

// idSeeds are order and customer IDs, accepted and refused.
var idSeeds = []string{
	sampleID, strings.ToUpper(sampleID), "", "nope", sampleID + "0", "{" + sampleID + "}", "urn:uuid:" + sampleID, "00000000-0000-0000-0000-000000000000",
	"0190f5a000007000800000000000000001", "0190f5a0-0000-7000-8000-00000000000g", "0190f5a0+0000-7000-8000-000000000001",
	"../" + sampleID, sampleID + "/x", "ü", "\x00", strings.Repeat("a", 5000),
}

// FuzzProjectorPaths checks GET /orders/{id} with any ID and query (its
// min_version), and GET /customers/{id} with any ID. A refusal is a 4xx
// problem from the real route. An accepted ID is the UUID in the path; an
// accepted min_version is 0 when absent, else the whole number of at least
// 1 it spells.
func FuzzProjectorPaths(f *testing.F) {
	for _, s := range idSeeds {
		f.Add(s, "")
	}
	for _, q := range []string{
		"min_version=1", "min_version=9223372036854775807", "min_version=9223372036854775808", "min_version=0", "min_version=-1",
		"min_version=+1", "min_version=1.0", "min_version=1e3", "min_version=0x10", "min_version=NaN", "min_version=%EF%BC%91",
		"min_version=", "min_version", "min_version=x&min_version=1", "min_version=1&min_version=x", "min_version=%zz", "min_version=1;x",
		"MIN_VERSION=x", "&&=&", "min_version=%00",
	} {
		f.Add(sampleID, q)
	}
	e := fuzzAPI()
	f.Fuzz(func(t *testing.T, oid, query string) {
		path := "/orders/" + url.PathEscape(oid)
		c := httpapitest.Routed(e, get(path, query))
		if c.Path() != "/orders/:id" {
			httpapitest.WantProblem(t, e, get(path, query), nil)
		} else if got, min, err := parseOrderQuery(c); err != nil {
			httpapitest.WantProblem(t, e, get(path, query), err)
		} else {
			if !strings.EqualFold(got.String(), c.Param("id")) {
				t.Fatalf("path id %q became %v", c.Param("id"), got)
			}
			q := c.QueryParam("min_version")
			n, err := strconv.ParseInt(q, 10, 64)
			if (q == "" && min != 0) || (q != "" && (err != nil || n != min || min < 1)) {
				t.Fatalf("min_version=%q became %d", q, min)
			}
		}

		path = "/customers/" + url.PathEscape(oid)
		c = httpapitest.Routed(e, get(path, query))
		if c.Path() != "/customers/:id" {
			httpapitest.WantProblem(t, e, get(path, query), nil)
		} else if got, err := httpapi.ParseUUID("id", c.Param("id")); err != nil {
			httpapitest.WantProblem(t, e, get(path, query), err)
		} else if !strings.EqualFold(got.String(), c.Param("id")) {
			t.Fatalf("path id %q became %v", c.Param("id"), got)
		}
	})
}

// FuzzListOrders checks GET /orders with any query. A refusal is a 4xx
// problem from the real route. An accepted filter has the customer_id and
// after UUIDs the query spells (Nil when absent), a status that is empty or
// one of the four, and a page size within 1 to MaxPageSize (the default when
// absent); written back as a canonical query it parses to itself.
func FuzzListOrders(f *testing.F) {
	for _, q := range []string{
		"", "customer_id=" + sampleID, "customer_id=" + strings.ToUpper(sampleID), "customer_id=nope", "customer_id=", "customer_id={" + sampleID + "}",
		"after=" + sampleID, "after=x", "after=00000000-0000-0000-0000-000000000000", "status=PENDING", "status=APPROVED", "status=REJECTED",
		"status=CANCELLED", "status=pending", "status=DONE", "status=PENDING%00", "status=PEND%C4%B0NG", "status=PENDING&status=x",
		"status=x&status=PENDING", "limit=1", "limit=500", "limit=0", "limit=501", "limit=-1", "limit=+5", "limit=05", "limit=1.5",
		"limit=1e2", "limit=9223372036854775808", "limit=99999999999999999999", "limit=%EF%BC%95", "limit=", "limit=%zz",
		"customer_id=" + sampleID + "&after=" + sampleID + "&status=APPROVED&limit=10", "customer_id=" + sampleID + ";limit=10", "&&=&", "%", "a=%zz&limit=0",
	} {
		f.Add(q)
	}
	e := fuzzAPI()
	f.Fuzz(func(t *testing.T, query string) {
		c := httpapitest.Routed(e, get("/orders", query))
		filter, err := parseListQuery(c)
		if err != nil {
			httpapitest.WantProblem(t, e, get("/orders", query), err)
			return
		}
		wantUUIDParam(t, c, "customer_id", filter.CustomerID)
		wantUUIDParam(t, c, "after", filter.After)
		wantLimit(t, c, filter.Limit)
		switch filter.Status {
		case "", orders.StatusPending, orders.StatusApproved, orders.StatusRejected, orders.StatusCancelled:
		default:
			t.Fatalf("status=%q became %q", c.QueryParam("status"), filter.Status)
		}
		canon := url.Values{"limit": {strconv.Itoa(filter.Limit)}}
		if filter.CustomerID != uuid.Nil {
			canon.Set("customer_id", filter.CustomerID.String())
		}
		if filter.After != uuid.Nil {
			canon.Set("after", filter.After.String())
		}
		if filter.Status != "" {
			canon.Set("status", filter.Status)
		}
		if again, err := parseListQuery(httpapitest.Routed(e, get("/orders", canon.Encode()))); err != nil || again != filter {
			t.Fatalf("%q parsed as %+v; written back as %q it parses as %+v, %v", query, filter, canon.Encode(), again, err)
		}
	})
}

// FuzzStuckSagas checks GET /sagas/stuck with any query. A refusal is a 4xx
// problem from the real route. An accepted older_than is a duration of 0 or
// more that the query spells (DefaultStuckAfter when absent); after and
// limit are as in FuzzListOrders, and nothing else is filtered on; written
// back as a canonical query the parameters parse to themselves.
func FuzzStuckSagas(f *testing.F) {
	for _, q := range []string{
		"", "older_than=10s", "older_than=0", "older_than=0s", "older_than=-1s", "older_than=1h2m3.5s", "older_than=1.5h", "older_than=10",
		"older_than=1d", "older_than=2562047h47m16.854775807s", "older_than=2562047h47m16.854775808s", "older_than=9223372036854775807ns",
		"older_than=-0", "older_than=+5s", "older_than=1µs", "older_than=1us", "older_than=NaNs", "older_than=Infs", "older_than=.5s",
		"older_than=5.s", "older_than=", "older_than=%zz", "older_than=1s&older_than=x", "older_than=x&older_than=1s",
		"after=" + sampleID, "after=nope", "limit=500", "limit=501", "limit=0", "limit=-5", "status=PENDING&customer_id=nope",
		"older_than=1m&after=" + sampleID + "&limit=20", "older_than=1m;limit=20", "&&=&",
	} {
		f.Add(q)
	}
	e := fuzzAPI()
	f.Fuzz(func(t *testing.T, query string) {
		c := httpapitest.Routed(e, get("/sagas/stuck", query))
		olderThan, filter, err := parseStuckQuery(c)
		if err != nil {
			httpapitest.WantProblem(t, e, get("/sagas/stuck", query), err)
			return
		}
		q := c.QueryParam("older_than")
		d, err := time.ParseDuration(q)
		if olderThan < 0 || (q == "" && olderThan != DefaultStuckAfter) || (q != "" && (err != nil || d != olderThan)) {
			t.Fatalf("older_than=%q became %v", q, olderThan)
		}
		wantUUIDParam(t, c, "after", filter.After)
		wantLimit(t, c, filter.Limit)
		if filter.CustomerID != uuid.Nil || filter.Status != "" {
			t.Fatalf("%q filters on %+v", query, filter)
		}
		canon := url.Values{"older_than": {olderThan.String()}, "limit": {strconv.Itoa(filter.Limit)}}
		if filter.After != uuid.Nil {
			canon.Set("after", filter.After.String())
		}
		if d, again, err := parseStuckQuery(httpapitest.Routed(e, get("/sagas/stuck", canon.Encode()))); err != nil || d != olderThan || again != filter {
			t.Fatalf("%q parsed as %v, %+v; written back as %q it parses as %v, %+v, %v", query, olderThan, filter, canon.Encode(), d, again, err)
		}
	})
}
