package auth

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/eventsaga/eventsaga/internal/httpapi"
)

// Open are the paths served without a token: probes and scrapers carry
// none, and what they show is not the business's.
var Open = []string{"/healthz", "/readyz", "/metrics"}

// Rule is who may call a route.
type Rule int

const (
	// AdminOnly: admins only (back office: registering customers, credit
	// limits, the operators' views).
	AdminOnly Rule = iota + 1
	// OwnerOrAdmin: admins, and the customer the resource belongs to,
	// which the handler names once it knows it (Owns).
	OwnerOrAdmin
	// AnyCaller: every verified caller; the handler shows a customer only
	// what is theirs (Scope).
	AnyCaller
	// Public: anyone, without a token: what holds nothing of the business
	// (the saga view's sign-in page and its style sheet and script).
	Public
)

// Rules is a service's access table, by "METHOD /route" as the service
// registers its routes: the one place a service says who may do what. A
// route missing from it is AdminOnly.
type Rules map[string]Rule

const (
	principalKey = "auth.principal"
	ruleKey      = "auth.rule"
)

// Pages are a service's pages for browsers, which send no Authorization
// header by themselves: a GET or HEAD under Prefix that has none takes its
// token from the cookie CookieName (SetCookie: the pages' sign-in sets it),
// and a browser's request there (Accept: text/html) without a valid token
// is sent to SignIn. The cookie is never read on other paths or methods, so
// it cannot make a change anyone's but a reader's.
type Pages struct{ Prefix, SignIn string }

// CookieName is the cookie that carries a browser's token for Pages.
const CookieName = "eventsaga_token"

// Require returns the middleware that lets a request through only with a
// valid token that rules allow (v nil: every request, the open API), and
// puts its caller where Owns, Scope and Caller find it. A missing or invalid
// token is a 401 problem with a WWW-Authenticate challenge (RFC 6750), a
// customer on an AdminOnly route a 403 problem, both before any handler
// runs. pages, if given, are served to browsers as Pages says.
func Require(v *Verifier, rules Rules, pages ...Pages) echo.MiddlewareFunc {
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
			rule, ok := rules[c.Request().Method+" "+c.Path()]
			if !ok {
				rule = AdminOnly
			}
			if rule == Public {
				return next(c)
			}
			header := c.Request().Header.Get(echo.HeaderAuthorization)
			page, isPage := pageOf(c.Request(), pages)
			if header == "" && isPage {
				if ck, err := c.Cookie(CookieName); err == nil && ck.Value != "" {
					header = "Bearer " + ck.Value
				}
			}
			who, err := v.Verify(c.Request().Context(), header)
			if err != nil {
				if isPage && strings.Contains(c.Request().Header.Get(echo.HeaderAccept), "text/html") {
					return c.Redirect(http.StatusSeeOther, page.SignIn+"?then="+url.QueryEscape(c.Request().URL.RequestURI()))
				}
				challenge := `Bearer realm="eventsaga"`
				if !errors.Is(err, ErrNoToken) {
					challenge += `, error="invalid_token"`
				}
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, challenge)
				return httpapi.Unauthorized(err.Error())
			}
			if rule == AdminOnly && !who.Admin {
				return httpapi.Forbidden("only an admin may do this")
			}
			c.Set(principalKey, who)
			c.Set(ruleKey, rule)
			return next(c)
		}
	}
}

// pageOf is the Pages r is a page of, if any: a GET or HEAD under a prefix.
func pageOf(r *http.Request, pages []Pages) (Pages, bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return Pages{}, false
	}
	for _, p := range pages {
		if r.URL.Path == p.Prefix || strings.HasPrefix(r.URL.Path, strings.TrimSuffix(p.Prefix, "/")+"/") {
			return p, true
		}
	}
	return Pages{}, false
}

// SetCookie gives a browser token for the pages under prefix: HttpOnly (no
// script reads it), SameSite=Strict (no other site's link or form sends
// it), Secure when the request came over TLS, and gone when the browser
// closes; the token's own expiry still holds. An empty token removes it.
func SetCookie(c echo.Context, prefix, token string) {
	ck := &http.Cookie{
		Name: CookieName, Value: token, Path: prefix, HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: c.Scheme() == "https",
	}
	if token == "" {
		ck.MaxAge = -1
	}
	c.SetCookie(ck)
}

// Caller returns the request's verified caller; ok is false on the open
// API (or before Require ran).
func Caller(c echo.Context) (p Principal, ok bool) {
	p, ok = c.Get(principalKey).(Principal)
	return p, ok
}

// Owns reports, as a 403 problem, a caller who may not act on a resource
// of customer: a customer other than it, or any customer where the route
// is not OwnerOrAdmin. Admins and the open API may.
func Owns(c echo.Context, customer uuid.UUID) error {
	p, ok := Caller(c)
	if !ok || p.Admin {
		return nil
	}
	if rule, _ := c.Get(ruleKey).(Rule); rule != OwnerOrAdmin || p.Subject != customer {
		return httpapi.Forbidden(fmt.Sprintf("this belongs to another customer than %s", p.Subject))
	}
	return nil
}

// Scope is whose resources the caller may see: all (admins, the open API),
// or those of customer only.
func Scope(c echo.Context) (customer uuid.UUID, all bool) {
	p, ok := Caller(c)
	if !ok || p.Admin {
		return uuid.Nil, true
	}
	return p.Subject, false
}
