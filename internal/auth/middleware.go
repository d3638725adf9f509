package auth

import (
	"errors"

	"github.com/labstack/echo/v4"

	"github.com/eventsaga/eventsaga/internal/httpapi"
)

// Open are the paths served without a token: probes and scrapers carry
// none, and what they show is not the business's.
var Open = []string{"/healthz", "/readyz", "/metrics"}

const principalKey = "auth.principal"

// Require returns the middleware that lets a request through only with a
// valid token (v nil: every request, the open API), and puts its Principal
// where Caller finds it. A missing or invalid token is a 401 problem with a
// WWW-Authenticate challenge (RFC 6750), before any handler runs.
func Require(v *Verifier) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		if v == nil {
			return next
		}
		return func(c echo.Context) error {
			for _, p := range Open {
				if c.Path() == p {
					return next(c)
				}
			}
			who, err := v.Verify(c.Request().Context(), c.Request().Header.Get(echo.HeaderAuthorization))
			if err != nil {
				challenge := `Bearer realm="eventsaga"`
				if !errors.Is(err, ErrNoToken) {
					challenge += `, error="invalid_token"`
				}
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, challenge)
				return httpapi.Unauthorized(err.Error())
			}
			c.Set(principalKey, who)
			return next(c)
		}
	}
}

// Caller returns the request's verified caller; ok is false on the open
// API (or before Require ran).
func Caller(c echo.Context) (p Principal, ok bool) {
	p, ok = c.Get(principalKey).(Principal)
	return p, ok
}
