package projector

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/labstack/echo/v4"

	"github.com/eventsaga/eventsaga/internal/auth"
	"github.com/eventsaga/eventsaga/internal/httpapi"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
)

// The saga view: server-rendered pages over the read model at /ui, with a
// little JavaScript for the live feed (ui_feed.go) and nothing else. The
// pages work without JavaScript, except for the live updates.

// uiPageSize is how many sagas a page lists.
const uiPageSize = 50

//go:embed ui/templates/*.html ui/static/*
var uiFiles embed.FS

// ui is the parsed templates and the static files.
var ui = mustLoadUI()

type uiAssets struct {
	// pages are the templates of each page: layout.html and parts.html
	// with the page's own file, which defines "title" and "content".
	pages  map[string]*template.Template
	static map[string]staticFile
}

type staticFile struct {
	body        []byte
	contentType string
	version     string // a hash of body, so that a changed file is fetched anew
}

func mustLoadUI() *uiAssets {
	a := &uiAssets{pages: map[string]*template.Template{}, static: map[string]staticFile{}}
	names, err := fs.Glob(uiFiles, "ui/static/*")
	if err != nil {
		panic(err)
	}
	for _, name := range names {
		b, err := uiFiles.ReadFile(name)
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(b)
		a.static[path.Base(name)] = staticFile{body: b, contentType: mime.TypeByExtension(path.Ext(name)), version: hex.EncodeToString(sum[:4])}
	}
	funcs := template.FuncMap{
		"static": func(name string) (string, error) {
			f, ok := a.static[name]
			if !ok {
				return "", fmt.Errorf("no static file %q", name)
			}
			return "/ui/static/" + name + "?v=" + f.version, nil
		},
		"dur":    formatDuration,
		"offset": formatOffset,
		"when":   formatTime,
		"short":  shortID,
		"lower":  strings.ToLower,
	}
	base := template.Must(template.New("").Funcs(funcs).ParseFS(uiFiles, "ui/templates/layout.html", "ui/templates/parts.html"))
	for _, page := range []string{"sagas.html", "order.html", "customer.html", "notfound.html", "error.html", "login.html"} {
		a.pages[page] = template.Must(template.Must(base.Clone()).ParseFS(uiFiles, "ui/templates/"+page))
	}
	return a
}

// render executes template name of page's set.
func (a *uiAssets) render(w io.Writer, page, name string, data any) error {
	t, ok := a.pages[page]
	if !ok {
		return fmt.Errorf("no page %q", page)
	}
	return t.ExecuteTemplate(w, name, data)
}

// setUIHeaders sets what every answer under /ui carries. The policy allows
// no inline script or style: were some event data ever rendered unescaped,
// it still would not run.
func setUIHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
}

// uiServer serves the saga view.
type uiServer struct {
	s *Service
	// jaeger is JAEGER_UI_URL without its trailing slash; "" for no links.
	jaeger string
}

// newUI reads JAEGER_UI_URL; a value that is not an http(s) URL is
// ignored, with a warning, rather than stopping a service that needs no
// tracing to run.
func newUI(s *Service) *uiServer {
	u := &uiServer{s: s}
	if v := strings.TrimSpace(os.Getenv("JAEGER_UI_URL")); v != "" {
		p, err := url.Parse(v)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			s.log.Warn("JAEGER_UI_URL is not an http(s) URL; the saga view links to no traces", "value", v)
		} else {
			u.jaeger = strings.TrimRight(v, "/")
		}
	}
	return u
}

func (u *uiServer) register(e *echo.Echo) {
	// The live feed is served before routing, so outside the API's
	// middleware: its deadline would end every stream after
	// RequestTimeout, and a stream must end only when its client goes.
	// Authentication is not the deadline: the feed is an admin's, as the
	// rest of the view.
	feed := auth.Require(u.s.auth, access, uiPages)(u.streamFeed)
	e.Pre(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if r := c.Request(); r.URL.Path == "/ui/events" && r.Method == http.MethodGet {
				return feed(c)
			}
			return next(c)
		}
	})
	e.GET("/ui", u.sagas)
	e.GET("/ui/", u.sagas)
	e.GET("/ui/orders/:id", u.order)
	e.GET("/ui/customers/:id", u.customer)
	e.GET("/ui/static/:name", u.staticFile)
	e.GET("/ui/login", u.signInPage)
	e.POST("/ui/login", u.signIn)
	e.GET("/ui/*", func(c echo.Context) error {
		return u.notFound(c, "There is no such page in the saga view.", "")
	})
}

