package auth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/eventsaga/eventsaga/internal/httpapi"
)

// A caller over its write rate gets 429 problems with Retry-After and the
// handler never runs for them; reads are not limited; another caller (a
// token's sub, or an address on the open API) has a bucket of its own.
func TestLimitHoldsEachCallerToItsWriteRate(t *testing.T) {
	v := hsVerifier(t, Config{})
	e := httpapi.New(quiet, nil)
	e.Use(Require(v, Rules{"POST /orders": AnyCaller, "GET /orders": AnyCaller}), Limit(Limits{WriteRate: 1, WriteBurst: 3}))
	handled := 0
	e.POST("/orders", func(c echo.Context) error { handled++; return c.NoContent(http.StatusCreated) })
	e.GET("/orders", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	token := func() string {
		tok, err := Mint(secret, uuid.New(), false, time.Minute, "", "")
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + tok
	}
	a, b := token(), token()
	do := func(method, authz string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "/orders", nil)
		req.Header.Set("Authorization", authz)
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec
	}
	for i := range 3 {
		if rec := do(http.MethodPost, a); rec.Code != http.StatusCreated {
			t.Fatalf("write %d within the burst: %d", i+1, rec.Code)
		}
	}
	rec := do(http.MethodPost, a)
	var p httpapi.Problem
	if rec.Code != http.StatusTooManyRequests || json.Unmarshal(rec.Body.Bytes(), &p) != nil || p.Type != "urn:eventsaga:problem:too-many-requests" {
		t.Fatalf("the fourth write: %d %s", rec.Code, rec.Body)
	}
	if s, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil || s < 1 || s > 1 {
		t.Errorf("Retry-After %q, want 1 (s)", rec.Header().Get("Retry-After"))
	}
	if handled != 3 {
		t.Errorf("the handler ran %d times, want 3", handled)
	}
	if rec := do(http.MethodGet, a); rec.Code != http.StatusOK {
		t.Errorf("a read over the write rate: %d", rec.Code)
	}
	if rec := do(http.MethodPost, b); rec.Code != http.StatusCreated {
		t.Errorf("another caller's write: %d", rec.Code)
	}

	// On the open API the caller is the connection's address; a forwarded
	// header does not make a new caller.
	open := httpapi.New(quiet, nil)
	open.Use(Require(nil, nil), Limit(Limits{WriteRate: 1, WriteBurst: 1}))
	open.POST("/orders", func(c echo.Context) error { return c.NoContent(http.StatusCreated) })
	send := func(addr, forwarded string) int {
		req := httptest.NewRequest(http.MethodPost, "/orders", nil)
		req.RemoteAddr = addr
		if forwarded != "" {
			req.Header.Set("X-Forwarded-For", forwarded)
		}
		rec := httptest.NewRecorder()
		open.ServeHTTP(rec, req)
		return rec.Code
	}
	if c := send("10.0.0.1:1111", ""); c != http.StatusCreated {
		t.Fatalf("first write: %d", c)
	}
	if c := send("10.0.0.1:2222", "10.9.9.9"); c != http.StatusTooManyRequests {
		t.Errorf("same address, another port and a made-up X-Forwarded-For: %d", c)
	}
	if c := send("10.0.0.2:1111", ""); c != http.StatusCreated {
		t.Errorf("another address: %d", c)
	}
}

// The buckets refill at the rate, and those full again are forgotten.
func TestLimitersRefillAndForget(t *testing.T) {
	ls := &limiters{rate: rate.Limit(2), burst: 2, byKey: map[string]*limiter{}}
	t0 := time.Now()
	for i := range 2 {
		if d := ls.take("a", t0); d != 0 {
			t.Fatalf("take %d: wait %v", i, d)
		}
	}
	if d := ls.take("a", t0); d <= 0 || d > 500*time.Millisecond {
		t.Fatalf("empty bucket: wait %v, want (0, 500ms]", d)
	}
	if d := ls.take("a", t0.Add(500*time.Millisecond)); d != 0 {
		t.Fatalf("after 500 ms at 2/s: wait %v", d)
	}
	ls.take("b", t0.Add(600*time.Millisecond))
	ls.take("c", t0.Add(5*time.Second)) // a, b idle for longer than a refill: swept
	if _, ok := ls.byKey["a"]; ok || len(ls.byKey) != 1 {
		t.Errorf("after the sweep: %d buckets, a kept: %v", len(ls.byKey), ok)
	}
}

func TestLoadLimits(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	for _, tc := range []struct {
		env  map[string]string
		want Limits
		bad  bool
	}{
		{nil, Limits{WriteRate: DefaultWriteRate}, false},
		{map[string]string{"WRITE_RATE_LIMIT": "off"}, Limits{}, false},
		{map[string]string{"WRITE_RATE_LIMIT": "0"}, Limits{}, false},
		{map[string]string{"WRITE_RATE_LIMIT": "2.5", "WRITE_RATE_BURST": "10"}, Limits{WriteRate: 2.5, WriteBurst: 10}, false},
		{map[string]string{"WRITE_RATE_LIMIT": "-1"}, Limits{}, true},
		{map[string]string{"WRITE_RATE_LIMIT": "lots"}, Limits{}, true},
		{map[string]string{"WRITE_RATE_BURST": "0"}, Limits{}, true},
	} {
		got, err := LoadLimits(env(tc.env))
		if (err != nil) != tc.bad || (!tc.bad && got != tc.want) {
			t.Errorf("%v: %+v, %v", tc.env, got, err)
		}
	}
}
