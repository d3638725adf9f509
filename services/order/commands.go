package order

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsaga/eventsaga/internal/tracing"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/services/order/domain"
)

// conflictRetries is how often a command decides again after losing a race
// to another writer of the same order (the saga consumer, say).
const conflictRetries = 10

// ErrKeyReused: an Idempotency-Key came again with another request.
var ErrKeyReused = errors.New("idempotency key reused with a different request")

// Placed is the answer to placing an order, and what a repeated request
// with the same Idempotency-Key gets again.
type Placed struct {
	OrderID uuid.UUID    `json:"order_id"`
	Status  string       `json:"status"`
	Total   events.Money `json:"total"`
	Version int64        `json:"version"`
}

// View is an order as the API shows it.
type View struct {
	OrderID         uuid.UUID     `json:"order_id"`
	CustomerID      uuid.UUID     `json:"customer_id"`
	Status          string        `json:"status"`
	Total           events.Money  `json:"total"`
	Items           []orders.Item `json:"items"`
	RejectionReason *string       `json:"rejection_reason"`
	Version         int64         `json:"version"`
}

func view(agg eventstore.Aggregate[domain.Order]) View {
	o := agg.State
	v := View{OrderID: agg.ID, CustomerID: o.CustomerID, Status: o.Status, Total: o.Total, Items: o.Items, Version: agg.Version}
	if o.RejectionReason != "" {
		v.RejectionReason = &o.RejectionReason
	}
	return v
}

// PlaceOrder is a request to place an order.
type PlaceOrder struct {
	CustomerID uuid.UUID
	Items      []orders.Item
	// IdempotencyKey, if set, makes the request safe to repeat: the same key
	// with the same request answers as the first time and creates nothing.
	IdempotencyKey string
	TraceParent    string
}

// hash identifies the request for its Idempotency-Key; two requests with
// the same fields hash alike however their JSON was spaced.
func (p PlaceOrder) hash() []byte {
	b, _ := json.Marshal(struct {
		CustomerID uuid.UUID     `json:"c"`
		Items      []orders.Item `json:"i"`
	}{p.CustomerID, p.Items})
	h := sha256.Sum256(b)
	return h[:]
}

const (
	selectKey = `SELECT request_hash, response FROM idempotency_keys WHERE key = $1`
	insertKey = `INSERT INTO idempotency_keys (key, request_hash, order_id, response) VALUES ($1, $2, $3, $4)`
)

// Place creates a PENDING order; the saga decides it from there.
func (s *Service) Place(ctx context.Context, p PlaceOrder) (_ Placed, err error) {
	ctx, span := s.tracer.Start(ctx, "PlaceOrder")
	defer func() { tracing.End(span, err) }()
	if p.IdempotencyKey != "" {
		if placed, found, err := s.answeredBefore(ctx, p); found || err != nil {
			return placed, err
		}
	}
	id := eventstore.NewID()
	span.SetAttributes(tracing.CorrelationID(id))
	evs, err := domain.Place(id, p.CustomerID, p.Items)
	if err != nil {
		return Placed{}, err
	}
	agg := s.repo.New(id)
	var u eventstore.UnitOfWork
	meta := eventstore.Meta{CorrelationID: id, CausationID: eventstore.NewID(), TraceParent: tracing.Carried(ctx, p.TraceParent)}
	envs, err := s.repo.Stage(&u, &agg, meta, evs...)
	if err != nil {
		return Placed{}, err
	}
	u.Exec(insertPending, [16]byte(id), [16]byte(envs[0].EventID)) // its deadline runs from now
	placed := Placed{OrderID: id, Status: orders.StatusPending, Total: evs[0].(orders.OrderCreated).Total, Version: 1}
	if p.IdempotencyKey != "" {
		response, _ := json.Marshal(placed)
		u.Exec(insertKey, p.IdempotencyKey, p.hash(), [16]byte(id), response)
	}
	err = s.bb.Store.Commit(ctx, &u)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.ConstraintName == "idempotency_keys_pkey" {
		// The same key in a request running beside this one won: answer as
		// it did. Nothing of this attempt was committed.
		placed, _, err := s.answeredBefore(ctx, p)
		return placed, err
	}
	if err != nil {
		return Placed{}, fmt.Errorf("place order: %w", err)
	}
	return placed, nil
}

