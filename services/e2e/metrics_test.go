package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/eventsaga/eventsaga/internal/testenv"
)

// Sagas move each service's metrics: one approved, one rejected for its
// credit, and an approved order cancelled. Every service's GET /metrics is
// scraped and parsed as Prometheus parses it.
func TestMetricsMoveWithTheSaga(t *testing.T) {
	s := startSystem(t)
	rich, poor := s.register("Ida", "100.00"), s.register("Jon", "10.00")
	approved := s.place(rich, 1, "30.00")
	rejected := s.place(poor, 1, "30.00")
	s.awaitStatus(approved, "APPROVED")
	if v := s.awaitStatus(rejected, "REJECTED"); v.RejectionReason == nil || *v.RejectionReason != "INSUFFICIENT_CREDIT" {
		t.Fatalf("rejected order %+v", v)
	}
	cancelled := s.place(rich, 1, "20.00")
	s.awaitStatus(cancelled, "APPROVED")
	mustCall(t, 200, nil, "POST", s.order.url+"/orders/"+cancelled.String()+"/cancel", "")
	// The projector has the last event once it answers for its version.
	mustCall(t, 200, nil, "GET", s.projector.url+"/orders/"+cancelled.String()+"?min_version=3", "")

	orderGroup, customerGroup := s.group("order-service"), s.group("customer-service")

	// The order service. The relay publishes after the commit that the
	// REST answers show, so its count is waited for.
	m := awaitMetrics(t, s.order.url, "the order relay to publish 7 events", func(m metrics) bool {
		return m.value("eventsaga_relay_published_total", nil) >= 7 // 3 OrderCreated, 2 approvals, 1 rejection, 1 cancellation
	})
	m.want(t, "eventsaga_http_requests_total", labels{"route": "/orders", "method": "POST", "code": "201"}, 3)
	m.want(t, "eventsaga_http_requests_total", labels{"route": "/orders/:id/cancel", "method": "POST", "code": "200"}, 1)
	m.atLeast(t, "eventsaga_http_request_duration_seconds", labels{"route": "/orders", "method": "POST"}, 3)
	m.want(t, "eventsaga_saga_outcomes_total", labels{"result": "APPROVED", "reason": ""}, 2)
	m.want(t, "eventsaga_saga_outcomes_total", labels{"result": "REJECTED", "reason": "INSUFFICIENT_CREDIT"}, 1)
	m.want(t, "eventsaga_saga_outcomes_total", labels{"result": "CANCELLED", "reason": "APPROVED"}, 1)
	m.want(t, "eventsaga_saga_outcomes_total", labels{"result": "REJECTED", "reason": "DEADLINE_EXCEEDED"}, 0)
	// Decided: two approvals and a rejection; the cancellation came after
	// an approval, so it is no decision.
	m.want(t, "eventsaga_saga_decision_seconds", labels{"result": "APPROVED"}, 2)
	m.want(t, "eventsaga_saga_decision_seconds", labels{"result": "REJECTED"}, 1)
	m.want(t, "eventsaga_saga_decision_seconds", labels{"result": "CANCELLED"}, 0)
	if sum := m.histogramSum("eventsaga_saga_decision_seconds", labels{"result": "APPROVED"}); sum <= 0 || sum > 20 {
		t.Errorf("the approvals took %vs in all; want more than 0 and less than the test's wait", sum)
	}
	m.want(t, "eventsaga_relay_leader", nil, 1)
	m.atLeast(t, "eventsaga_relay_publish_seconds", nil, 1)
	m.atLeast(t, "eventsaga_consumer_applied_total", labels{"group": orderGroup}, 2) // CreditReserved ×2, CreditReservationFailed, ...
	m.want(t, "eventsaga_consumer_dead_lettered_total", labels{"group": orderGroup}, 0)
	m.present(t, "eventsaga_consumer_duplicates_total", labels{"group": orderGroup})
	m.present(t, "eventsaga_consumer_retries_total", labels{"group": orderGroup})
	m.present(t, "eventsaga_consumer_lag", labels{"group": orderGroup, "topic": s.customersTopic})
	m.present(t, "eventsaga_outbox_depth", nil)
	m.present(t, "eventsaga_outbox_oldest_age_seconds", nil)
	m.atLeast(t, "eventsaga_db_pool_acquires_total", labels{"pool": "main"}, 1)
	m.present(t, "eventsaga_db_pool_max_conns", labels{"pool": "main"})
	m.present(t, "eventsaga_kafka_connects_total", labels{"client": "consumer"})
	m.present(t, "go_goroutines", nil)
	m.present(t, "process_cpu_seconds_total", nil)
	scrapes := []metrics{m}

	// The customer service: two registrations; it decided on three orders
	// and settled or released them.
	m = awaitMetrics(t, s.customer.url, "the customer relay to publish", func(m metrics) bool {
		// 2 CustomerRegistered, 2 CreditReserved, 1 CreditReservationFailed
		return m.value("eventsaga_relay_published_total", nil) >= 5
	})
	m.want(t, "eventsaga_http_requests_total", labels{"route": "/customers", "method": "POST", "code": "201"}, 2)
	m.atLeast(t, "eventsaga_consumer_applied_total", labels{"group": customerGroup}, 3)
	m.want(t, "eventsaga_relay_leader", nil, 1)
	m.present(t, "eventsaga_consumer_lag", labels{"group": customerGroup, "topic": s.ordersTopic})
	m.present(t, "eventsaga_db_pool_total_conns", labels{"pool": "main"})
	if m.has("eventsaga_saga_outcomes_total") {
		t.Error("the customer service reports saga outcomes: the order service decides them")
	}
	scrapes = append(scrapes, m)

	// The projector: what it applied, and how far behind it is, per
	// partition and in all; its two pools.
	m = awaitMetrics(t, s.projector.url, "the projector to have applied the events", func(m metrics) bool {
		return m.value("eventsaga_consumer_applied_total", nil) >= 1
	})
	m.present(t, "eventsaga_projector_lag", nil)
	m.want(t, "eventsaga_projector_generation", nil, 1)
	m.present(t, "eventsaga_consumer_lag", labels{"topic": s.ordersTopic})
	m.present(t, "eventsaga_consumer_lag", labels{"topic": s.customersTopic})
	m.present(t, "eventsaga_db_pool_acquires_total", labels{"pool": "queries"})
	m.present(t, "eventsaga_db_pool_acquires_total", labels{"pool": "projection"})
	m.want(t, "eventsaga_http_requests_total", labels{"route": "/orders/:id", "method": "GET", "code": "200"}, 1)
	checkDocumented(t, append(scrapes, m)...)
	testenv.WaitFor(t, 20*time.Second, "the projector to catch up", func() bool {
		return scrape(t, s.projector.url).value("eventsaga_projector_lag", nil) == 0
	})
}

