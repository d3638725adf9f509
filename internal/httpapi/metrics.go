package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MetricsPath is where Instrument serves the registry.
const MetricsPath = "/metrics"

// unmatchedRoute labels requests that matched no route: their raw paths
// would make a series per path a client cares to try.
const unmatchedRoute = "unmatched"

// Instrument counts and times e's requests in reg, labelled by route
// template (c.Path(), such as /orders/:id), method and status, and serves
// reg's metrics at GET /metrics in Prometheus' text format. The route
// templates are read when the first request comes: a route registered after
// that is labelled "unmatched", as a request that matched no route is.
//
// The middleware wraps everything else, routing included (echo's Pre), so
// that a request refused before its handler (a body too large, a panic) is
// counted with the status it got.
func Instrument(e *echo.Echo, reg *prometheus.Registry, log *slog.Logger) error {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "eventsaga_http_requests_total",
		Help: "HTTP requests answered, by route template, method and status code (499: the client went away first).",
	}, []string{"route", "method", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "eventsaga_http_request_duration_seconds",
		Help: "Time from a request's arrival to its answer, by route template and method.",
		// A read in a millisecond up to RequestTimeout (5 s), past which
		// a request is answered 503.
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route", "method"})
	inFlight := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "eventsaga_http_requests_in_flight",
		Help: "HTTP requests being handled.",
	})
	for _, c := range []prometheus.Collector{requests, duration, inFlight} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	e.GET(MetricsPath, echo.WrapHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// A collector that failed (a measurement that timed out) costs its
		// own samples, not the whole scrape.
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      errorLog{log},
	})))
	routes := routeSet(e)
	e.Pre(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start, ctx := time.Now(), c.Request().Context()
			inFlight.Inc()
			defer inFlight.Dec()
			if err := next(c); err != nil {
				c.Error(err) // the status is known only once the error is answered
			}
			route := c.Path()
			if !routes.has(route) {
				route = unmatchedRoute
			}
			method := methodLabel(c.Request().Method)
			code := c.Response().Status
			if !c.Response().Committed && errors.Is(ctx.Err(), context.Canceled) {
				code = 499 // nothing was answered: the client went away
			}
			requests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
			duration.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
			return nil
		}
	})
	return nil
}

// knownRoutes is the set of e's route templates, read when the first
// request comes (every route is registered by then).
type knownRoutes struct {
	e     *echo.Echo
	once  sync.Once
	paths map[string]bool
}

func routeSet(e *echo.Echo) *knownRoutes { return &knownRoutes{e: e} }

func (k *knownRoutes) has(path string) bool {
	k.once.Do(func() {
		k.paths = map[string]bool{}
		for _, r := range k.e.Routes() {
			k.paths[r.Path] = true
		}
	})
	return path != "" && k.paths[path]
}

// errorLog is promhttp's error log on slog.
type errorLog struct{ log *slog.Logger }

func (l errorLog) Println(v ...any) {
	if l.log != nil {
		l.log.Warn("serving metrics", "err", v)
	}
}

// methodLabel is the request's method, or "other" for one HTTP does not
// define: a client must not be able to make series up.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}
