package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Requests are counted by route template, method and the status they got,
// whoever set it (a handler, the error handler, a middleware, the router);
// a path that matches no route is "unmatched", not itself; GET /metrics
// serves the registry.
func TestInstrumentCountsByRouteAndStatus(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	e := New(log, nil)
	e.GET("/things/:id", func(c echo.Context) error {
		if c.Param("id") == "missing" {
			return NotFound("no such thing")
		}
		return c.JSON(http.StatusOK, map[string]string{"id": c.Param("id")})
	})
	e.POST("/things", func(c echo.Context) error {
		var v struct{ Name string }
		if err := DecodeJSON(c, &v); err != nil {
			return err
		}
		return c.NoContent(http.StatusCreated)
	})
	e.GET("/panics", func(echo.Context) error { panic("boom") })
	reg := prometheus.NewPedanticRegistry()
	if err := Instrument(e, reg, log); err != nil {
		t.Fatal(err)
	}

	do := func(method, path, body string) int {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec.Code
	}
	for _, r := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/things/1", "", 200},
		{"GET", "/things/2", "", 200},
		{"GET", "/things/missing", "", 404},
		{"POST", "/things", `{"Name": "x"}`, 201},
		{"POST", "/things", `not json`, 400},
		{"POST", "/things", `{"Name": "` + strings.Repeat("x", MaxBodyBytes) + `"}`, 413},
		{"GET", "/panics", "", 500},
		{"GET", "/no/such/path/42", "", 404},
		{"DELETE", "/things/1", "", 405},
		{"BREW", "/things/1", "", 405},
	} {
		if got := do(r.method, r.path, r.body); got != r.want {
			t.Fatalf("%s %s: %d, want %d", r.method, r.path, got, r.want)
		}
	}

	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest("GET", MetricsPath, nil))
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	fams := parse(t, rec.Body)
	for _, c := range []struct {
		route, method, code string
		want                float64
	}{
		{"/things/:id", "GET", "200", 2},
		{"/things/:id", "GET", "404", 1},
		{"/things", "POST", "201", 1},
		{"/things", "POST", "400", 1},
		{"/things", "POST", "413", 1},
		{"/panics", "GET", "500", 1},
		{"unmatched", "GET", "404", 1},
		{"/things/:id", "DELETE", "405", 1},
		{"/things/:id", "other", "405", 1},
	} {
		labels := map[string]string{"route": c.route, "method": c.method, "code": c.code}
		if got := value(fams, "eventsaga_http_requests_total", labels); got != c.want {
			t.Errorf("requests %v: %v, want %v", labels, got, c.want)
		}
	}
	if got := value(fams, "eventsaga_http_request_duration_seconds", map[string]string{"route": "/things/:id", "method": "GET"}); got != 3 {
		t.Errorf("%v durations of GET /things/:id, want 3", got)
	}
	for _, m := range fams["eventsaga_http_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "route" && strings.Contains(l.GetValue(), "/no/such") {
				t.Errorf("a raw path became a label: %s", l.GetValue())
			}
		}
	}
}

// A request whose client went away before anything was answered is 499.
func TestInstrumentCountsAbandonedRequests(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	e := New(log, nil)
	e.GET("/slow", func(c echo.Context) error {
		<-c.Request().Context().Done()
		return c.Request().Context().Err()
	})
	reg := prometheus.NewPedanticRegistry()
	if err := Instrument(e, reg, log); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/slow", nil).WithContext(ctx))
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	if got := value(byName, "eventsaga_http_requests_total", map[string]string{"route": "/slow", "code": "499"}); got != 1 {
		t.Errorf("%v abandoned requests counted as 499, want 1", got)
	}
}

func parse(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parse the exposition: %v", err)
	}
	return fams
}

// value is the sum over the samples of family name labelled want (a
// histogram's count).
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var sum float64
	for _, m := range fams[name].GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && got[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}
