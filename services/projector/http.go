package projector

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/eventsaga/eventsaga/internal/auth"
	"github.com/eventsaga/eventsaga/internal/httpapi"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
	"github.com/eventsaga/eventsaga/pkg/outbox"
)

// MinVersionWait bounds how long a query with min_version waits for the
// read model to catch up.
const MinVersionWait = 3 * time.Second

// Page sizes of GET /orders and GET /sagas/stuck.
const (
	DefaultPageSize = 50
	MaxPageSize     = 500
)

// DefaultStuckAfter is how long an order must have been PENDING for GET
// /sagas/stuck to show it, unless older_than says otherwise. A saga takes
// milliseconds; the order service rejects a PENDING order after its
// deadline (30 s by default).
const DefaultStuckAfter = 10 * time.Second

func (s *Service) routes() *echo.Echo {
	e := httpapi.New(s.log, s.cfg.TracerProvider)
	e.Use(auth.Require(s.auth, access, uiPages), auth.Limit(s.cfg.Auth.Limits))
	e.GET("/orders/:id", s.getOrder)
	e.GET("/orders", s.listOrders)
	e.GET("/customers/:id", s.getCustomer)
	e.GET("/sagas/stuck", s.stuckSagas)
	e.GET("/status", s.getStatus)
	newUI(s).register(e) // the saga view, /ui (ui.go)
	httpapi.Health(e, s.ready)
	return e
}

// access is who may call each route (package auth): a customer reads its
// own orders and record; the operators' views (stuck sagas, status, the
// saga view's pages under /ui, which have no entry here) are admins'; the
// view's sign-in page and its static files, anyone's.
var access = auth.Rules{
	"GET /orders/:id":      auth.OwnerOrAdmin,
	"GET /orders":          auth.AnyCaller, // a customer's own only (listOrders)
	"GET /customers/:id":   auth.OwnerOrAdmin,
	"GET /sagas/stuck":     auth.AdminOnly,
	"GET /status":          auth.AdminOnly,
	"GET /ui/login":        auth.Public,
	"POST /ui/login":       auth.Public,
	"GET /ui/static/:name": auth.Public,
}

// Handler is the API, for tests that serve it themselves.
func (s *Service) Handler() http.Handler { return s.http }

type orderView struct {
	OrderID         uuid.UUID    `json:"order_id"`
	CustomerID      uuid.UUID    `json:"customer_id"`
	Status          string       `json:"status"`
	Total           events.Money `json:"total"`
	RejectionReason *string      `json:"rejection_reason"`
	Version         int64        `json:"version"`
	UpdatedAt       string       `json:"updated_at"`
}

func viewOf(r OrderRow) orderView {
	v := orderView{OrderID: r.OrderID, CustomerID: r.CustomerID, Status: r.Status, Total: r.Total, Version: r.Version, UpdatedAt: events.FormatTime(r.UpdatedAt)}
	if r.RejectionReason != "" {
		v.RejectionReason = &r.RejectionReason
	}
	return v
}

// getOrder answers from the read model; with min_version=N it first waits,
// up to MinVersionWait, for the order to reach version N.
func (s *Service) getOrder(c echo.Context) error {
	id, min, err := parseOrderQuery(c)
	if err != nil {
		return err
	}
	row, err := s.awaitOrder(c.Request().Context(), id, min)
	if err == nil {
		if err := auth.Owns(c, row.CustomerID); err != nil {
			return err
		}
	}
	switch {
	case errors.Is(err, ErrNotFound) && min > 0:
		return httpapi.NotFound(fmt.Sprintf("the read model has no such order, and did not reach version %d of it within %v", min, MinVersionWait))
	case errors.Is(err, ErrNotFound):
		return httpapi.NotFound("the read model has no such order (it may not have caught up yet: ask with min_version)")
	case err != nil:
		return err
	case row.Version < min:
		return httpapi.Conflict(fmt.Sprintf("the read model has version %d of this order and did not reach version %d within %v", row.Version, min, MinVersionWait))
	}
	return c.JSON(http.StatusOK, viewOf(row))
}

