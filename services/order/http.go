package order

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/eventsaga/eventsaga/internal/auth"
	"github.com/eventsaga/eventsaga/internal/httpapi"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/services/order/domain"
)

// MaxIdempotencyKeyLength bounds an Idempotency-Key header.
const MaxIdempotencyKeyLength = 255

func (s *Service) routes() *echo.Echo {
	e := httpapi.New(s.log, s.cfg.TracerProvider)
	e.Use(auth.Require(s.auth, access), auth.Limit(s.cfg.Auth.Limits))
	e.POST("/orders", s.postOrder)
	e.GET("/orders/:id", s.getOrder)
	e.GET("/orders/:id/events", s.getEvents)
	e.POST("/orders/:id/cancel", s.postCancel)
	httpapi.Health(e, s.bb.Ready)
	return e
}

// access is who may call each route (package auth): a customer places,
// reads and cancels its own orders only; an admin, any.
var access = auth.Rules{
	"POST /orders":            auth.OwnerOrAdmin, // the body's customer_id
	"GET /orders/:id":         auth.OwnerOrAdmin,
	"GET /orders/:id/events":  auth.OwnerOrAdmin,
	"POST /orders/:id/cancel": auth.OwnerOrAdmin,
}

// mayActOn is auth.Owns for the order id, whose owner it reads only when
// the caller is a customer (an admin, or the open API, needs none). A
// customer learns that another's order exists (403, not 404); nothing more.
func (s *Service) mayActOn(c echo.Context, id uuid.UUID) error {
	if _, all := auth.Scope(c); all {
		return nil
	}
	v, err := s.Get(c.Request().Context(), id)
	if err != nil {
		return problem(err)
	}
	return auth.Owns(c, v.CustomerID)
}

// Handler is the service's REST API, for tests that serve it themselves.
func (s *Service) Handler() http.Handler { return s.http }

type placeRequest struct {
	CustomerID *string        `json:"customer_id"`
	Items      *[]itemRequest `json:"items"`
}

type itemRequest struct {
	ProductID *string `json:"product_id"`
	// Quantity is checked by hand: a JSON string must be a 400 like any
	// wrong type, while 1.5 is a number that breaks a rule (422).
	Quantity  json.RawMessage `json:"quantity"`
	UnitPrice *string         `json:"unit_price"`
}

func (s *Service) postOrder(c echo.Context) error {
	cmd, err := placeCommand(c)
	if err != nil {
		return err
	}
	if err := auth.Owns(c, cmd.CustomerID); err != nil {
		return err
	}
	placed, err := s.Place(c.Request().Context(), cmd)
	if err != nil {
		return problem(err)
	}
	httpapi.SetCorrelationID(c, placed.OrderID.String()) // the saga's correlation_id, in the access log
	return c.JSON(http.StatusCreated, placed)
}

// placeCommand reads POST /orders (headers and body) into a PlaceOrder. It
// touches no database, so that a test can fuzz what the handler decodes.
func placeCommand(c echo.Context) (PlaceOrder, error) {
	key := c.Request().Header.Get("Idempotency-Key")
	if err := checkKey(key, c.Request().Header.Values("Idempotency-Key")); err != nil {
		return PlaceOrder{}, err
	}
	var req placeRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return PlaceOrder{}, err
	}
	cmd, err := req.command()
	if err != nil {
		return PlaceOrder{}, err
	}
	cmd.IdempotencyKey, cmd.TraceParent = key, httpapi.TraceParent(c)
	return cmd, nil
}

func checkKey(key string, all []string) error {
	switch {
	case len(all) > 1:
		return httpapi.BadRequest("more than one Idempotency-Key header")
	case len(all) == 1 && key == "":
		return httpapi.BadRequest("Idempotency-Key is empty")
	case len(key) > MaxIdempotencyKeyLength:
		return httpapi.BadRequest(fmt.Sprintf("Idempotency-Key is longer than %d characters", MaxIdempotencyKeyLength))
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return httpapi.BadRequest("Idempotency-Key must be printable ASCII without spaces")
		}
	}
	return nil
}

// command turns the request into a PlaceOrder, or a problem naming the
// first field that is wrong.
func (r placeRequest) command() (PlaceOrder, error) {
	var cmd PlaceOrder
	if r.CustomerID == nil {
		return cmd, httpapi.Required("customer_id")
	}
	id, err := httpapi.ParseUUID("customer_id", *r.CustomerID)
	if err != nil {
		return cmd, err
	}
	if r.Items == nil {
		return cmd, httpapi.Required("items")
	}
	if len(*r.Items) > domain.MaxItems {
		return cmd, httpapi.Invalid(fmt.Sprintf("an order holds at most %d items", domain.MaxItems),
			httpapi.FieldError{Field: "items", Message: "too many items"})
	}
	cmd.CustomerID = id
	cmd.Items = make([]orders.Item, len(*r.Items))
	for i, it := range *r.Items {
		field := fmt.Sprintf("items[%d].", i)
		if it.ProductID == nil {
			return cmd, httpapi.Required(field + "product_id")
		}
		q, err := quantity(field+"quantity", it.Quantity)
		if err != nil {
			return cmd, err
		}
		if it.UnitPrice == nil {
			return cmd, httpapi.Required(field + "unit_price")
		}
		price, err := httpapi.ParseMoney(field+"unit_price", *it.UnitPrice)
		if err != nil {
			return cmd, err
		}
		cmd.Items[i] = orders.Item{ProductID: *it.ProductID, Quantity: q, UnitPrice: price}
	}
	return cmd, nil
}

