// Package order is the order service: users place and cancel orders over
// REST, and in the saga it approves an order when the customer service
// reserved its credit, rejects it when the customer service refused, and
// rejects it with DEADLINE_EXCEEDED when no decision came within
// ORDER_DEADLINE.
//
// Reading order: domain/ holds the Order aggregate; commands.go what the
// REST API can ask of it; saga.go how the service reacts to the customer
// service's credit decisions; deadline.go how it rejects the orders that got
// none in time; http.go the REST API; metrics.go how the saga's outcomes
// and latency are counted; this file wires the parts.
package order

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsaga/eventsaga/internal/auth"
	"github.com/eventsaga/eventsaga/internal/httpapi"
	"github.com/eventsaga/eventsaga/internal/pgdb"
	"github.com/eventsaga/eventsaga/internal/pgmigrate"
	"github.com/eventsaga/eventsaga/internal/platform"
	"github.com/eventsaga/eventsaga/internal/tracing"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/pkg/outbox"
	"github.com/eventsaga/eventsaga/services/order/domain"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migration is the order service's own schema (idempotency keys and their
// retention, the orders that may still be PENDING).
func Migration() pgmigrate.Migration {
	return pgmigrate.Migration{VersionTable: "order_schema_version", FS: migrations, Dir: "migrations"}
}

// DefaultDeadline is ORDER_DEADLINE unless set: well above the pause a
// consumer-group failover can cause (up to about 15 s), so that a failover
// never rejects an order whose credit decision is merely late.
const DefaultDeadline = 30 * time.Second

// failoverPause is how long a consumer-group failover can hold up credit
// decisions; a deadline below it is allowed (tests use a few seconds) but
// warned about.
const failoverPause = 15 * time.Second

// Config is the order service's configuration: what every service reads,
// and the saga's deadline.
type Config struct {
	platform.Config
	// Deadline is how long an order may stay PENDING without a credit
	// decision before it is rejected with DEADLINE_EXCEEDED
	// (ORDER_DEADLINE, a Go duration). Zero means DefaultDeadline.
	Deadline time.Duration
	// KeyRetention is how long an Idempotency-Key is remembered
	// (IDEMPOTENCY_KEY_RETENTION, a Go duration); older keys are pruned in
	// the background. Zero means DefaultKeyRetention.
	KeyRetention time.Duration
}

// LoadConfig reads the configuration from getenv (os.Getenv in main).
func LoadConfig(getenv func(string) string) (Config, error) {
	base, err := platform.Load(getenv, platform.Defaults{
		DatabaseURL: pgdb.WithDatabase(pgdb.Local, "orders"), HTTPAddr: ":8080", ConsumerGroup: "order-service",
	})
	cfg := Config{Config: base, Deadline: DefaultDeadline, KeyRetention: DefaultKeyRetention}
	if err != nil {
		return cfg, err
	}
	for _, d := range []struct {
		name, example string
		to            *time.Duration
	}{
		{"ORDER_DEADLINE", "30s or 1m", &cfg.Deadline},
		{"IDEMPOTENCY_KEY_RETENTION", "24h or 90m", &cfg.KeyRetention},
	} {
		v := strings.TrimSpace(getenv(d.name))
		if v == "" {
			continue
		}
		parsed, err := time.ParseDuration(v)
		if err != nil {
			return cfg, fmt.Errorf("%s: %q is not a Go duration such as %s", d.name, v, d.example)
		}
		if parsed <= 0 {
			return cfg, fmt.Errorf("%s must be positive, not %s", d.name, v)
		}
		*d.to = parsed
	}
	return cfg, cfg.Validate()
}

// Validate reports a configuration the service cannot start with.
func (c Config) Validate() error {
	if c.Deadline < 0 {
		return fmt.Errorf("the order deadline must be positive, not %s", c.Deadline)
	}
	if c.KeyRetention < 0 {
		return fmt.Errorf("the idempotency key retention must be positive, not %s", c.KeyRetention)
	}
	return c.Config.Validate()
}

// Service is a running order service's parts.
type Service struct {
	cfg      Config
	log      *slog.Logger
	auth     *auth.Verifier // nil: the open API
	registry *events.Registry
	bb       *platform.Backbone
	repo     *eventstore.Repository[domain.Order]
	http     *echo.Echo
	saga     *sagaMetrics
	tracer   trace.Tracer // the commands' spans (tracing.Tracer: no-op with tracing off)
}

// New connects to the database (creating and migrating it if need be) and
// prepares the service's parts; Serve runs them.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Deadline == 0 {
		cfg.Deadline = DefaultDeadline
	}
	if cfg.KeyRetention == 0 {
		cfg.KeyRetention = DefaultKeyRetention
	}
	if cfg.Deadline < failoverPause {
		log.Warn("the order deadline is shorter than a consumer-group failover can hold up credit decisions: a failover may reject orders that would have been approved",
			"order_deadline", cfg.Deadline, "failover_pause", failoverPause)
	}
	s := &Service{cfg: cfg, log: log, registry: events.NewRegistry(), tracer: tracing.Tracer(cfg.TracerProvider)}
	if err := errors.Join(orders.Register(s.registry), customers.Register(s.registry)); err != nil {
		return nil, err
	}
	var err error
	if s.bb, err = platform.NewBackbone(ctx, platform.BackboneConfig{
		Config: cfg.Config, Registry: s.registry, Migrations: []pgmigrate.Migration{Migration()},
		Topic: cfg.CustomersTopic, Planner: s.planCreditDecisions, Logger: log,
		Pruners: []platform.Pruner{{What: "idempotency keys", Retention: cfg.KeyRetention, Prune: PruneKeys}},
	}); err != nil {
		return nil, err
	}
	if s.repo, err = eventstore.NewRepository(s.bb.Store, eventstore.RepositoryConfig[domain.Order]{
		AggregateType: orders.AggregateType, Topic: cfg.OrdersTopic,
		Apply: domain.Apply, SnapshotSchema: "order/v1",
	}); err != nil {
		s.bb.Pool.Close()
		return nil, err
	}
	if s.auth, err = auth.New(ctx, cfg.Auth, nil, log); err != nil {
		s.bb.Pool.Close()
		return nil, err
	}
	s.http = s.routes()
	if s.saga, err = newSagaMetrics(s.bb.Metrics); err == nil {
		err = httpapi.Instrument(s.http, s.bb.Metrics, log)
	}
	if err != nil {
		s.bb.Pool.Close()
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return s, nil
}

// Serve runs the API on ln, the relay, the consumer and the deadline until
// ctx is done, then shuts them down in order (see platform.Run) and closes
// the database.
func (s *Service) Serve(ctx context.Context, ln net.Listener) error {
	// The deadline stops with ctx, while the API drains. What it commits
	// until then is in the outbox: published by the relay's last flush, or
	// at the next start. Should another part fail first, the database may
	// close under it for a moment; it stops right after.
	deadlineCtx, stopDeadline := context.WithCancel(ctx)
	var deadline sync.WaitGroup
	deadline.Go(func() { s.enforceDeadlines(deadlineCtx) })
	defer deadline.Wait()
	defer stopDeadline()
	return s.bb.Serve(ctx, ln, s.http)
}

// ConsumerStats is what the saga consumer has done since the service started.
func (s *Service) ConsumerStats() outbox.ConsumerStats { return s.bb.Consumer.Stats() }