// parseOrderQuery reads GET /orders/{id}'s path and min_version (0 when
// absent). It touches no database, so that a test can fuzz it.
func parseOrderQuery(c echo.Context) (id uuid.UUID, min int64, err error) {
	if id, err = httpapi.ParseUUID("id", c.Param("id")); err != nil {
		return uuid.Nil, 0, err
	}
	if q := c.QueryParam("min_version"); q != "" {
		if min, err = strconv.ParseInt(q, 10, 64); err != nil || min < 1 {
			return uuid.Nil, 0, httpapi.BadRequest("min_version must be a positive whole number", httpapi.FieldError{Field: "min_version", Message: "not a positive whole number"})
		}
	}
	return id, min, nil
}

// awaitOrder reads the order, and while it is missing or below version min
// waits until MinVersionWait has passed. It reads the database when this
// instance has projected the version, and every 50ms besides, for what
// another instance projected.
func (s *Service) awaitOrder(ctx context.Context, id uuid.UUID, min int64) (OrderRow, error) {
	deadline := time.NewTimer(MinVersionWait)
	defer deadline.Stop()
	poll := time.NewTicker(250 * time.Millisecond)
	defer poll.Stop()
	for read := true; ; {
		known, next := s.recent.watch(id) // before reading, so that no commit is missed
		defer s.recent.unwatch(id, next)
		if read || known >= min {
			row, err := generation(s.gen.Load()).order(ctx, s.pool, id)
			if (err == nil && row.Version >= min) || (err != nil && !errors.Is(err, ErrNotFound)) || min == 0 {
				return row, err
			}
		}
		read = false
		select {
		case <-next:
		case <-poll.C:
			read = true
		case <-deadline.C:
			return generation(s.gen.Load()).order(ctx, s.pool, id)
		case <-ctx.Done():
			return OrderRow{}, ctx.Err()
		}
	}
}

func (s *Service) listOrders(c echo.Context) error {
	f, err := parseListQuery(c)
	if err != nil {
		return err
	}
	if customer, all := auth.Scope(c); !all {
		if f.CustomerID != uuid.Nil && f.CustomerID != customer {
			return httpapi.Forbidden("a customer may list its own orders only")
		}
		f.CustomerID = customer
	}
	rows, err := generation(s.gen.Load()).listOrders(c.Request().Context(), s.pool, f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, pageOf(rows, f.Limit))
}

// parseListQuery reads GET /orders' query. It touches no database, so that
// a test can fuzz it.
func parseListQuery(c echo.Context) (OrderFilter, error) {
	var f OrderFilter
	var err error
	if q := c.QueryParam("customer_id"); q != "" {
		if f.CustomerID, err = httpapi.ParseUUID("customer_id", q); err != nil {
			return OrderFilter{}, err
		}
	}
	if q := c.QueryParam("after"); q != "" {
		if f.After, err = httpapi.ParseUUID("after", q); err != nil {
			return OrderFilter{}, err
		}
	}
	switch q := c.QueryParam("status"); q {
	case "", orders.StatusPending, orders.StatusApproved, orders.StatusRejected, orders.StatusCancelled:
		f.Status = q
	default:
		return OrderFilter{}, httpapi.BadRequest("status must be one of PENDING, APPROVED, REJECTED, CANCELLED", httpapi.FieldError{Field: "status", Message: "unknown status"})
	}
	f.Limit = DefaultPageSize
	if q := c.QueryParam("limit"); q != "" {
		if f.Limit, err = strconv.Atoi(q); err != nil || f.Limit < 1 || f.Limit > MaxPageSize {
			return OrderFilter{}, httpapi.BadRequest(fmt.Sprintf("limit must be a whole number from 1 to %d", MaxPageSize), httpapi.FieldError{Field: "limit", Message: "out of range"})
		}
	}
	return f, nil
}

// stuckSagas lists, for operators, the orders PENDING for longer than
// older_than, by ascending ID (roughly the order they were placed in), a page
// at a time like GET /orders.
func (s *Service) stuckSagas(c echo.Context) error {
	olderThan, f, err := parseStuckQuery(c)
	if err != nil {
		return err
	}
	rows, err := generation(s.gen.Load()).stuckOrders(c.Request().Context(), s.pool, time.Now().Add(-olderThan), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, pageOf(rows, f.Limit))
}

