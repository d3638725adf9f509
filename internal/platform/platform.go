// Package platform is what every service here does the same way: read its
// configuration from the environment, open (and if need be create) its
// database and migrate it, register its metrics (metrics.go), and run its
// parts (HTTP API, outbox relay, consumer) until it is told to stop, then
// stop them in an order that loses nothing.
package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsaga/eventsaga/internal/auth"
	"github.com/eventsaga/eventsaga/internal/httpapi"
	"github.com/eventsaga/eventsaga/internal/kafkaconn"
	"github.com/eventsaga/eventsaga/internal/pgdb"
	"github.com/eventsaga/eventsaga/internal/pgmigrate"
	"github.com/eventsaga/eventsaga/pkg/outbox"
)

// Topic names of the contract.
const (
	OrdersTopic    = "orders.events"
	CustomersTopic = "customers.events"
)

// Config is what every service reads from its environment.
type Config struct {
	// DatabaseURL is the service's own database (DATABASE_URL); it is
	// created on the same server if missing. The defaults point at a local
	// server without TLS (encrypting loopback traffic only costs CPU); for
	// a server elsewhere use sslmode=verify-full.
	DatabaseURL string
	// KafkaBrokers are the seed brokers (KAFKA_BROKERS, comma-separated).
	KafkaBrokers []string
	// Kafka is how the service's Kafka clients connect: TLS and SASL
	// (KAFKA_TLS*, KAFKA_SASL_MECHANISM, KAFKA_USERNAME, KAFKA_PASSWORD;
	// package kafkaconn). The zero value, plaintext without SASL.
	Kafka kafkaconn.Config
	// HTTPAddr is where the API listens (HTTP_ADDR).
	HTTPAddr string
	// OrdersTopic and CustomersTopic default to the contract's names
	// (ORDERS_TOPIC, CUSTOMERS_TOPIC; tests on a shared broker change them).
	OrdersTopic, CustomersTopic string
	// ShutdownTimeout bounds each stage of a shutdown (SHUTDOWN_TIMEOUT).
	ShutdownTimeout time.Duration
	// ConsumerGroup is the service's consumer group (CONSUMER_GROUP); its
	// dead letters go to dlq.<group>.
	ConsumerGroup string
	// ConsumerInstance (CONSUMER_INSTANCE_ID), if set, makes the service's
	// consumers static members of their groups: an instance restarted
	// within the session timeout (6 s) takes its partitions back without a
	// rebalance of the others. Unique per running instance, the same
	// across its restarts; letters, digits, '.', '_' and '-'.
	ConsumerInstance string
	// SnapshotEvery is how often an aggregate's state is snapshotted
	// (SNAPSHOT_EVERY).
	SnapshotEvery int
	// PprofAddr, if set, serves Go's profiles (net/http/pprof) there
	// (PPROF_ADDR); keep it on loopback.
	PprofAddr string
	// InboxRetention is how long the inbox remembers an applied event
	// (INBOX_RETENTION); older rows are pruned in the background, and a
	// redelivery of their events would be applied again. Zero means
	// DefaultInboxRetention.
	InboxRetention time.Duration
	// Logging is LOG_FORMAT and LOG_LEVEL (see Logger, which a service's
	// main builds its logger with before the rest is read; Load checks
	// them again so that a Config holds what the service logs with).
	Logging Logging
	// Metrics is the registry the service's metrics go to, served at GET
	// /metrics; nil gives the service a new one (NewRegistry). Not read
	// from the environment. A registry serves one service.
	Metrics *prometheus.Registry
	// TracerProvider traces the service (package tracing); nil, tracing
	// off, unless its main built one from the OTEL_* variables
	// (tracing.New). Not read by Load.
	TracerProvider trace.TracerProvider
	// Auth is how callers of the API are authenticated (AUTH_*, package
	// auth); without keys the API is open.
	Auth auth.Config
}

// DefaultInboxRetention is INBOX_RETENTION unless set: a week, far beyond
// any redelivery of a running system (records applied but not yet
// committed when a consumer stopped, delivered again when it is back).
const DefaultInboxRetention = 7 * 24 * time.Hour

// MinInboxRetention is the shortest INBOX_RETENTION accepted: a redelivery
// comes when a consumer is back after a crash or a restart, and an hour is
// as short as that can safely be assumed to take.
const MinInboxRetention = time.Hour

// Defaults are a service's own defaults for Load.
type Defaults struct {
	DatabaseURL, HTTPAddr, ConsumerGroup string
}

