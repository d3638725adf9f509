package outbox

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
)

// Metrics are the Prometheus metrics of a process's relay and consumers:
// what they published, applied, skipped, retried and dead-lettered, the
// relay's publish latency and leadership, and their Kafka clients' own
// metrics (franz-go's kprom). Make one per registry with NewMetrics and give
// it to RelayConfig.Metrics and ConsumerConfig.Metrics; a nil *Metrics
// records nothing.
//
// The counters are read from the relays' and consumers' own atomic counts
// when the registry is scraped (see ConsumerStats), so the hot path pays
// nothing for them; only the publish latency is observed as it happens, once
// per batch.
type Metrics struct {
	reg  prometheus.Registerer
	log  *slog.Logger
	errs *prometheus.CounterVec
	// publishSeconds is observed once per batch the relay produces.
	publishSeconds prometheus.Histogram

	mu        sync.Mutex
	relays    []*Relay
	consumers []*Consumer
}

// Metric families read from the relays and consumers on each scrape.
var (
	relayPublishedDesc = prometheus.NewDesc("eventsaga_relay_published_total",
		"Outbox rows the relay published and Kafka acknowledged.", nil, nil)
	relayFailedDesc = prometheus.NewDesc("eventsaga_relay_publish_failures_total",
		"Records Kafka refused or did not acknowledge; their rows stay in the outbox and are published again.", nil, nil)
	relayLeaderDesc = prometheus.NewDesc("eventsaga_relay_leader",
		"1 while this instance's relay holds the database's advisory lock and publishes, else 0 (a standby).", nil, nil)
	consumerAppliedDesc = prometheus.NewDesc("eventsaga_consumer_applied_total",
		"Events the consumer group's handler applied (committed).", []string{"group"}, nil)
	consumerDuplicatesDesc = prometheus.NewDesc("eventsaga_consumer_duplicates_total",
		"Events skipped because the inbox had them already (redeliveries, relay duplicates).", []string{"group"}, nil)
	consumerRetriesDesc = prometheus.NewDesc("eventsaga_consumer_retries_total",
		"Transactions tried again after a failure: lost races, an unavailable database, failing records.", []string{"group"}, nil)
	consumerDeadLetteredDesc = prometheus.NewDesc("eventsaga_consumer_dead_lettered_total",
		"Records given up and sent to the group's dead-letter topic.", []string{"group"}, nil)
	consumerLagDesc = prometheus.NewDesc("eventsaga_consumer_lag",
		"Records on the partition that the consumer group has not committed yet, measured on scrape.", []string{"group", "topic", "partition"}, nil)
	outboxDepthDesc = prometheus.NewDesc("eventsaga_outbox_depth",
		"Rows in the outbox: committed events not yet published (and acknowledged) by the relay, measured on scrape.", nil, nil)
	outboxAgeDesc = prometheus.NewDesc("eventsaga_outbox_oldest_age_seconds",
		"Age of the oldest row in the outbox, 0 when it is empty, measured on scrape.", nil, nil)
)

// scrapeTimeout bounds the database or Kafka requests of one scrape: a
// stalled dependency costs a scrape its samples, never the scrape itself.
const scrapeTimeout = 2 * time.Second

// NewMetrics registers the relay's and consumers' metrics with reg.
func NewMetrics(reg prometheus.Registerer, log *slog.Logger) (*Metrics, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{
		reg: reg, log: log,
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eventsaga_metrics_collect_errors_total",
			Help: "Scrapes whose measurement on the database or Kafka failed or timed out; their samples are missing from that scrape.",
		}, []string{"collector"}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "eventsaga_relay_publish_seconds",
			Help: "How long the relay waited for Kafka to acknowledge one batch of outbox rows (the produce call).",
			// From a batch on loopback to the failover of a killed broker.
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
	}
	for _, c := range []prometheus.Collector{m.errs, m.publishSeconds, (*workCollector)(m)} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// kafkaHooks returns the kgo option that gives a client kprom's metrics,