// parseStuckQuery reads GET /sagas/stuck's query. It touches no database,
// so that a test can fuzz it.
func parseStuckQuery(c echo.Context) (olderThan time.Duration, f OrderFilter, err error) {
	olderThan = DefaultStuckAfter
	if q := c.QueryParam("older_than"); q != "" {
		d, err := time.ParseDuration(q)
		if err != nil || d < 0 {
			return 0, OrderFilter{}, httpapi.BadRequest("older_than must be a Go duration of 0 or more, such as 10s or 2m", httpapi.FieldError{Field: "older_than", Message: "not a duration of 0 or more"})
		}
		olderThan = d
	}
	f = OrderFilter{Limit: DefaultPageSize}
	if q := c.QueryParam("after"); q != "" {
		if f.After, err = httpapi.ParseUUID("after", q); err != nil {
			return 0, OrderFilter{}, err
		}
	}
	if q := c.QueryParam("limit"); q != "" {
		if f.Limit, err = strconv.Atoi(q); err != nil || f.Limit < 1 || f.Limit > MaxPageSize {
			return 0, OrderFilter{}, httpapi.BadRequest(fmt.Sprintf("limit must be a whole number from 1 to %d", MaxPageSize), httpapi.FieldError{Field: "limit", Message: "out of range"})
		}
	}
	return olderThan, f, nil
}

// orderPage is a page of GET /orders or GET /sagas/stuck.
type orderPage struct {
	Orders []orderView `json:"orders"`
	Next   *string     `json:"next"`
}

// pageOf is rows as a page of up to limit orders: when it is full, next is
// its last order's ID, the cursor of the next page.
func pageOf(rows []OrderRow, limit int) orderPage {
	page := orderPage{Orders: make([]orderView, len(rows))}
	for i, r := range rows {
		page.Orders[i] = viewOf(r)
	}
	if len(rows) == limit {
		next := rows[len(rows)-1].OrderID.String()
		page.Next = &next
	}
	return page
}

func (s *Service) getCustomer(c echo.Context) error {
	id, err := httpapi.ParseUUID("id", c.Param("id"))
	if err != nil {
		return err
	}
	if err := auth.Owns(c, id); err != nil {
		return err
	}
	v, err := generation(s.gen.Load()).customer(c.Request().Context(), s.pool, id)
	if errors.Is(err, ErrNotFound) {
		return httpapi.NotFound("the read model has no such customer")
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{
		"customer_id": v.CustomerID, "name": v.Name, "credit_limit": v.CreditLimit,
		"reserved": v.Reserved, "available": v.CreditLimit - v.Reserved,
		"orders": map[string]int64{
			orders.StatusPending: v.Orders.Pending, orders.StatusApproved: v.Orders.Approved,
			orders.StatusRejected: v.Orders.Rejected, orders.StatusCancelled: v.Orders.Cancelled,
		},
	})
}

// getStatus shows how far behind the topics the read model is, per
// partition, and what the projection has done.
func (s *Service) getStatus(c echo.Context) error {
	g := generation(s.gen.Load())
	group := groupOf(s.cfg.ConsumerGroup, g)
	out := map[string]any{"generation": int(g), "consumer_group": group}
	if cons := s.consumer.Load(); cons != nil {
		out["projected"] = cons.Stats()
		lag, err := outbox.GroupLag(c.Request().Context(), s.kafka, group, s.cfg.OrdersTopic, s.cfg.CustomersTopic)
		if err != nil {
			return httpapi.Unavailable("lag: " + err.Error())
		}
		out["lag"], out["total_lag"] = lag, lag.Total()
	}
	return c.JSON(http.StatusOK, out)
}

// ready reports whether the database and Kafka answer.
func (s *Service) ready(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	if s.consumer.Load() == nil {
		return errors.New("projection not started")
	}
	if err := s.kafka.Ping(ctx); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	return nil
}