// Load reads Config from getenv (os.Getenv in main), with the service's
// defaults.
func Load(getenv func(string) string, d Defaults) (Config, error) {
	get := func(key, def string) string {
		if v := strings.TrimSpace(getenv(key)); v != "" {
			return v
		}
		return def
	}
	cfg := Config{
		DatabaseURL:      get("DATABASE_URL", d.DatabaseURL),
		HTTPAddr:         get("HTTP_ADDR", d.HTTPAddr),
		OrdersTopic:      get("ORDERS_TOPIC", OrdersTopic),
		CustomersTopic:   get("CUSTOMERS_TOPIC", CustomersTopic),
		ConsumerGroup:    get("CONSUMER_GROUP", d.ConsumerGroup),
		ConsumerInstance: get("CONSUMER_INSTANCE_ID", ""),
		PprofAddr:        get("PPROF_ADDR", ""),
	}
	for _, b := range strings.Split(get("KAFKA_BROKERS", "127.0.0.1:9092"), ",") {
		if b = strings.TrimSpace(b); b != "" {
			cfg.KafkaBrokers = append(cfg.KafkaBrokers, b)
		}
	}
	var err error
	if cfg.Logging, err = LoadLogging(getenv); err != nil {
		return cfg, err
	}
	if cfg.Auth, err = auth.Load(getenv); err != nil {
		return cfg, err
	}
	if cfg.Kafka, err = kafkaconn.Load(getenv); err != nil {
		return cfg, err
	}
	if cfg.ShutdownTimeout, err = time.ParseDuration(get("SHUTDOWN_TIMEOUT", "10s")); err != nil {
		return cfg, fmt.Errorf("SHUTDOWN_TIMEOUT: %w", err)
	}
	if cfg.SnapshotEvery, err = strconv.Atoi(get("SNAPSHOT_EVERY", "100")); err != nil {
		return cfg, fmt.Errorf("SNAPSHOT_EVERY: %w", err)
	}
	if cfg.InboxRetention, err = time.ParseDuration(get("INBOX_RETENTION", DefaultInboxRetention.String())); err != nil {
		return cfg, fmt.Errorf("INBOX_RETENTION: %q is not a Go duration such as 168h", getenv("INBOX_RETENTION"))
	}
	if cfg.InboxRetention <= 0 {
		return cfg, fmt.Errorf("INBOX_RETENTION must be positive, not %s", cfg.InboxRetention)
	}
	return cfg, cfg.Validate()
}

// KafkaConn returns the options every Kafka client of the service connects
// with (Kafka's TLS and SASL), logging a warning if they expose the
// password.
func (c Config) KafkaConn(log *slog.Logger) ([]kgo.Opt, error) {
	if w := c.Kafka.Warning(); w != "" && log != nil {
		log.Warn(w)
	}
	opts, err := c.Kafka.Opts()
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	return opts, nil
}

// Validate reports a configuration a service cannot start with.
func (c Config) Validate() error {
	switch {
	case c.DatabaseURL == "":
		return errors.New("DATABASE_URL is empty")
	case len(c.KafkaBrokers) == 0:
		return errors.New("KAFKA_BROKERS is empty")
	case c.HTTPAddr == "":
		return errors.New("HTTP_ADDR is empty")
	case c.ShutdownTimeout <= 0:
		return errors.New("SHUTDOWN_TIMEOUT must be positive")
	case c.ConsumerGroup == "":
		return errors.New("CONSUMER_GROUP is empty")
	case !validInstance(c.ConsumerInstance):
		return fmt.Errorf("CONSUMER_INSTANCE_ID %q: at most 249 letters, digits, '.', '_' or '-'", c.ConsumerInstance)
	case c.InboxRetention != 0 && c.InboxRetention < MinInboxRetention:
		return fmt.Errorf("INBOX_RETENTION must be at least %s, not %s: a redelivery after a restart would be applied again", MinInboxRetention, c.InboxRetention)
	}
	if _, err := pgxpool.ParseConfig(c.DatabaseURL); err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	return nil
}

// String keeps the passwords and secrets out of a %v.
func (c Config) String() string { return c.LogValue().String() }

// LogValue logs the configuration with the database password masked.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("database", pgdb.Redact(c.DatabaseURL)),
		slog.String("kafka", strings.Join(c.KafkaBrokers, ",")),
		slog.Any("kafka_conn", c.Kafka),
		slog.String("http", c.HTTPAddr),
		slog.String("topics", c.OrdersTopic+","+c.CustomersTopic),
		slog.Any("auth", c.Auth),
	)
}

