package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsaga/eventsaga/internal/pgmigrate"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/pkg/outbox"
)

// BackboneConfig describes a write service's event-sourcing backbone.
type BackboneConfig struct {
	Config
	Registry *events.Registry
	// Migrations of the service's own tables, after the event store's and
	// the outbox's.
	Migrations []pgmigrate.Migration
	// Topic is consumed by Config.ConsumerGroup with Handler,
	// BatchHandler or Planner (the service's part of the saga).
	Topic        string
	Handler      outbox.Handler
	BatchHandler outbox.BatchHandler
	Planner      outbox.Planner
	Logger       *slog.Logger
	// Pruners delete the service's own rows past their retention, beside
	// the inbox's (InboxRetention), which every backbone prunes.
	Pruners []Pruner
}

// Backbone is what every write service stands on: its database, an event
// store whose commits wake a relay in the same process, and a consumer whose
// handler's conflicts are retried and whose commits wake the relay too.
type Backbone struct {
	Pool     *pgxpool.Pool
	Store    *eventstore.Store
	Relay    *outbox.Relay
	Notifier *outbox.Notifier
	Consumer *outbox.Consumer
	// Metrics is the service's registry (Config.Metrics or a new one): the
	// relay's, the consumer's, the outbox's and the pool's metrics are
	// registered in it; the service adds its own and serves it.
	Metrics *prometheus.Registry
	log     *slog.Logger
	drain   Config
	pruners []Pruner
}

// NewBackbone opens (creating and migrating) the database and builds the
// parts; Serve runs them.
func NewBackbone(ctx context.Context, cfg BackboneConfig) (*Backbone, error) {
	ms := append([]pgmigrate.Migration{eventstore.Migration(), outbox.Migration()}, cfg.Migrations...)
	pool, err := OpenDB(ctx, cfg.DatabaseURL, cfg.TracerProvider, ms...)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	b := &Backbone{Pool: pool, log: cfg.Logger, drain: cfg.Config}
	if err := b.build(cfg); err != nil {
		pool.Close()
		return nil, err
	}
	return b, nil
}

func (b *Backbone) build(cfg BackboneConfig) error {
	retention := cfg.InboxRetention
	if retention == 0 {
		retention = DefaultInboxRetention
	}
	b.pruners = append([]Pruner{{What: "inbox", Retention: retention, Prune: outbox.PruneInbox}}, cfg.Pruners...)
	b.Metrics = cfg.registry()
	om, err := outbox.NewMetrics(b.Metrics, cfg.Logger)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	conn, err := cfg.KafkaConn(cfg.Logger)
	if err != nil {
		return err
	}
	if b.Relay, err = outbox.NewRelay(outbox.RelayConfig{Pool: b.Pool, Brokers: cfg.KafkaBrokers, ClientOpts: conn, Logger: cfg.Logger, Metrics: om, TracerProvider: cfg.TracerProvider}); err != nil {
		return err
	}
	b.Notifier = outbox.NewNotifier(b.Pool, "", cfg.Logger)
	b.Notifier.SetLocalRelay(b.Relay)
	if b.Store, err = eventstore.New(eventstore.Config{Pool: b.Pool, Registry: cfg.Registry, Notifier: b.Notifier, SnapshotEvery: cfg.SnapshotEvery, TracerProvider: cfg.TracerProvider}); err != nil {
		return err
	}
	b.Consumer, err = outbox.NewConsumer(outbox.ConsumerConfig{
		Pool: b.Pool, Brokers: cfg.KafkaBrokers, ConnOpts: conn, Group: cfg.ConsumerGroup, InstanceID: cfg.ConsumerInstance, Topics: []string{cfg.Topic},
		Handler: cfg.Handler, BatchHandler: cfg.BatchHandler, Planner: cfg.Planner, Logger: cfg.Logger,
		// On a real cluster topics are not created on first use, and they
		// must have the system's partition count.
		EnsureTopics: []string{cfg.OrdersTopic, cfg.CustomersTopic},
		// A poll is applied in one transaction: the partitions of one
		// instance never race each other for the same aggregates.
		AcrossPartitions: true,
		// A lost optimistic race is retried, never dead-lettered: a dead
		// letter would leave its saga unfinished.
		Transient:      func(err error) bool { return errors.Is(err, eventstore.ErrConflict) },
		AfterCommit:    func([]outbox.Delivery) { b.Notifier.Notify() },
		Metrics:        om,
		TracerProvider: cfg.TracerProvider,
	})
	if err != nil {
		return err
	}
	lag := om.LagCollector(func() (outbox.LagTarget, bool) {
		return outbox.LagTarget{Client: b.Consumer.Client(), Group: cfg.ConsumerGroup, Topics: []string{cfg.Topic}}, true
	})
	for _, c := range []prometheus.Collector{NewPoolCollector("main", b.Pool), om.OutboxCollector(b.Pool), lag} {
		if err := b.Metrics.Register(c); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	return nil
}

// Serve runs api on ln beside the relay, the consumer and the pruners until
// ctx is done, shuts down in order (see Run) and closes the database.
func (b *Backbone) Serve(ctx context.Context, ln net.Listener, api http.Handler) error {
	defer b.Pool.Close()
	b.log.Info("running", "addr", ln.Addr().String(), "config", b.drain)
	if b.drain.PprofAddr != "" {
		ServePprof(ctx, b.log, b.drain.PprofAddr)
	}
	// Pruning stops as soon as shutting down starts: nothing waits for it,
	// and what it leaves is pruned by the next round anywhere.
	pruneCtx, stopPruning := context.WithCancel(ctx)
	var pruners sync.WaitGroup
	pruners.Go(func() { defaultPruning.run(pruneCtx, b.log, b.Pool, b.pruners) })
	defer pruners.Wait()
	defer stopPruning()
	return Run(ctx, b.log, ln, Parts{HTTP: api, Relay: b.Relay, Notifier: b.Notifier, Consumer: b.Consumer}, b.drain.ShutdownTimeout)
}

// Ready reports whether the database and Kafka answer.
func (b *Backbone) Ready(ctx context.Context) error {
	if err := b.Pool.Ping(ctx); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	if err := b.Consumer.Client().Ping(ctx); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	if !b.Consumer.Consuming() {
		return errors.New("kafka: the consumer has not got its topics yet")
	}
	return nil
}
