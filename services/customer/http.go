package customer

import (
	"errors"
	"net/http"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/eventsaga/eventsaga/internal/auth"
	"github.com/eventsaga/eventsaga/internal/httpapi"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/services/customer/domain"
)

func (s *Service) routes() *echo.Echo {
	e := httpapi.New(s.log, s.cfg.TracerProvider)
	e.Use(auth.Require(s.auth, access), auth.Limit(s.cfg.Auth.Limits))
	e.POST("/customers", s.postCustomer)
	e.GET("/customers/:id", s.getCustomer)
	e.PUT("/customers/:id/credit-limit", s.putCreditLimit)
	e.GET("/customers/:id/events", s.getEvents)
	httpapi.Health(e, s.bb.Ready)
	return e
}

// access is who may call each route (package auth): registering customers
// and setting credit limits is the back office's; a customer reads its own
// record only.
var access = auth.Rules{
	"POST /customers":                 auth.AdminOnly,
	"GET /customers/:id":              auth.OwnerOrAdmin,
	"PUT /customers/:id/credit-limit": auth.AdminOnly,
	"GET /customers/:id/events":       auth.OwnerOrAdmin,
}

// Handler is the service's REST API, for tests that serve it themselves.
func (s *Service) Handler() http.Handler { return s.http }

type registerRequest struct {
	Name        *string `json:"name"`
	CreditLimit *string `json:"credit_limit"`
}

type creditLimitRequest struct {
	CreditLimit *string `json:"credit_limit"`
}

func (s *Service) postCustomer(c echo.Context) error {
	name, limit, err := decodeRegister(c)
	if err != nil {
		return err
	}
	v, err := s.Register(c.Request().Context(), name, limit, httpapi.TraceParent(c))
	if err != nil {
		return problem(err)
	}
	return c.JSON(http.StatusCreated, map[string]any{"customer_id": v.CustomerID, "version": v.Version})
}

func (s *Service) getCustomer(c echo.Context) error {
	id, err := httpapi.ParseUUID("id", c.Param("id"))
	if err != nil {
		return err
	}
	if err := auth.Owns(c, id); err != nil {
		return err
	}
	v, err := s.Get(c.Request().Context(), id)
	if err != nil {
		return problem(err)
	}
	return c.JSON(http.StatusOK, v)
}

func (s *Service) putCreditLimit(c echo.Context) error {
	id, limit, err := decodeCreditLimit(c)
	if err != nil {
		return err
	}
	v, err := s.ChangeCreditLimit(c.Request().Context(), id, limit, httpapi.TraceParent(c))
	if err != nil {
		return problem(err)
	}
	return c.JSON(http.StatusOK, v)
}

func (s *Service) getEvents(c echo.Context) error {
	id, err := httpapi.ParseUUID("id", c.Param("id"))
	if err != nil {
		return err
	}
	if err := auth.Owns(c, id); err != nil {
		return err
	}
	evs, err := s.Events(c.Request().Context(), id)
	if err != nil {
		return problem(err)
	}
	return c.JSON(http.StatusOK, evs)
}

// decodeRegister reads POST /customers. It touches no database, so that a
// test can fuzz what the handler decodes.
func decodeRegister(c echo.Context) (name string, limit events.Money, err error) {
	var req registerRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return "", 0, err
	}
	if req.Name == nil {
		return "", 0, httpapi.Required("name")
	}
	if limit, err = parseLimit(req.CreditLimit); err != nil {
		return "", 0, err
	}
	return *req.Name, limit, nil
}

// decodeCreditLimit reads PUT /customers/{id}/credit-limit. It touches no
// database, so that a test can fuzz what the handler decodes.
func decodeCreditLimit(c echo.Context) (uuid.UUID, events.Money, error) {
	id, err := httpapi.ParseUUID("id", c.Param("id"))
	if err != nil {
		return uuid.Nil, 0, err
	}
	var req creditLimitRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return uuid.Nil, 0, err
	}
	limit, err := parseLimit(req.CreditLimit)
	if err != nil {
		return uuid.Nil, 0, err
	}
	return id, limit, nil
}

func parseLimit(s *string) (events.Money, error) {
	if s == nil {
		return 0, httpapi.Required("credit_limit")
	}
	return httpapi.ParseMoney("credit_limit", *s)
}

// problem turns the errors of commands into problem details; anything else
// is the service's own fault and stays a 500.
func problem(err error) error {
	var ve *domain.ValidationError
	switch {
	case errors.As(err, &ve):
		return httpapi.Invalid(ve.Error(), httpapi.FieldError{Field: ve.Field, Message: ve.Message})
	case errors.Is(err, domain.ErrNotFound):
		return httpapi.NotFound("no such customer")
	case errors.Is(err, domain.ErrLimitBelowReserved):
		return httpapi.Invalid(err.Error(), httpapi.FieldError{Field: "credit_limit", Message: "is below the reserved credit"})
	case errors.Is(err, eventstore.ErrConflict):
		return httpapi.Conflict("the customer kept changing while the request was decided; try again")
	}
	return err
}