// uiPages: with authentication on, a browser signs in at /ui/login with an
// admin's token, which it then sends as a cookie to the view's pages (GET
// only); see auth.Pages.
var uiPages = auth.Pages{Prefix: "/ui", SignIn: "/ui/login"}

type signInPage struct{ Then, Error string }

// signInPage asks for a token; then is where to go once signed in.
func (u *uiServer) signInPage(c echo.Context) error {
	if u.s.auth == nil {
		return c.Redirect(http.StatusSeeOther, "/ui") // nothing to sign in to
	}
	return u.page(c, http.StatusOK, "login.html", signInPage{Then: pageAfterSignIn(c.QueryParam("then"))})
}

// signIn checks the token as an admin's and keeps it in the browser's
// cookie for the view; a token that is not one is shown the form again,
// with why.
func (u *uiServer) signIn(c echo.Context) error {
	if u.s.auth == nil {
		return c.Redirect(http.StatusSeeOther, "/ui")
	}
	token, then := strings.TrimSpace(c.FormValue("token")), pageAfterSignIn(c.FormValue("then"))
	who, err := u.s.auth.Verify(c.Request().Context(), "Bearer "+token)
	switch {
	case err != nil:
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="eventsaga", error="invalid_token"`)
		return u.page(c, http.StatusUnauthorized, "login.html", signInPage{Then: then, Error: "Not a valid token: " + err.Error()})
	case !who.Admin:
		return u.page(c, http.StatusForbidden, "login.html", signInPage{Then: then, Error: "This token is a customer's; the saga view is for admins."})
	}
	auth.SetCookie(c, uiPages.Prefix, token)
	return c.Redirect(http.StatusSeeOther, then)
}

// pageAfterSignIn is then if it is a page of the view, else the view's
// first page: a sign-in link never sends anyone elsewhere.
func pageAfterSignIn(then string) string {
	if (then == "/ui" || strings.HasPrefix(then, "/ui/")) && !strings.HasPrefix(then, "/ui/login") && !strings.ContainsAny(then, "\\\r\n") {
		return then
	}
	return "/ui"
}

// page renders a whole page.
func (u *uiServer) page(c echo.Context, status int, page string, data any) error {
	var buf bytes.Buffer
	if err := ui.render(&buf, page, "layout", data); err != nil {
		return err
	}
	setUIHeaders(c.Response().Header())
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.HTMLBlob(status, buf.Bytes())
}

type messagePage struct {
	Title, Message, ID string
}

// notFound is the friendly 404 of the saga view.
func (u *uiServer) notFound(c echo.Context, message, id string) error {
	return u.page(c, http.StatusNotFound, "notfound.html", messagePage{Title: "Not found", Message: message, ID: id})
}

// fail shows an error page for a failure to read the read model: 503 when
// the database did not answer in time or at all (as the API answers), 500
// otherwise.
func (u *uiServer) fail(c echo.Context, err error) error {
	if errors.Is(err, context.Canceled) && c.Request().Context().Err() != nil {
		return nil // the client went away
	}
	var connect *pgconn.ConnectError
	if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) || errors.As(err, &connect) {
		u.s.log.WarnContext(c.Request().Context(), "saga view: the database did not answer", "path", c.Request().URL.Path, "err", err)
		return u.page(c, http.StatusServiceUnavailable, "error.html", messagePage{Title: http.StatusText(http.StatusServiceUnavailable),
			Message: "The read model's database did not answer in time. Try again in a moment."})
	}
	u.s.log.ErrorContext(c.Request().Context(), "saga view: request failed", "path", c.Request().URL.Path, "err", err)
	status := http.StatusInternalServerError
	return u.page(c, status, "error.html", messagePage{Title: http.StatusText(status), Message: "The saga view failed to read the read model; the error was logged."})
}

func (u *uiServer) staticFile(c echo.Context) error {
	f, ok := ui.static[c.Param("name")]
	if !ok {
		return u.notFound(c, "There is no such file in the saga view.", "")
	}
	h := c.Response().Header()
	setUIHeaders(h)
	// Pages name a file with its hash (static, in the templates).
	h.Set("Cache-Control", "public, max-age=86400")
	return c.Blob(http.StatusOK, f.contentType, f.body)
}

// sagaView is one saga as a row of a list (or the head of a timeline).
type sagaView struct {
	ID, CustomerID uuid.UUID
	CustomerName   string
	Status, Reason string
	Total          events.Money
	// Placed is the saga's first event's time, zero if the log has none.
	Placed   time.Time
	Duration time.Duration
	Steps    int
}

func (s *Service) sagaView(r sagaRow) sagaView {
	v := sagaView{ID: r.OrderID, CustomerID: r.CustomerID, CustomerName: r.CustomerName, Status: r.Status,
		Reason: r.RejectionReason, Total: r.Total, Duration: r.Duration(), Steps: r.Steps}
	if r.Started != nil {
		v.Placed = *r.Started
	}
	return v
}

// sagaTable is a list of sagas, with its live feed and its next page.
type sagaTable struct {
	Rows []sagaView
	// Feed is the URL of the live feed of these sagas' filters.
	Feed string
	// Prepend: new sagas go on top (the first page); on later pages the
	// feed updates the rows shown but adds none.
	Prepend bool
	Limit   int
	// Older is the URL of the next page, "" on the last.
	Older string
}

type sagasPage struct {
	CustomerID, Status string // the filters as given
	Statuses           []string
	Error              string
	Table              sagaTable
}

var statuses = []string{orders.StatusPending, orders.StatusApproved, orders.StatusRejected, orders.StatusCancelled}

// parseSagaFilter reads the filters of /ui and /ui/events.
func parseSagaFilter(c echo.Context) (sagaFilter, error) {
	f := sagaFilter{Limit: uiPageSize}
	var err error
	if v := c.QueryParam("customer_id"); v != "" {
		if f.CustomerID, err = httpapi.ParseUUID("customer_id", strings.TrimSpace(v)); err != nil {
			return f, err
		}
	}
	switch v := c.QueryParam("status"); v {
	case "", orders.StatusPending, orders.StatusApproved, orders.StatusRejected, orders.StatusCancelled:
		f.Status = v
	default:
		return f, httpapi.BadRequest("status must be one of PENDING, APPROVED, REJECTED, CANCELLED", httpapi.FieldError{Field: "status", Message: "unknown status"})
	}
	if v := c.QueryParam("before"); v != "" {
		if f.Before, err = httpapi.ParseUUID("before", v); err != nil {
			return f, err
		}
	}
	return f, nil
}

// sagas serves /ui: the newest sagas, filtered by customer and status.
func (u *uiServer) sagas(c echo.Context) error {
	page := sagasPage{CustomerID: c.QueryParam("customer_id"), Status: c.QueryParam("status"), Statuses: statuses}
	f, err := parseSagaFilter(c)
	if err != nil {
		var p *httpapi.Problem
		if !errors.As(err, &p) {
			return err
		}
		page.Error = p.Detail
		return u.page(c, http.StatusBadRequest, "sagas.html", page)
	}
	q := url.Values{}
	if f.CustomerID != uuid.Nil {
		q.Set("customer_id", f.CustomerID.String())
	}
	if f.Status != "" {
		q.Set("status", f.Status)
	}
	page.Table, err = u.table(c.Request().Context(), f, q, url.URL{Path: "/ui", RawQuery: q.Encode()})
	if err != nil {
		return u.fail(c, err)
	}
	return u.page(c, http.StatusOK, "sagas.html", page)
}

// table reads a page of sagas; feed is the query of its live feed, and
// this is the URL of the page, to which the next page adds its cursor.
func (u *uiServer) table(ctx context.Context, f sagaFilter, feed url.Values, this url.URL) (sagaTable, error) {
	rows, err := generation(u.s.gen.Load()).recentSagas(ctx, u.s.pool, f)
	if err != nil {
		return sagaTable{}, err
	}
	t := sagaTable{Rows: make([]sagaView, len(rows)), Feed: "/ui/events", Prepend: f.Before == uuid.Nil, Limit: f.Limit}
	if f.Before != uuid.Nil { // the feed first sends the page it is for
		q := url.Values{}
		maps.Copy(q, feed)
		q.Set("before", f.Before.String())
		feed = q
	}
	if len(feed) > 0 {
		t.Feed += "?" + feed.Encode()
	}
	for i, r := range rows {
		t.Rows[i] = u.s.sagaView(r)
	}
	if len(rows) == f.Limit {
		q := this.Query()
		q.Set("before", rows[len(rows)-1].OrderID.String())
		this.RawQuery = q.Encode()
		t.Older = this.String()
	}
	return t, nil
}

// timelinePage is one order's saga: its row and its steps.
type timelinePage struct {
	sagaView
	Events []sagaStep
	// TraceURL links to the saga in Jaeger, "" when JAEGER_UI_URL is unset.
	TraceURL string
}

func (u *uiServer) timeline(ctx context.Context, id uuid.UUID) (timelinePage, error) {
	g := generation(u.s.gen.Load())
	rows, err := g.recentSagas(ctx, u.s.pool, sagaFilter{IDs: []uuid.UUID{id}, Limit: 1})
	if err != nil {
		return timelinePage{}, err
	}
	if len(rows) == 0 {
		return timelinePage{}, ErrNotFound
	}
	p := timelinePage{sagaView: u.s.sagaView(rows[0])}
	if p.Events, err = g.sagaSteps(ctx, u.s.pool, id); err != nil {
		return timelinePage{}, err
	}
	p.TraceURL = u.traceURL(id, p.Events)
	return p, nil
}

// traceURL links to the trace the saga's first traced event belongs to
// (the POST's, when its client sent a traceparent), or else to a search by
// the saga's correlation ID.
func (u *uiServer) traceURL(id uuid.UUID, steps []sagaStep) string {
	if u.jaeger == "" {
		return ""
	}
	for _, st := range steps {
		if st.TraceID != "" {
			return u.jaeger + "/trace/" + st.TraceID
		}
	}
	return u.jaeger + "/search?tags=" + url.QueryEscape(`{"eventsaga.correlation_id":"`+id.String()+`"}`)
}

// order serves /ui/orders/{id}: the order's timeline.
func (u *uiServer) order(c echo.Context) error {
	raw := c.Param("id")
	id, err := httpapi.ParseUUID("id", raw)
	if err != nil {
		return u.notFound(c, "That is not an order ID: an order ID is a UUID.", raw)
	}
	p, err := u.timeline(c.Request().Context(), id)
	if errors.Is(err, ErrNotFound) {
		return u.notFound(c, "The read model has no such order. If it was placed a moment ago, it may not have been projected yet: reload in a moment.", raw)
	}
	if err != nil {
		return u.fail(c, err)
	}
	return u.page(c, http.StatusOK, "order.html", p)
}

type customerPage struct {
	CustomerView
	Available events.Money
	Table     sagaTable
}

// customer serves /ui/customers/{id}: the customer's credit and orders.
func (u *uiServer) customer(c echo.Context) error {
	raw := c.Param("id")
	id, err := httpapi.ParseUUID("id", raw)
	if err != nil {
		return u.notFound(c, "That is not a customer ID: a customer ID is a UUID.", raw)
	}
	ctx := c.Request().Context()
	v, err := generation(u.s.gen.Load()).customer(ctx, u.s.pool, id)
	if errors.Is(err, ErrNotFound) {
		return u.notFound(c, "The read model has no such customer (a customer shows here once it is registered).", raw)
	}
	if err != nil {
		return u.fail(c, err)
	}
	f := sagaFilter{CustomerID: id, Limit: uiPageSize}
	if b := c.QueryParam("before"); b != "" {
		if f.Before, err = httpapi.ParseUUID("before", b); err != nil {
			return u.notFound(c, "That is not a page of this customer's orders.", b)
		}
	}
	p := customerPage{CustomerView: v, Available: v.CreditLimit - v.Reserved}
	if p.Table, err = u.table(ctx, f, url.Values{"customer_id": {id.String()}}, url.URL{Path: "/ui/customers/" + id.String()}); err != nil {
		return u.fail(c, err)
	}
	return u.page(c, http.StatusOK, "customer.html", p)
}

// formatDuration shows a duration to a precision that suits it.
func formatDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "−" + formatDuration(-d)
	case d == 0:
		return "0 ms"
	case d < time.Millisecond:
		return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	case d < time.Minute:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return d.Round(time.Second).String()
	}
}

// formatOffset is a step's time after the order was placed.
func formatOffset(d time.Duration) string {
	if d < 0 {
		return formatDuration(d)
	}
	return "+" + formatDuration(d)
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05.000")
}

// shortID is the end of an ID: IDs made by the services are UUIDv7, whose
// first digits are the time, the same for every ID made in the same minute.
func shortID(id uuid.UUID) string { s := id.String(); return "…" + s[len(s)-8:] }