// OpenDB connects to url, creating its database on the same server if it
// is missing, and applies ms. With tp not nil, the statements run under a
// span get spans of their own (otelpgx's); those of background work outside
// any trace (the relay's polls, the pruners) get none.
func OpenDB(ctx context.Context, url string, tp trace.TracerProvider, ms ...pgmigrate.Migration) (*pgxpool.Pool, error) {
	// JIT compiles a statement the planner thinks is big, for tens of
	// milliseconds: a loss for statements that run in one or two, as all of
	// ours do. Seen turning a 2 ms load of 300 streams into 50.
	cfg, err := pgxpool.ParseConfig(WithSetting(url, "jit", "off"))
	if err != nil {
		return nil, err
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = 20 // the consumer applies up to 8 partitions at once, beside the API
	}
	if !strings.Contains(url, "pool_min_conns") {
		// Connections are opened at start, not all at once when traffic
		// first rises: on a small machine a burst of new backends (each a
		// process that loads its catalog caches) stalls everything else.
		cfg.MinConns = 4
	}
	if db := cfg.ConnConfig.Database; db != "" && db != "postgres" {
		if err := pgdb.Ensure(ctx, pgdb.WithDatabase(url, "postgres"), db); err != nil {
			return nil, err
		}
	}
	if tp != nil {
		cfg.ConnConfig.Tracer = otelpgx.NewTracer(
			otelpgx.WithTracerProvider(tp),
			otelpgx.WithMeterProvider(metricnoop.NewMeterProvider()), // the pool's metrics are Prometheus's
			otelpgx.WithDisableConnectionDetailsInAttributes(),
		)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pgmigrate.Apply(ctx, pool, ms...); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// Parts are what a service runs.
type Parts struct {
	HTTP     http.Handler
	Relay    *outbox.Relay
	Notifier *outbox.Notifier
	Consumer *outbox.Consumer
	// Worker, for a service whose consuming is more than one Consumer,
	// runs in the consumer's place: after the API stops, it is told to stop
	// and waited for.
	Worker func(ctx context.Context) error
}

// ServePprof serves Go's profiles on addr until ctx is done.
func ServePprof(ctx context.Context, log *slog.Logger, addr string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof server failed", "err", err)
		}
	}()
	context.AfterFunc(ctx, func() { srv.Close() })
}

// Run runs parts until ctx is done or one of them fails, then shuts down in
// order: the API stops taking requests and drains those in flight (whose
// commits are still published), then the consumer finishes the batch in hand
// and commits its offsets, then the relay and the notifier stop. Rows not yet
// published stay in the outbox for the next start.
func Run(ctx context.Context, log *slog.Logger, ln net.Listener, parts Parts, drain time.Duration) error {
	failed := make(chan error, 4)
	fail := func(name string, err error) {
		if err != nil {
			failed <- fmt.Errorf("%s: %w", name, err)
		}
	}

	// The relay and notifier outlive the API and the consumer, so that what
	// they commit while stopping is published.
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRelay()
	var relays sync.WaitGroup
	if parts.Relay != nil {
		relays.Go(func() { fail("relay", parts.Relay.Run(relayCtx)) })
	}
	if parts.Notifier != nil {
		relays.Go(func() { fail("notifier", parts.Notifier.Run(relayCtx)) })
	}

	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	var consumer, api sync.WaitGroup
	if parts.Consumer != nil {
		consumer.Go(func() { fail("consumer", parts.Consumer.Run(workCtx)) })
	}
	if parts.Worker != nil {
		consumer.Go(func() { fail("worker", parts.Worker(workCtx)) })
	}
	apiCtx, stopAPI := context.WithCancel(workCtx)
	defer stopAPI()
	api.Go(func() { fail("http", httpapi.Serve(apiCtx, log, parts.HTTP, ln, drain)) })

	var err error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-failed:
		log.Error("a part failed; shutting down", "err", err)
	}
	stopAPI()
	api.Wait()
	stopWork()
	consumer.Wait()
	// Let the relay publish what the last requests and batches committed;
	// whatever it cannot in time stays in the outbox for the next start.
	if parts.Relay != nil {
		flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
		switch err := parts.Relay.Flush(flushCtx); {
		case errors.Is(err, outbox.ErrNotLeader):
			// Another instance's relay publishes what this one committed.
		case err != nil:
			log.Warn("relay did not publish everything before stopping; the outbox keeps the rest", "err", err)
		}
		cancel()
	}
	stopRelay()
	relays.Wait()
	close(failed)
	for e := range failed {
		if err == nil {
			err = e
		}
	}
	return err
}

// WithSetting returns the database URL with a server setting that every
// connection opened from it will carry, unless the URL already sets it.
func WithSetting(dbURL, name, value string) string {
	if strings.Contains(dbURL, name+"=") {
		return dbURL
	}
	if u, err := url.Parse(dbURL); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set(name, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dbURL + " " + name + "=" + value // keyword/value form
}

// validInstance reports whether id is empty or a name Kafka takes as a
// group instance ID.
func validInstance(id string) bool {
	if len(id) > 249 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}
