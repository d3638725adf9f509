package customer

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/internal/tracing"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/services/customer/domain"
)

// conflictRetries is how often a command decides again after losing a race
// to another writer of the same customer (the consumer, say).
const conflictRetries = 10

// View is a customer as the API shows it.
type View struct {
	CustomerID  uuid.UUID    `json:"customer_id"`
	Name        string       `json:"name"`
	CreditLimit events.Money `json:"credit_limit"`
	Reserved    events.Money `json:"reserved"`
	Available   events.Money `json:"available"`
	Version     int64        `json:"version"`
}

func view(agg eventstore.Aggregate[domain.Customer]) View {
	c := agg.State
	return View{CustomerID: agg.ID, Name: c.Name, CreditLimit: c.CreditLimit, Reserved: c.Reserved, Available: c.Available(), Version: agg.Version}
}

// commandMeta is the metadata of events a REST command causes: the
// customer's own stream is the correlation, the command the cause.
func commandMeta(customerID uuid.UUID, traceParent string) eventstore.Meta {
	return eventstore.Meta{CorrelationID: customerID, CausationID: eventstore.NewID(), TraceParent: traceParent}
}

// Register creates a customer.
func (s *Service) Register(ctx context.Context, name string, limit events.Money, traceParent string) (_ View, err error) {
	ctx, span := s.tracer.Start(ctx, "RegisterCustomer")
	defer func() { tracing.End(span, err) }()
	id := eventstore.NewID()
	evs, err := domain.Register(id, name, limit)
	if err != nil {
		return View{}, err
	}
	agg := s.repo.New(id)
	var u eventstore.UnitOfWork
	if _, err := s.repo.Stage(&u, &agg, commandMeta(id, tracing.Carried(ctx, traceParent)), evs...); err != nil {
		return View{}, err
	}
	if err := s.bb.Store.Commit(ctx, &u); err != nil {
		return View{}, fmt.Errorf("register customer: %w", err)
	}
	return view(agg), nil
}

// Get returns a registered customer; domain.ErrNotFound otherwise.
func (s *Service) Get(ctx context.Context, id uuid.UUID) (View, error) {
	agg, err := s.load(ctx, id)
	if err != nil {
		return View{}, err
	}
	return view(agg), nil
}

// ChangeCreditLimit sets a customer's credit limit.
func (s *Service) ChangeCreditLimit(ctx context.Context, id uuid.UUID, limit events.Money, traceParent string) (_ View, err error) {
	ctx, span := s.tracer.Start(ctx, "ChangeCreditLimit")
	defer func() { tracing.End(span, err) }()
	traceParent = tracing.Carried(ctx, traceParent)
	var out View
	err = eventstore.Retry(ctx, conflictRetries, func(ctx context.Context) error {
		agg, err := s.load(ctx, id)
		if err != nil {
			return err
		}
		evs, err := agg.State.ChangeCreditLimit(limit)
		if err != nil {
			return err
		}
		var u eventstore.UnitOfWork
		if _, err := s.repo.Stage(&u, &agg, commandMeta(id, traceParent), evs...); err != nil {
			return err
		}
		if err := s.bb.Store.Commit(ctx, &u); err != nil {
			return err
		}
		out = view(agg)
		return nil
	})
	return out, err
}

// Events returns a registered customer's events, oldest first.
func (s *Service) Events(ctx context.Context, id uuid.UUID) ([]events.Envelope, error) {
	if _, err := s.load(ctx, id); err != nil {
		return nil, err
	}
	return s.repo.Events(ctx, s.bb.Pool, id)
}

// load returns a registered customer, or domain.ErrNotFound: a stream that
// holds only refusals of orders is no customer.
func (s *Service) load(ctx context.Context, id uuid.UUID) (eventstore.Aggregate[domain.Customer], error) {
	agg, err := s.repo.Load(ctx, s.bb.Pool, id)
	if errors.Is(err, eventstore.ErrNotFound) || err == nil && !agg.State.Registered {
		return agg, domain.ErrNotFound
	}
	return agg, err
}