// labelled client=role; none for a nil m. Clients of one role must not live
// at the same time in one process: kprom registers a client's metrics when
// it is made and unregisters them when it is closed.
func (m *Metrics) kafkaHooks(role string) []kgo.Opt {
	if m == nil {
		return nil
	}
	return []kgo.Opt{kgo.WithHooks(kprom.NewMetrics("eventsaga_kafka",
		kprom.Registerer(lenientRegisterer{m.reg, m.log}),
		kprom.WithStaticLabel(prometheus.Labels{"client": role})))}
}

// lenientRegisterer logs what it cannot register instead of panicking, as
// promauto (which kprom uses) would: a metrics clash must not take a
// service down.
type lenientRegisterer struct {
	prometheus.Registerer
	log *slog.Logger
}

func (l lenientRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := l.Register(c); err != nil {
			l.log.Warn("kafka client metrics not registered", "err", err)
		}
	}
}

func (m *Metrics) observePublish(d time.Duration) {
	if m != nil {
		m.publishSeconds.Observe(d.Seconds())
	}
}

func (m *Metrics) addRelay(r *Relay) {
	if m != nil {
		m.mu.Lock()
		m.relays = append(m.relays, r)
		m.mu.Unlock()
	}
}

func (m *Metrics) addConsumer(c *Consumer) {
	if m != nil {
		m.mu.Lock()
		m.consumers = append(m.consumers, c)
		m.mu.Unlock()
	}
}

// removeConsumer forgets a consumer that stopped, so that a group it
// consumed for (the projector's generation before a rebuild) leaves the
// metrics.
func (m *Metrics) removeConsumer(c *Consumer) {
	if m != nil {
		m.mu.Lock()
		m.consumers = slices.DeleteFunc(m.consumers, func(x *Consumer) bool { return x == c })
		m.mu.Unlock()
	}
}

// collectFailed counts and logs a scrape's failed measurement.
func (m *Metrics) collectFailed(collector string, err error, args ...any) {
	if m != nil {
		m.errs.WithLabelValues(collector).Inc()
		m.log.Debug("metrics: measurement failed", append([]any{"collector", collector, "err", err}, args...)...)
	}
}

// workCollector reads the relays' and consumers' counts on each scrape.
type workCollector Metrics

func (w *workCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{relayPublishedDesc, relayFailedDesc, relayLeaderDesc,
		consumerAppliedDesc, consumerDuplicatesDesc, consumerRetriesDesc, consumerDeadLetteredDesc} {
		ch <- d
	}
}

func (w *workCollector) Collect(ch chan<- prometheus.Metric) {
	w.mu.Lock()
	relays, consumers := slices.Clone(w.relays), slices.Clone(w.consumers)
	w.mu.Unlock()
	if len(relays) > 0 {
		var published, failed, leader float64
		for _, r := range relays {
			published += float64(r.Published())
			failed += float64(r.failed.Load())
			if r.Leader() {
				leader = 1
			}
		}
		ch <- prometheus.MustNewConstMetric(relayPublishedDesc, prometheus.CounterValue, published)
		ch <- prometheus.MustNewConstMetric(relayFailedDesc, prometheus.CounterValue, failed)
		ch <- prometheus.MustNewConstMetric(relayLeaderDesc, prometheus.GaugeValue, leader)
	}
	// One series per group, should two consumers of a group share a
	// process.
	type counts struct {
		ConsumerStats
		retries int64
	}
	byGroup := map[string]counts{}
	var groups []string
	for _, c := range consumers {
		s, g := c.Stats(), c.cfg.Group
		if _, ok := byGroup[g]; !ok {
			groups = append(groups, g)
		}
		t := byGroup[g]
		t.Applied += s.Applied
		t.Duplicates += s.Duplicates
		t.DeadLettered += s.DeadLettered
		t.retries += c.retries.Load()
		byGroup[g] = t
	}
	for _, g := range groups {
		s := byGroup[g]
		ch <- prometheus.MustNewConstMetric(consumerAppliedDesc, prometheus.CounterValue, float64(s.Applied), g)
		ch <- prometheus.MustNewConstMetric(consumerDuplicatesDesc, prometheus.CounterValue, float64(s.Duplicates), g)
		ch <- prometheus.MustNewConstMetric(consumerRetriesDesc, prometheus.CounterValue, float64(s.retries), g)
		ch <- prometheus.MustNewConstMetric(consumerDeadLetteredDesc, prometheus.CounterValue, float64(s.DeadLettered), g)
	}
}

