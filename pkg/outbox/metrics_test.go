package outbox

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/testenv"
)

// sample returns the value of the sample of family name whose labels
// include want (a counter's or gauge's value, a histogram's count), and
// whether there is one.
func sample(t *testing.T, reg prometheus.Gatherer, name string, want map[string]string) (float64, bool) {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if !hasLabels(m, want) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, l := range m.GetLabel() {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// families reports whether any family named with prefix has a sample
// labelled want.
func families(t *testing.T, reg prometheus.Gatherer, prefix string, want map[string]string) bool {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if !strings.HasPrefix(f.GetName(), prefix) {
			continue
		}
		for _, m := range f.GetMetric() {
			if hasLabels(m, want) {
				return true
			}
		}
	}
	return false
}

func newTestMetrics(t *testing.T) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// The outbox's depth and age are read on scrape; the relay's count,
// latency and leadership follow what it does; its Kafka client's metrics
// come and go with it.
func TestMetricsOfOutboxAndRelay(t *testing.T) {
	e := newEnv(t, 3)
	m, reg := newTestMetrics(t)
	if err := reg.Register(m.OutboxCollector(e.pool)); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		e.commit(t, e.message(t, keyOf(i), 1))
	}
	if depth, ok := sample(t, reg, "eventsaga_outbox_depth", nil); !ok || depth != 5 {
		t.Fatalf("outbox depth %v (present %v), want 5", depth, ok)
	}
	if age, ok := sample(t, reg, "eventsaga_outbox_oldest_age_seconds", nil); !ok || age < 0 || age > 60 {
		t.Fatalf("outbox age %v (present %v), want a few seconds at most", age, ok)
	}

	r, stop := e.startRelay(t, RelayConfig{Metrics: m})
	waitFor(t, 20*time.Second, "the rows to be published", func() bool { return r.Published() == 5 })
	if v, _ := sample(t, reg, "eventsaga_relay_published_total", nil); v != 5 {
		t.Errorf("published %v, want 5", v)
	}
	if v, _ := sample(t, reg, "eventsaga_relay_leader", nil); v != 1 {
		t.Errorf("leader %v, want 1", v)
	}
	if n, _ := sample(t, reg, "eventsaga_relay_publish_seconds", nil); n < 1 {
		t.Errorf("%v publish latencies observed, want at least 1", n)
	}
	if v, _ := sample(t, reg, "eventsaga_relay_publish_failures_total", nil); v != 0 {
		t.Errorf("%v publish failures, want 0", v)
	}
	if !families(t, reg, "eventsaga_kafka_", map[string]string{"client": "relay"}) {
		t.Error("no Kafka client metrics labelled client=relay")
	}
	waitFor(t, 10*time.Second, "the published rows to be deleted", func() bool {
		depth, _ := sample(t, reg, "eventsaga_outbox_depth", nil)
		age, _ := sample(t, reg, "eventsaga_outbox_oldest_age_seconds", nil)
		return depth == 0 && age == 0
	})

	stop()
	if v, _ := sample(t, reg, "eventsaga_relay_leader", nil); v != 0 {
		t.Errorf("leader %v after the relay stopped, want 0", v)
	}
	if families(t, reg, "eventsaga_kafka_", map[string]string{"client": "relay"}) {
		t.Error("the closed producer's Kafka metrics are still registered")
	}
}

// A consumer's counts and its group's lag: applied, retried, dead-lettered,
// then a redelivery skipped; the lag from all ten records to none.
func TestMetricsOfConsumer(t *testing.T) {
	e := newEnv(t, 1)
	m, reg := newTestMetrics(t)
	group := e.kafka.Topic("metrics-test")
	admin := e.kafka.Client(t)
	if err := reg.Register(m.LagCollector(func() (LagTarget, bool) {
		return LagTarget{Client: admin, Group: group, Topics: []string{e.topic}}, true
	})); err != nil {
		t.Fatal(err)
	}
	key := keyOf(1)
	recs := make([]*kgo.Record, 10)
	for i := range recs {
		recs[i] = e.record(t, key, int64(i+1))
	}
	e.produce(t, recs...)
	lagLabels := map[string]string{"group": group, "topic": e.topic, "partition": "0"}
	if lag, ok := sample(t, reg, "eventsaga_consumer_lag", lagLabels); !ok || lag != 10 {
		t.Fatalf("lag before consuming %v (present %v), want 10", lag, ok)
	}

	c := e.startCountingConsumer(t, group, func(cfg *ConsumerConfig) {
		cfg.MaxAttempts, cfg.Metrics = 3, m
		cfg.Handler = func(ctx context.Context, tx pgx.Tx, d Delivery) error {
			if d.Envelope.AggregateVersion == 4 {
				return errors.New("poison")
			}
			return recordEffect(ctx, tx, d)
		}
	})
	groupLabel := map[string]string{"group": group}
	waitFor(t, 20*time.Second, "the batch to be dealt with", func() bool {
		applied, _ := sample(t, reg, "eventsaga_consumer_applied_total", groupLabel)
		dead, _ := sample(t, reg, "eventsaga_consumer_dead_lettered_total", groupLabel)
		return applied == 9 && dead == 1
	})
	// The poison alone: tried, failed twice and tried again, then given up.
	if v, _ := sample(t, reg, "eventsaga_consumer_retries_total", groupLabel); v < 2 {
		t.Errorf("%v retries, want at least 2", v)
	}
	e.produce(t, &kgo.Record{Key: recs[0].Key, Value: recs[0].Value})
	waitFor(t, 20*time.Second, "the redelivery to be skipped", func() bool {
		dups, _ := sample(t, reg, "eventsaga_consumer_duplicates_total", groupLabel)
		return dups == 1
	})
	waitFor(t, 20*time.Second, "the offsets to be committed", func() bool {
		lag, _ := sample(t, reg, "eventsaga_consumer_lag", lagLabels)
		return lag == 0
	})
	for _, role := range []string{"consumer", "dead-letters"} {
		if !families(t, reg, "eventsaga_kafka_", map[string]string{"client": role}) {
			t.Errorf("no Kafka client metrics labelled client=%s", role)
		}
	}

	c.stop()
	if _, ok := sample(t, reg, "eventsaga_consumer_applied_total", groupLabel); ok {
		t.Error("a stopped consumer's counts are still reported")
	}
}

// A measurement that fails costs its own samples and is counted; the
// scrape goes on.
func TestMetricsMeasurementFailureIsCounted(t *testing.T) {
	m, reg := newTestMetrics(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1")) // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	cl.Close() // a closed client fails at once
	if err := reg.Register(m.LagCollector(func() (LagTarget, bool) {
		return LagTarget{Client: cl, Group: "g", Topics: []string{"t"}}, true
	})); err != nil {
		t.Fatal(err)
	}
	if _, ok := sample(t, reg, "eventsaga_consumer_lag", nil); ok {
		t.Error("lag reported from a client that cannot reach Kafka")
	}
	// Read directly: a second gather would measure (and fail) again.
	var errs dto.Metric
	if err := m.errs.WithLabelValues("consumer_lag").Write(&errs); err != nil {
		t.Fatal(err)
	}
	if v := errs.GetCounter().GetValue(); v != 1 {
		t.Errorf("collect errors %v, want 1", v)
	}
}