// answeredBefore looks up p's Idempotency-Key.
func (s *Service) answeredBefore(ctx context.Context, p PlaceOrder) (Placed, bool, error) {
	var hash, response []byte
	err := s.bb.Pool.QueryRow(ctx, selectKey, p.IdempotencyKey).Scan(&hash, &response)
	if errors.Is(err, pgx.ErrNoRows) {
		return Placed{}, false, nil
	}
	if err != nil {
		return Placed{}, false, fmt.Errorf("idempotency key: %w", err)
	}
	if string(hash) != string(p.hash()) {
		return Placed{}, true, ErrKeyReused
	}
	var placed Placed
	if err := json.Unmarshal(response, &placed); err != nil {
		return Placed{}, true, fmt.Errorf("idempotency key: stored answer: %w", err)
	}
	return placed, true, nil
}

// Get returns an order as it is now.
func (s *Service) Get(ctx context.Context, id uuid.UUID) (View, error) {
	return s.viewOf(s.repo.Load(ctx, s.bb.Pool, id))
}

// GetVersion returns an order as it was at version v.
func (s *Service) GetVersion(ctx context.Context, id uuid.UUID, v int64) (View, error) {
	return s.viewOf(s.repo.LoadVersion(ctx, s.bb.Pool, id, v))
}

// GetAsOf returns an order as it was at time t.
func (s *Service) GetAsOf(ctx context.Context, id uuid.UUID, t time.Time) (View, error) {
	return s.viewOf(s.repo.LoadAsOf(ctx, s.bb.Pool, id, t))
}

func (s *Service) viewOf(agg eventstore.Aggregate[domain.Order], err error) (View, error) {
	if errors.Is(err, eventstore.ErrNotFound) {
		return View{}, domain.ErrNotFound
	}
	if err != nil {
		return View{}, err
	}
	return view(agg), nil
}

// Cancel cancels a PENDING or APPROVED order.
func (s *Service) Cancel(ctx context.Context, id uuid.UUID, traceParent string) (_ View, err error) {
	ctx, span := s.tracer.Start(ctx, "CancelOrder", trace.WithAttributes(tracing.CorrelationID(id)))
	defer func() { tracing.End(span, err) }()
	traceParent = tracing.Carried(ctx, traceParent)
	var out View
	var cancelled outcome
	err = eventstore.Retry(ctx, conflictRetries, func(ctx context.Context) error {
		agg, err := s.repo.Load(ctx, s.bb.Pool, id)
		if errors.Is(err, eventstore.ErrNotFound) {
			return domain.ErrNotFound
		}
		if err != nil {
			return err
		}
		// A PENDING order is at version 1: its UpdatedAt is when its
		// OrderCreated occurred, the start of its decision's latency.
		cancelled = outcome{orderID: id, result: orders.StatusCancelled, reason: agg.State.Status, created: agg.UpdatedAt}
		evs, err := agg.State.Cancel()
		if err != nil {
			return err
		}
		var u eventstore.UnitOfWork
		meta := eventstore.Meta{CorrelationID: id, CausationID: eventstore.NewID(), TraceParent: traceParent}
		envs, err := s.repo.Stage(&u, &agg, meta, evs...)
		if err != nil {
			return err
		}
		cancelled.version, cancelled.decided = envs[0].AggregateVersion, envs[0].OccurredAt
		u.Exec(forgetPending, [][16]byte{id}) // no longer PENDING: no deadline
		if err := s.bb.Store.Commit(ctx, &u); err != nil {
			return err
		}
		out = view(agg)
		return nil
	})
	if err == nil {
		s.saga.record([]outcome{cancelled})
	}
	return out, err
}

// Events returns an order's events, oldest first.
func (s *Service) Events(ctx context.Context, id uuid.UUID) ([]events.Envelope, error) {
	evs, err := s.repo.Events(ctx, s.bb.Pool, id)
	if errors.Is(err, eventstore.ErrNotFound) {
		return nil, domain.ErrNotFound
	}
	return evs, err
}
