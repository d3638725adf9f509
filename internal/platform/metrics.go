package platform

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics: each service has a Prometheus registry of its own
// (Config.Metrics, else one NewRegistry makes), served at GET /metrics on its
// HTTP port (httpapi.Instrument). Its metric families are named eventsaga_*
// and carry no service label: which service and instance a sample comes
// from is the scrape target's business (deploy/prometheus/prometheus.yml
// labels each target with service=). A registry of its own, rather than
// Prometheus' global one, lets tests run several services in one process.

// NewRegistry returns a registry with the Go runtime's and the process's
// collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// registry is cfg's registry, or a new one.
func (c Config) registry() *prometheus.Registry {
	if c.Metrics != nil {
		return c.Metrics
	}
	return NewRegistry()
}

// NewPoolCollector returns a collector of pool's statistics (pgxpool.Stat),
// labelled pool=name: a service with several pools registers one for each.
func NewPoolCollector(name string, pool *pgxpool.Pool) prometheus.Collector {
	labels := prometheus.Labels{"pool": name}
	desc := func(metric, help string) *prometheus.Desc {
		return prometheus.NewDesc("eventsaga_db_pool_"+metric, help, nil, labels)
	}
	return &poolCollector{
		pool:             pool,
		acquired:         desc("acquired_conns", "Connections in use."),
		idle:             desc("idle_conns", "Idle connections."),
		constructing:     desc("constructing_conns", "Connections being opened."),
		total:            desc("total_conns", "Connections open or being opened."),
		max:              desc("max_conns", "The most connections the pool opens."),
		acquires:         desc("acquires_total", "Connections acquired from the pool."),
		acquireSeconds:   desc("acquire_seconds_total", "Time spent acquiring connections, in all."),
		emptyAcquires:    desc("empty_acquires_total", "Acquires that had to wait for a connection (none was idle)."),
		emptyWaitSeconds: desc("empty_acquire_wait_seconds_total", "Time spent by acquires that had to wait for a connection, in all."),
		canceledAcquires: desc("canceled_acquires_total", "Acquires given up by their context before they got a connection."),
		newConns:         desc("new_conns_total", "Connections opened."),
	}
}

type poolCollector struct {
	pool *pgxpool.Pool

	acquired, idle, constructing, total, max                  *prometheus.Desc
	acquires, acquireSeconds, emptyAcquires, emptyWaitSeconds *prometheus.Desc
	canceledAcquires, newConns                                *prometheus.Desc
}

func (p *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{p.acquired, p.idle, p.constructing, p.total, p.max,
		p.acquires, p.acquireSeconds, p.emptyAcquires, p.emptyWaitSeconds, p.canceledAcquires, p.newConns} {
		ch <- d
	}
}

// Collect reads the pool's counters: a few atomic loads under the pool's
// lock, nothing sent to the database.
func (p *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := p.pool.Stat()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(p.acquired, float64(s.AcquiredConns()))
	gauge(p.idle, float64(s.IdleConns()))
	gauge(p.constructing, float64(s.ConstructingConns()))
	gauge(p.total, float64(s.TotalConns()))
	gauge(p.max, float64(s.MaxConns()))
	counter(p.acquires, float64(s.AcquireCount()))
	counter(p.acquireSeconds, s.AcquireDuration().Seconds())
	counter(p.emptyAcquires, float64(s.EmptyAcquireCount()))
	counter(p.emptyWaitSeconds, s.EmptyAcquireWaitTime().Seconds())
	counter(p.canceledAcquires, float64(s.CanceledAcquireCount()))
	counter(p.newConns, float64(s.NewConnsCount()))
}