// An order rejected for its deadline is counted with that reason, and its
// decision took at least the deadline.
func TestMetricsCountDeadlineRejections(t *testing.T) {
	const deadline = 2 * time.Second
	s := startSystem(t, withOrderDeadline(deadline))
	s.customer.stop() // no credit decision can come
	o := s.place(uuid.New(), 1, "10.00")
	if v := s.awaitStatus(o, "REJECTED"); v.RejectionReason == nil || *v.RejectionReason != "DEADLINE_EXCEEDED" {
		t.Fatalf("order %+v", v)
	}
	m := scrape(t, s.order.url)
	m.want(t, "eventsaga_saga_outcomes_total", labels{"result": "REJECTED", "reason": "DEADLINE_EXCEEDED"}, 1)
	m.want(t, "eventsaga_saga_decision_seconds", labels{"result": "REJECTED"}, 1)
	if took := m.histogramSum("eventsaga_saga_decision_seconds", labels{"result": "REJECTED"}); took < deadline.Seconds() {
		t.Errorf("the rejection came %vs after the order, before its deadline of %v", took, deadline)
	}
}

// sometimes are families a dashboard may query that a scrape shows only
// once what they count has happened (a vector without samples is left out).
var sometimes = map[string]bool{
	"eventsaga_metrics_collect_errors_total": true,
	"eventsaga_kafka_connect_errors_total":   true,
	"eventsaga_kafka_read_errors_total":      true,
	"eventsaga_kafka_write_errors_total":     true,
}

