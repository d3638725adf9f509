// Package customer is the customer service: it registers customers with a
// credit limit, and in the order saga it reserves credit for each order
// placed (or refuses it) and releases the credit of orders cancelled, or
// rejected after it reserved (for their deadline).
//
// Reading order: domain/ holds the Customer aggregate; commands.go what
// the REST API can ask of it; saga.go how the service reacts to the order
// service's events; http.go the REST API; this file wires the parts.
package customer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsaga/eventsaga/internal/auth"
	"github.com/eventsaga/eventsaga/internal/httpapi"
	"github.com/eventsaga/eventsaga/internal/pgdb"
	"github.com/eventsaga/eventsaga/internal/platform"
	"github.com/eventsaga/eventsaga/internal/tracing"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/pkg/outbox"
	"github.com/eventsaga/eventsaga/services/customer/domain"
)

// Config is the customer service's configuration.
type Config = platform.Config

// LoadConfig reads the configuration from getenv (os.Getenv in main).
func LoadConfig(getenv func(string) string) (Config, error) {
	return platform.Load(getenv, platform.Defaults{
		DatabaseURL: pgdb.WithDatabase(pgdb.Local, "customers"), HTTPAddr: ":8081", ConsumerGroup: "customer-service",
	})
}

// snapshotSchema names the JSON form of domain.Customer in snapshots.
// customer/v1 held the reservations as a JSON object; v2 holds them as one
// base64 string (domain.Reservations); v3 adds the settled sum. A snapshot
// of an older schema is ignored: a customer's first load after the upgrade
// folds its whole stream, and its next snapshot is v3.
const snapshotSchema = "customer/v3"

// Service is a running customer service's parts.
type Service struct {
	cfg      Config
	log      *slog.Logger
	auth     *auth.Verifier // nil: the open API
	registry *events.Registry
	bb       *platform.Backbone
	repo     *eventstore.Repository[domain.Customer]
	// hot keeps the customers the saga decides on (see eventstore.Cache).
	hot    *eventstore.Cache[domain.Customer]
	http   *echo.Echo
	tracer trace.Tracer // the commands' spans (tracing.Tracer: no-op with tracing off)
}

// New connects to the database (creating and migrating it if need be) and
// prepares the service's parts; Serve runs them.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Service, error) {
	s := &Service{cfg: cfg, log: log, registry: events.NewRegistry(), hot: eventstore.NewCache[domain.Customer](100_000), tracer: tracing.Tracer(cfg.TracerProvider)}
	if err := errors.Join(customers.Register(s.registry), orders.Register(s.registry)); err != nil {
		return nil, err
	}
	var err error
	if s.bb, err = platform.NewBackbone(ctx, platform.BackboneConfig{
		Config: cfg, Registry: s.registry,
		Topic: cfg.OrdersTopic, Planner: s.planOrderEvents, Logger: log,
	}); err != nil {
		return nil, err
	}
	if s.repo, err = eventstore.NewRepository(s.bb.Store, eventstore.RepositoryConfig[domain.Customer]{
		AggregateType: customers.AggregateType, Topic: cfg.CustomersTopic,
		Apply: domain.Apply, SnapshotSchema: snapshotSchema,
	}); err != nil {
		s.bb.Pool.Close()
		return nil, err
	}
	if s.auth, err = auth.New(ctx, cfg.Auth, nil, log); err != nil {
		s.bb.Pool.Close()
		return nil, err
	}
	s.http = s.routes()
	if err := httpapi.Instrument(s.http, s.bb.Metrics, log); err != nil {
		s.bb.Pool.Close()
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return s, nil
}

// Serve runs the API on ln, the relay and the consumer until ctx is done,
// then shuts them down in order (see platform.Run) and closes the database.
func (s *Service) Serve(ctx context.Context, ln net.Listener) error {
	return s.bb.Serve(ctx, ln, s.http)
}

// ConsumerStats is what the saga consumer has done since the service started.
func (s *Service) ConsumerStats() outbox.ConsumerStats { return s.bb.Consumer.Stats() }