func quantity(field string, raw json.RawMessage) (int64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, httpapi.Required(field)
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return 0, httpapi.BadRequest(field+" must be a JSON number", httpapi.FieldError{Field: field, Message: "wrong JSON type"})
	}
	q, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || q < 1 || q > domain.MaxQuantity {
		return 0, httpapi.Invalid(fmt.Sprintf("%s must be a whole number from 1 to %d, not %s", field, domain.MaxQuantity, raw),
			httpapi.FieldError{Field: field, Message: "must be a positive whole number"})
	}
	return q, nil
}

func (s *Service) getOrder(c echo.Context) error {
	q, err := parseOrderQuery(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	var v View
	switch {
	case q.version > 0:
		v, err = s.GetVersion(ctx, q.id, q.version)
	case q.asOf:
		v, err = s.GetAsOf(ctx, q.id, q.at)
	default:
		v, err = s.Get(ctx, q.id)
	}
	if err != nil {
		return problem(err)
	}
	if err := auth.Owns(c, v.CustomerID); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

// orderQuery is what GET /orders/{id} asks for: the order now, at version
// (when above 0), or as of at (when asOf).
type orderQuery struct {
	id      uuid.UUID
	version int64
	at      time.Time
	asOf    bool
}

// parseOrderQuery reads GET /orders/{id}'s path and query. It touches no
// database, so that a test can fuzz what the handler decodes.
func parseOrderQuery(c echo.Context) (orderQuery, error) {
	var q orderQuery
	var err error
	if q.id, err = httpapi.ParseUUID("id", c.Param("id")); err != nil {
		return q, err
	}
	version, at := c.QueryParam("version"), c.QueryParam("at")
	switch {
	case version != "" && at != "":
		return q, httpapi.BadRequest("ask for a version or a time, not both")
	case version != "":
		n, perr := strconv.ParseInt(version, 10, 64)
		if perr != nil || n < 1 {
			return q, httpapi.BadRequest("version must be a positive whole number", httpapi.FieldError{Field: "version", Message: "not a positive whole number"})
		}
		q.version = n
	case at != "":
		t, perr := time.Parse(time.RFC3339Nano, at)
		if perr != nil {
			return q, httpapi.BadRequest("at must be an RFC 3339 time such as 2026-11-23T10:00:00Z", httpapi.FieldError{Field: "at", Message: "not an RFC 3339 time"})
		}
		q.at, q.asOf = t, true
	}
	return q, nil
}

func (s *Service) getEvents(c echo.Context) error {
	id, err := httpapi.ParseUUID("id", c.Param("id"))
	if err != nil {
		return err
	}
	if err := s.mayActOn(c, id); err != nil {
		return err
	}
	evs, err := s.Events(c.Request().Context(), id)
	if err != nil {
		return problem(err)
	}
	return c.JSON(http.StatusOK, evs)
}

func (s *Service) postCancel(c echo.Context) error {
	id, err := httpapi.ParseUUID("id", c.Param("id"))
	if err != nil {
		return err
	}
	if err := s.mayActOn(c, id); err != nil {
		return err
	}
	v, err := s.Cancel(c.Request().Context(), id, httpapi.TraceParent(c))
	if err != nil {
		return problem(err)
	}
	return c.JSON(http.StatusOK, v)
}

// problem turns the errors of commands into problem details; anything else
// is the service's own fault and stays a 500.
func problem(err error) error {
	var ve *domain.ValidationError
	switch {
	case errors.As(err, &ve):
		return httpapi.Invalid(ve.Error(), httpapi.FieldError{Field: ve.Field, Message: ve.Message})
	case errors.Is(err, domain.ErrNotFound):
		return httpapi.NotFound("no such order (at that version or time)")
	case errors.Is(err, domain.ErrCannotCancel):
		return httpapi.Conflict(err.Error())
	case errors.Is(err, ErrKeyReused):
		return httpapi.Invalid("this Idempotency-Key was used with a different request",
			httpapi.FieldError{Field: "Idempotency-Key", Message: "reused with a different request"})
	case errors.Is(err, eventstore.ErrConflict):
		return httpapi.Conflict("the order kept changing while the request was decided; try again")
	}
	return err
}
