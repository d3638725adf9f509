package projector

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsaga/eventsaga/internal/httpapi"
	"github.com/eventsaga/eventsaga/internal/platform"
	"github.com/eventsaga/eventsaga/pkg/outbox"
)

// Metrics of the projector, beside the HTTP, pool and consumer metrics
// every service has: how far the read model trails the topics.
var (
	projectorLagDesc = prometheus.NewDesc("eventsaga_projector_lag",
		"Events on the topics that the current generation's projection has not committed yet, measured on scrape (GET /status's total_lag).", nil, nil)
	projectorGenerationDesc = prometheus.NewDesc("eventsaga_projector_generation",
		"The read model's current generation (a rebuild makes the next one current).", nil, nil)
)

// instrument registers the projector's metrics in cfg's registry (or a new
// one) and serves them on the API; the projection's consumers report to
// s.consumerMetrics.
func (s *Service) instrument() error {
	reg := s.cfg.Metrics
	if reg == nil {
		reg = platform.NewRegistry()
	}
	var err error
	if s.consumerMetrics, err = outbox.NewMetrics(reg, s.log); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	lag := s.consumerMetrics.LagCollector(func() (outbox.LagTarget, bool) {
		g := generation(s.gen.Load())
		return outbox.LagTarget{
			Client: s.kafka,
			Group:  groupOf(s.cfg.ConsumerGroup, g),
			Topics: []string{s.cfg.OrdersTopic, s.cfg.CustomersTopic},
		}, s.consumer.Load() != nil // as GET /status: nothing before the projection starts
	})
	for _, c := range []prometheus.Collector{
		platform.NewPoolCollector("queries", s.pool),
		platform.NewPoolCollector("projection", s.projPool),
		&lagCollector{lag: lag, gen: func() int64 { return s.gen.Load() }},
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	if err := httpapi.Instrument(s.http, reg, s.log); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// lagCollector measures the projection's lag once a scrape, and reports it
// per partition (eventsaga_consumer_lag, as the write services' consumers
// do) and in all (eventsaga_projector_lag).
type lagCollector struct {
	lag *outbox.LagCollector
	gen func() int64
}

func (l *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	l.lag.Describe(ch)
	ch <- projectorLagDesc
	ch <- projectorGenerationDesc
}

func (l *lagCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(projectorGenerationDesc, prometheus.GaugeValue, float64(l.gen()))
	if lag, _, ok := l.lag.CollectLag(ch); ok {
		ch <- prometheus.MustNewConstMetric(projectorLagDesc, prometheus.GaugeValue, float64(lag.Total()))
	}
}
