package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/eventsaga/eventsaga/internal/auth"
	"github.com/eventsaga/eventsaga/internal/httpapi"
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
			open := false
			for _, p := range auth.Open {
				open = open || r.Path == p
			}
			for _, authz := range []string{"", "Bearer " + expired, "Bearer not.a.token", "Basic Zm9vOmJhcg=="} {
				status, body, h := rawSend(t, r.Method, v.url+path, `{}`, "Authorization", authz)
				if open {
					if status == http.StatusUnauthorized {
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
	if n := count(t, s.orderPool, "events") + count(t, s.customerPool, "events"); n != 0 {
		t.Fatalf("%d events written by refused requests", n)
	}

	admin, err := auth.Mint(testSecret, uuid.New(), true, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	bearer := "Bearer " + admin
	var reg struct {
		CustomerID uuid.UUID `json:"customer_id"`
	}
	mustCall(t, http.StatusCreated, &reg, http.MethodPost, s.customer.url+"/customers", `{"name": "Ada", "credit_limit": "100.00"}`, "Authorization", bearer)
	var placed orderView
	mustCall(t, http.StatusCreated, &placed, http.MethodPost, s.order.url+"/orders",
		`{"customer_id": "`+reg.CustomerID.String()+`", "items": [{"product_id": "apple", "quantity": 3, "unit_price": "10.00"}]}`, "Authorization", bearer)
	var view orderView
	mustCall(t, http.StatusOK, &view, http.MethodGet, s.projector.url+"/orders/"+placed.OrderID.String()+"?min_version=2", "", "Authorization", bearer)
	if view.Status != "APPROVED" {
		t.Fatalf("the order through the projector: %+v", view)
	}
}

// rawSend is send without the contract's validation: it also reaches the
// routes docs/openapi.yaml does not describe (the saga view's).
func rawSend(t *testing.T, method, url, body string, headers ...string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] != "" {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = io.Copy(&b, resp.Body)
	return resp.StatusCode, []byte(b.String()), resp.Header
}
