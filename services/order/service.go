// Package order is the order service: users place and cancel orders over
// REST, and in the saga it approves an order when the customer service
// reserved its credit and rejects it when the customer service refused.
//
// Reading order: domain/ holds the Order aggregate; commands.go what the
// REST API can ask of it; saga.go how the service reacts to the customer
// service's credit decisions; http.go the REST API; this file wires the
// parts.
package order

import (
	"context"
	"embed"
	"errors"
	"log/slog"
	"net"

	"github.com/labstack/echo/v4"

	"github.com/eventsaga/eventsaga/internal/pgdb"
	"github.com/eventsaga/eventsaga/internal/pgmigrate"
	"github.com/eventsaga/eventsaga/internal/platform"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/pkg/outbox"
	"github.com/eventsaga/eventsaga/services/order/domain"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migration is the order service's own schema (idempotency keys).
func Migration() pgmigrate.Migration {
	return pgmigrate.Migration{VersionTable: "order_schema_version", FS: migrations, Dir: "migrations"}
}

// Config is the order service's configuration.
type Config = platform.Config

// LoadConfig reads the configuration from getenv (os.Getenv in main).
func LoadConfig(getenv func(string) string) (Config, error) {
	return platform.Load(getenv, platform.Defaults{
		DatabaseURL: pgdb.WithDatabase(pgdb.Local, "orders"), HTTPAddr: ":8080", ConsumerGroup: "order-service",
	})
}

// Service is a running order service's parts.
type Service struct {
	cfg      Config
	log      *slog.Logger
	registry *events.Registry
	bb       *platform.Backbone
	repo     *eventstore.Repository[domain.Order]
	http     *echo.Echo
}

// New connects to the database (creating and migrating it if need be) and
// prepares the service's parts; Serve runs them.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Service, error) {
	s := &Service{cfg: cfg, log: log, registry: events.NewRegistry()}
	if err := errors.Join(orders.Register(s.registry), customers.Register(s.registry)); err != nil {
		return nil, err
	}
	var err error
	if s.bb, err = platform.NewBackbone(ctx, platform.BackboneConfig{
		Config: cfg, Registry: s.registry, Migrations: []pgmigrate.Migration{Migration()},
		Topic: cfg.CustomersTopic, BatchHandler: s.applyCreditDecisions, Logger: log,
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
	s.http = s.routes()
	return s, nil
}

// Serve runs the API on ln, the relay and the consumer until ctx is done,
// then shuts them down in order (see platform.Run) and closes the database.
func (s *Service) Serve(ctx context.Context, ln net.Listener) error {
	return s.bb.Serve(ctx, ln, s.http)
}

// ConsumerStats is what the saga consumer has done since the service started.
func (s *Service) ConsumerStats() outbox.ConsumerStats { return s.bb.Consumer.Stats() }