// OutboxCollector returns a collector of the outbox's depth and the age of
// its oldest row, read from pool on each scrape (one statement, bounded by
// a timeout). Register it with the registry m was made with.
func (m *Metrics) OutboxCollector(pool *pgxpool.Pool) prometheus.Collector {
	return &outboxCollector{m: m, pool: pool}
}

type outboxCollector struct {
	m    *Metrics
	pool *pgxpool.Pool
}

// outboxStats counts the outbox's rows and ages its oldest by the
// database's clock, the one that stamped enqueued_at. The outbox holds what
// is not yet published: a few rows, unless the relay or Kafka is behind.
const outboxStats = `
SELECT count(*), COALESCE(greatest(EXTRACT(EPOCH FROM clock_timestamp() - min(enqueued_at)), 0), 0)::float8
FROM outbox`

func (o *outboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- outboxDepthDesc
	ch <- outboxAgeDesc
}

func (o *outboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	var depth int64
	var age float64
	if err := o.pool.QueryRow(ctx, outboxStats).Scan(&depth, &age); err != nil {
		o.m.collectFailed("outbox", err)
		return
	}
	ch <- prometheus.MustNewConstMetric(outboxDepthDesc, prometheus.GaugeValue, float64(depth))
	ch <- prometheus.MustNewConstMetric(outboxAgeDesc, prometheus.GaugeValue, age)
}

// LagTarget is the consumer group whose lag a LagCollector measures, and
// the client it asks Kafka with.
type LagTarget struct {
	Client *kgo.Client
	Group  string
	Topics []string
}

// LagCollector is a collector of a consumer group's lag per partition
// (eventsaga_consumer_lag), measured with GroupLag on each scrape within a
// timeout.
type LagCollector struct {
	m      *Metrics
	target func() (LagTarget, bool)
}

// LagCollector returns a collector of the lag of the group that target
// names when it is called; nothing is measured while it reports false.
// Register it with the registry m was made with, or collect it from a
// collector of one's own with CollectLag.
func (m *Metrics) LagCollector(target func() (LagTarget, bool)) *LagCollector {
	return &LagCollector{m: m, target: target}
}

// Describe implements prometheus.Collector.
func (l *LagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- consumerLagDesc }

// Collect implements prometheus.Collector.
func (l *LagCollector) Collect(ch chan<- prometheus.Metric) { l.CollectLag(ch) }

// CollectLag measures the lag, sends it to ch and returns it with the
// target; ok is false if nothing was measured.
func (l *LagCollector) CollectLag(ch chan<- prometheus.Metric) (lag Lag, t LagTarget, ok bool) {
	t, ok = l.target()
	if !ok {
		return nil, t, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	lag, err := GroupLag(ctx, t.Client, t.Group, t.Topics...)
	if err != nil {
		l.m.collectFailed("consumer_lag", err, "group", t.Group)
		return nil, t, false
	}
	for topic, ps := range lag {
		for p, n := range ps {
			ch <- prometheus.MustNewConstMetric(consumerLagDesc, prometheus.GaugeValue, float64(n), t.Group, topic, strconv.Itoa(int(p)))
		}
	}
	return lag, t, true
}