// checkDocumented fails unless docs/operations.md names every eventsaga_
// family the services expose, and every family the Grafana dashboard
// queries is exposed.
func checkDocumented(t *testing.T, scrapes ...metrics) {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	exposed := map[string]bool{}
	for _, m := range scrapes {
		for name := range m {
			exposed[name] = true
		}
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, name := range metricName.FindAllString(string(doc), -1) {
		documented[name] = true
	}
	for name := range exposed {
		if strings.HasPrefix(name, "eventsaga_") && !documented[name] {
			t.Errorf("%s is exposed but not in docs/operations.md", name)
		}
	}

	b, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "eventsaga-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("the dashboard: %v", err)
	}
	queried := 0
	for _, p := range dash.Panels {
		for _, q := range p.Targets {
			for _, name := range metricName.FindAllString(q.Expr, -1) {
				queried++
				name = strings.TrimSuffix(name, "_bucket") // a histogram's series
				if !exposed[name] && !sometimes[name] {
					t.Errorf("the dashboard's panel %q queries %s, which no service exposes", p.Title, name)
				}
			}
		}
	}
	if queried < 20 {
		t.Errorf("the dashboard queries %d metrics; it should chart every family", queried)
	}
}

// metricName matches the names of this project's, Go's and the process's
// metric families.
var metricName = regexp.MustCompile(`\b(eventsaga|go|process)_[a-z0-9_]*[a-z0-9]`)

// metrics is a parsed scrape.
type metrics map[string]*dto.MetricFamily

type labels map[string]string

// scrape GETs url's /metrics and parses it. The request goes around the
// contract check: /metrics is Prometheus' format, not the API's.
func scrape(t *testing.T, url string) metrics {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET %s/metrics: %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s/metrics: %v", url, err)
	}
	return fams
}

// awaitMetrics scrapes url until ok holds, and returns that scrape.
func awaitMetrics(t *testing.T, url, what string, ok func(metrics) bool) metrics {
	t.Helper()
	var m metrics
	testenv.WaitFor(t, 20*time.Second, what, func() bool {
		m = scrape(t, url)
		return ok(m)
	})
	return m
}

func (m metrics) has(name string) bool { _, ok := m[name]; return ok }

// samples are family name's samples labelled want (among others).
func (m metrics) samples(name string, want labels) []*dto.Metric {
	var out []*dto.Metric
	for _, s := range m[name].GetMetric() {
		got := map[string]string{}
		for _, l := range s.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && got[k] == v
		}
		if match {
			out = append(out, s)
		}
	}
	return out
}

// value sums the samples' values (a histogram's count).
func (m metrics) value(name string, want labels) float64 {
	var sum float64
	for _, s := range m.samples(name, want) {
		switch {
		case s.Counter != nil:
			sum += s.Counter.GetValue()
		case s.Gauge != nil:
			sum += s.Gauge.GetValue()
		case s.Histogram != nil:
			sum += float64(s.Histogram.GetSampleCount())
		case s.Untyped != nil:
			sum += s.Untyped.GetValue()
		}
	}
	return sum
}

func (m metrics) histogramSum(name string, want labels) float64 {
	var sum float64
	for _, s := range m.samples(name, want) {
		sum += s.GetHistogram().GetSampleSum()
	}
	return sum
}

func (m metrics) present(t *testing.T, name string, want labels) {
	t.Helper()
	if len(m.samples(name, want)) == 0 {
		t.Errorf("no %s%v", name, want)
	}
}

func (m metrics) want(t *testing.T, name string, want labels, v float64) {
	t.Helper()
	if len(m.samples(name, want)) == 0 && v != 0 {
		t.Errorf("no %s%v, want %v", name, want, v)
		return
	}
	if got := m.value(name, want); got != v {
		t.Errorf("%s%v = %v, want %v", name, want, got, v)
	}
}

func (m metrics) atLeast(t *testing.T, name string, want labels, v float64) {
	t.Helper()
	if got := m.value(name, want); got < v {
		t.Errorf("%s%v = %v, want at least %v", name, want, got, v)
	}
}
