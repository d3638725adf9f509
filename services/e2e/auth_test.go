package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/eventsaga/eventsaga/internal/auth"
	"github.com/eventsaga/eventsaga/internal/httpapi"
	"github.com/eventsaga/eventsaga/internal/testenv"
)

const testSecret = "e2e-secret-0123456789abcdef0123456789"

// With AUTH_HS256_SECRET set, every route of every service but the
// health, readiness and metrics ones answers a request without a valid
// token with a 401 problem and a Bearer challenge, and nothing is written;
// with a minted token the saga runs as before.
func TestEveryRouteNeedsATokenWhenAuthIsOn(t *testing.T) {
	s := startSystem(t, func(s *system) { s.auth = auth.Config{HS256Secret: testSecret} })
	expired := func() string {
		tok, err := auth.Mint(testSecret, uuid.New(), true, -time.Hour, "", "")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}()
	type svc struct {
		name, url string
		h         http.Handler
	}
	// What anyone may fetch besides auth.Open: the saga view's sign-in page
	// and its style sheet and script. A route that joins them by mistake
	// fails here.
	public := map[string]bool{"projector GET /ui/login": true, "projector POST /ui/login": true, "projector GET /ui/static/:name": true}
	routes := 0
	for _, v := range []svc{
		{"order", s.order.url, s.order.svc.Handler()},
		{"customer", s.customer.url, s.customer.svc.Handler()},
		{"projector", s.projector.url, s.projector.svc.Handler()},
	} {
		e, ok := v.h.(*echo.Echo)
		if !ok {
			t.Fatalf("%s: the handler is a %T, not an echo", v.name, v.h)
		}
		for _, r := range e.Routes() {
			if strings.HasPrefix(r.Name, "github.com/labstack/echo") || r.Method == echo.RouteNotFound {
				continue // echo's own (not-found and method-not-allowed) handlers
			}
			path := strings.ReplaceAll(r.Path, ":id", uuid.New().String())
			path = strings.ReplaceAll(path, "*", "")
			open := public[v.name+" "+r.Method+" "+r.Path]
			for _, p := range auth.Open {
				open = open || r.Path == p
			}
			for _, authz := range []string{"", "Bearer " + expired, "Bearer not.a.token", "Basic Zm9vOmJhcg=="} {
				status, body, h := rawSend(t, r.Method, v.url+path, `{}`, "Authorization", authz)
				if open {
					// The middleware's refusal is a problem; the sign-in
					// form's own answer to a bad token is its page.
					if status == http.StatusUnauthorized && strings.HasPrefix(h.Get("Content-Type"), "application/problem+json") {
						t.Errorf("%s %s %s needs a token", v.name, r.Method, r.Path)
					}
					continue
				}
				var p httpapi.Problem
				if status != http.StatusUnauthorized || json.Unmarshal(body, &p) != nil || p.Type != "urn:eventsaga:problem:unauthorized" ||
					!strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer ") {
					t.Errorf("%s %s %s with %.20q: %d %s (WWW-Authenticate %q)", v.name, r.Method, r.Path, authz, status, body, h.Get("WWW-Authenticate"))
				}
			}
			routes++
		}
	}
	if routes < 15 {
		t.Fatalf("checked %d routes; the services have more", routes)
	}
	// The saga view's live feed is served before routing (it must outlive
	// the request deadline), so it is no route of echo's: by its path.
	customer, err := auth.Mint(testSecret, uuid.New(), false, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for authz, want := range map[string]int{
		"": http.StatusUnauthorized, "Bearer " + expired: http.StatusUnauthorized, "Bearer not.a.token": http.StatusUnauthorized,
		"Bearer " + customer: http.StatusForbidden,
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		status, body, _ := exchange(ctx, t, &http.Client{}, http.MethodGet, s.projector.url+"/ui/events", "", "Authorization", authz)
		cancel()
		if status != want {
			t.Errorf("GET /ui/events with %.20q: %d %.200s; want %d", authz, status, body, want)
		}
	}
	if n := count(t, s.orderPool, "events") + count(t, s.customerPool, "events"); n != 0 {
		t.Fatalf("%d events written by refused requests", n)
	}

	admin, err := auth.Mint(testSecret, uuid.New(), true, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	approvedAs(t, s, "Bearer "+admin)
}

// approvedAs registers a customer and places an order for it with bearer
// (an admin's), and returns the order once the projector shows it
// approved: the saga, through all three services, with auth on.
func approvedAs(t *testing.T, s *system, bearer string) uuid.UUID {
	t.Helper()
	var reg struct {
		CustomerID uuid.UUID `json:"customer_id"`
	}
	mustCall(t, http.StatusCreated, &reg, http.MethodPost, s.customer.url+"/customers", `{"name": "Ada", "credit_limit": "100.00"}`, "Authorization", bearer)
	var placed orderView
	mustCall(t, http.StatusCreated, &placed, http.MethodPost, s.order.url+"/orders",
		`{"customer_id": "`+reg.CustomerID.String()+`", "items": [{"product_id": "apple", "quantity": 3, "unit_price": "10.00"}]}`, "Authorization", bearer)
	if view := awaitDecided(t, s, placed.OrderID, bearer); view.Status != "APPROVED" {
		t.Fatalf("the order through the projector: %+v", view)
	}
	return placed.OrderID
}

// awaitDecided waits up to 20 s for the projector to show order o decided
// (version 2), asking as bearer. The first saga after the services start
// waits for their consumer groups to form: on a real broker under load
// that can take longer than one read-your-writes wait (3 s).
func awaitDecided(t *testing.T, s *system, o uuid.UUID, bearer string) orderView {
	t.Helper()
	var v orderView
	testenv.WaitFor(t, 20*time.Second, "order "+o.String()+" decided in the read model", func() bool {
		status, body, _ := rawSend(t, http.MethodGet, s.projector.url+"/orders/"+o.String(), "", "Authorization", bearer)
		return status == http.StatusOK && json.Unmarshal(body, &v) == nil && v.Version >= 2
	})
	return v
}

// rawSend is send without the contract's validation: it also reaches the
// routes docs/openapi.yaml does not describe (the saga view's).
func rawSend(t *testing.T, method, url, body string, headers ...string) (int, []byte, http.Header) {
	t.Helper()
	return exchange(context.Background(), t, http.DefaultClient, method, url, body, headers...)
}

// Who may do what, across the three services: an admin everything; a
// customer its own orders and record, nothing of another customer's and
// nothing of the back office's. Every refusal is a 403 problem and writes
// nothing.
func TestWhoMayDoWhat(t *testing.T) {
	s := startSystem(t, func(s *system) { s.auth = auth.Config{HS256Secret: testSecret} })
	token := func(sub uuid.UUID, admin bool) string {
		tok, err := auth.Mint(testSecret, sub, admin, time.Hour, "", "")
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + tok
	}
	admin := token(uuid.New(), true)
	register := func(name string) uuid.UUID {
		var reg struct {
			CustomerID uuid.UUID `json:"customer_id"`
		}
		mustCall(t, http.StatusCreated, &reg, http.MethodPost, s.customer.url+"/customers", `{"name": "`+name+`", "credit_limit": "1000.00"}`, "Authorization", admin)
		return reg.CustomerID
	}
	a, b := register("A"), register("B")
	asA, asB := token(a, false), token(b, false)
	orderBody := func(c uuid.UUID) string {
		return `{"customer_id": "` + c.String() + `", "items": [{"product_id": "apple", "quantity": 1, "unit_price": "10.00"}]}`
	}
	place := func(as string, c uuid.UUID) uuid.UUID {
		var o orderView
		mustCall(t, http.StatusCreated, &o, http.MethodPost, s.order.url+"/orders", orderBody(c), "Authorization", as)
		return o.OrderID
	}
	oa, ob := place(asA, a), place(asB, b)
	awaitDecided(t, s, oa, admin)
	awaitDecided(t, s, ob, admin)

	// Each row: a request on A's resources (or the back office's), and
	// what an admin, A and B get.
	type who struct{ admin, owner, other int }
	const ok, created, no = http.StatusOK, http.StatusCreated, http.StatusForbidden
	rows := []struct {
		method, url, body string
		want              who
	}{
		{http.MethodPost, s.order.url + "/orders", orderBody(a), who{created, created, no}},
		{http.MethodGet, s.order.url + "/orders/" + oa.String(), "", who{ok, ok, no}},
		{http.MethodGet, s.order.url + "/orders/" + oa.String() + "?version=1", "", who{ok, ok, no}},
		{http.MethodGet, s.order.url + "/orders/" + oa.String() + "/events", "", who{ok, ok, no}},
		{http.MethodPost, s.customer.url + "/customers", `{"name": "C", "credit_limit": "1.00"}`, who{created, no, no}},
		{http.MethodGet, s.customer.url + "/customers/" + a.String(), "", who{ok, ok, no}},
		{http.MethodPut, s.customer.url + "/customers/" + a.String() + "/credit-limit", `{"credit_limit": "2000.00"}`, who{ok, no, no}},
		{http.MethodGet, s.customer.url + "/customers/" + a.String() + "/events", "", who{ok, ok, no}},
		{http.MethodGet, s.projector.url + "/orders/" + oa.String(), "", who{ok, ok, no}},
		{http.MethodGet, s.projector.url + "/orders?customer_id=" + a.String(), "", who{ok, ok, no}},
		{http.MethodGet, s.projector.url + "/customers/" + a.String(), "", who{ok, ok, no}},
		{http.MethodGet, s.projector.url + "/sagas/stuck", "", who{ok, no, no}},
		{http.MethodGet, s.projector.url + "/status", "", who{ok, no, no}},
		{http.MethodGet, s.projector.url + "/ui", "", who{ok, no, no}},
	}
	// The events a request itself appends (the sagas of the orders placed
	// above append others meanwhile).
	events := func() int {
		var n, m int
		const q = `SELECT count(*) FROM events WHERE event_type IN ('OrderCreated', 'OrderCancelled', 'CustomerRegistered', 'CreditLimitChanged')`
		if err := s.orderPool.QueryRow(context.Background(), q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if err := s.customerPool.QueryRow(context.Background(), q).Scan(&m); err != nil {
			t.Fatal(err)
		}
		return n + m
	}
	for _, r := range rows {
		for _, as := range []struct {
			name, authz string
			want        int
		}{{"admin", admin, r.want.admin}, {"owner", asA, r.want.owner}, {"other", asB, r.want.other}} {
			before := events()
			do := send // validated against docs/openapi.yaml, which has no saga view
			if strings.Contains(r.url, "/ui") {
				do = rawSend
			}
			status, body, _ := do(t, r.method, r.url, r.body, "Authorization", as.authz)
			if status != as.want {
				t.Errorf("%s %s as %s: %d %s, want %d", r.method, r.url, as.name, status, body, as.want)
				continue
			}
			if status == no {
				var p httpapi.Problem
				if json.Unmarshal(body, &p) != nil || p.Type != "urn:eventsaga:problem:forbidden" {
					t.Errorf("%s %s as %s: a 403 without its problem: %s", r.method, r.url, as.name, body)
				}
				if n := events(); n != before {
					t.Errorf("%s %s as %s: refused, yet %d events were written", r.method, r.url, as.name, n-before)
				}
			}
		}
	}

	// The list shows a customer its own orders only.
	var page struct {
		Orders []orderView `json:"orders"`
	}
	mustCall(t, http.StatusOK, &page, http.MethodGet, s.projector.url+"/orders", "", "Authorization", asB)
	for _, o := range page.Orders {
		if o.CustomerID != b {
			t.Errorf("B's list holds an order of %s", o.CustomerID)
		}
	}
	if len(page.Orders) == 0 {
		t.Error("B's list is empty; it placed an order")
	}
	mustCall(t, http.StatusOK, &page, http.MethodGet, s.projector.url+"/orders", "", "Authorization", admin)
	seen := map[uuid.UUID]bool{}
	for _, o := range page.Orders {
		seen[o.CustomerID] = true
	}
	if !seen[a] || !seen[b] {
		t.Errorf("the admin's list: customers %v, want A's and B's orders", seen)
	}

	// Cancelling: B may not cancel A's order; A may; an admin may cancel B's.
	if status, body, _ := rawSend(t, http.MethodPost, s.order.url+"/orders/"+oa.String()+"/cancel", "", "Authorization", asB); status != no {
		t.Errorf("B cancelled A's order: %d %s", status, body)
	}
	mustCall(t, http.StatusOK, nil, http.MethodPost, s.order.url+"/orders/"+oa.String()+"/cancel", "", "Authorization", asA)
	mustCall(t, http.StatusOK, nil, http.MethodPost, s.order.url+"/orders/"+ob.String()+"/cancel", "", "Authorization", admin)
}

// A caller over WRITE_RATE_LIMIT gets a 429 problem with Retry-After, and
// its write is not done; reads go on.
func TestWritesOverTheRateLimitAre429(t *testing.T) {
	s := startSystem(t, func(s *system) { s.auth = auth.Config{Limits: auth.Limits{WriteRate: 0.5, WriteBurst: 2}} })
	register := func() (int, []byte, http.Header) {
		return send(t, http.MethodPost, s.customer.url+"/customers", `{"name": "Ada", "credit_limit": "10.00"}`)
	}
	for i := range 2 {
		if status, body, _ := register(); status != http.StatusCreated {
			t.Fatalf("write %d: %d %s", i+1, status, body)
		}
	}
	status, body, h := register()
	var p httpapi.Problem
	if status != http.StatusTooManyRequests || json.Unmarshal(body, &p) != nil || p.Type != "urn:eventsaga:problem:too-many-requests" || h.Get("Retry-After") == "" {
		t.Fatalf("the third write at once: %d %s (Retry-After %q)", status, body, h.Get("Retry-After"))
	}
	if n := count(t, s.customerPool, "events"); n != 2 {
		t.Errorf("%d customer events, want the 2 registrations", n)
	}
	if status, _ := call(t, http.MethodGet, s.customer.url+"/customers/"+uuid.New().String(), ""); status != http.StatusNotFound {
		t.Errorf("a read over the write rate: %d, want 404", status)
	}
}

// With authentication on, the saga view is an admin's from a browser too:
// a page without a token sends the browser to sign in; the sign-in takes an
// admin's token only and keeps it in a cookie that the view's pages and its
// live feed take, and nothing else does.
func TestSagaViewSignIn(t *testing.T) {
	s := startSystem(t, func(s *system) { s.auth = auth.Config{HS256Secret: testSecret} })
	admin, err := auth.Mint(testSecret, uuid.New(), true, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	customer, err := auth.Mint(testSecret, uuid.New(), false, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	browser := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path, form string, cookie *http.Cookie) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, s.projector.url+path, strings.NewReader(form))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "text/html,application/xhtml+xml")
		if form != "" {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := browser.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	if resp, _ := do(http.MethodGet, "/ui", "", nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login?then=%2Fui" {
		t.Fatalf("GET /ui without a token: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, body := do(http.MethodGet, "/ui/login?then=%2Fui", "", nil); resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="token"`) {
		t.Fatalf("GET /ui/login: %d %.300s", resp.StatusCode, body)
	}
	for token, want := range map[string]int{"": http.StatusUnauthorized, "not.a.token": http.StatusUnauthorized, customer: http.StatusForbidden} {
		resp, body := do(http.MethodPost, "/ui/login", url.Values{"token": {token}, "then": {"/ui"}}.Encode(), nil)
		if resp.StatusCode != want || len(resp.Cookies()) != 0 || !strings.Contains(body, `class="error"`) {
			t.Errorf("sign in with %.12q: %d, cookies %v", token, resp.StatusCode, resp.Cookies())
		}
	}
	// Somewhere else than the view is never where a sign-in leads.
	if resp, _ := do(http.MethodPost, "/ui/login", url.Values{"token": {admin}, "then": {"//evil.example/ui"}}.Encode(), nil); resp.Header.Get("Location") != "/ui" {
		t.Errorf("then=//evil.example/ui: to %q", resp.Header.Get("Location"))
	}

	o := approvedAs(t, s, "Bearer "+admin)
	resp, _ := do(http.MethodPost, "/ui/login", url.Values{"token": {admin}, "then": {"/ui/orders/" + o.String()}}.Encode(), nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/orders/"+o.String() || len(resp.Cookies()) != 1 {
		t.Fatalf("sign in as an admin: %d to %q, cookies %v", resp.StatusCode, resp.Header.Get("Location"), resp.Cookies())
	}
	cookie := resp.Cookies()[0]
	if !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/ui" {
		t.Errorf("cookie %+v", cookie)
	}
	if resp, body := do(http.MethodGet, "/ui/orders/"+o.String(), "", cookie); resp.StatusCode != http.StatusOK || !strings.Contains(body, o.String()) {
		t.Errorf("the order's page with the cookie: %d %.300s", resp.StatusCode, body)
	}
	// The live feed takes it too (its headers are enough: it streams).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.projector.url+"/ui/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(cookie)
	feed, err := browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	feed.Body.Close()
	if feed.StatusCode != http.StatusOK || !strings.HasPrefix(feed.Header.Get("Content-Type"), "text/event-stream") {
		t.Errorf("the feed with the cookie: %d %s", feed.StatusCode, feed.Header.Get("Content-Type"))
	}
	// The API is not the view: the cookie opens none of it.
	if resp, _ := do(http.MethodGet, "/orders/"+o.String(), "", cookie); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /orders/{id} with the view's cookie only: %d", resp.StatusCode)
	}
}
