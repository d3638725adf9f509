package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/labstack/echo/v4"
)

// The server of Serve has every timeout set, and they leave room for the
// longest request: a write or read timeout shorter than RequestTimeout would
// cut off an answer that is on time.
func TestServeTimeouts(t *testing.T) {
	srv := newServer(ok, serverTimeouts, &connStates{})
	for name, d := range map[string]time.Duration{
		"ReadHeaderTimeout": srv.ReadHeaderTimeout, "ReadTimeout": srv.ReadTimeout,
		"WriteTimeout": srv.WriteTimeout, "IdleTimeout": srv.IdleTimeout,
	} {
		if d <= 0 {
			t.Errorf("%s is not set", name)
		}
	}
	if srv.ReadTimeout <= RequestTimeout || srv.WriteTimeout <= RequestTimeout {
		t.Errorf("read timeout %v and write timeout %v must exceed the request timeout %v", srv.ReadTimeout, srv.WriteTimeout, RequestTimeout)
	}
	const minVersionWait = 3 * time.Second // the projector's
	if RequestTimeout <= minVersionWait {
		t.Errorf("the request timeout %v does not exceed the min_version wait of %v", RequestTimeout, minVersionWait)
	}
}

// A client that sends its headers a byte at a time is cut off after the
// read-header timeout, however long it goes on.
func TestServeCutsOffSlowHeaders(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, slog.New(slog.DiscardHandler), ok, ln, time.Second,
			timeouts{ReadHeader: timeout, Read: time.Minute, Write: time.Minute, Idle: time.Minute})
	}()
	defer func() { cancel(); <-done }()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	go func() { // a header that never ends, a byte every 50ms
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
			return
		}
		for range 200 {
			time.Sleep(50 * time.Millisecond)
			if _, err := conn.Write([]byte("a")); err != nil {
				return
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(make([]byte, 512))
	took := time.Since(start)
	if isTimeout(err) {
		t.Fatalf("the connection is still open after %v of slow headers", took)
	}
	if n != 0 || err == nil {
		t.Errorf("read %d bytes, %v; want the connection closed without an answer", n, err)
	}
	if took < timeout || took > timeout+2*time.Second {
		t.Errorf("cut off after %v; want about the read-header timeout of %v", took, timeout)
	}
}

// A request whose handler waits on a stalled database past the request
// timeout is answered 503 with a problem body, at the timeout; so is one
// whose database is down, or whose connection broke under it (a command's
// COMMIT may then have been applied: the problem says so).
func TestRequestTimeoutAnswers503(t *testing.T) {
	const timeout = 200 * time.Millisecond
	e := newEcho(slog.New(slog.DiscardHandler), timeout, nil)
	e.POST("/stalled", func(c echo.Context) error {
		<-c.Request().Context().Done() // as a query on a stalled database
		return fmt.Errorf("place order: commit: %w", c.Request().Context().Err())
	})
	e.POST("/down", func(c echo.Context) error {
		ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
		defer cancel()
		_, err := pgconn.Connect(ctx, "postgres://nobody@127.0.0.1:1/none?sslmode=disable") // nothing listens on port 1
		return fmt.Errorf("load: %w", err)
	})
	e.POST("/lost", func(c echo.Context) error { // the answer to a COMMIT lost with the connection
		return fmt.Errorf("place order: append: %w", io.ErrUnexpectedEOF)
	})
	e.POST("/terminated", func(c echo.Context) error {
		return fmt.Errorf("place order: append: %w", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"})
	})
	e.GET("/fine", func(c echo.Context) error { return c.String(http.StatusOK, "fine") })

	for _, path := range []string{"/stalled", "/down", "/lost", "/terminated"} {
		start := time.Now()
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, nil))
		took := time.Since(start)
		var p Problem
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
			t.Fatalf("%s: body %q: %v", path, rec.Body, err)
		}
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Content-Type") != ContentType ||
			p.Status != 503 || p.Type != "urn:eventsaga:problem:unavailable" || p.Detail == "" {
			t.Errorf("%s: %d %s %+v; want a 503 problem", path, rec.Code, rec.Header().Get("Content-Type"), p)
		}
		if path != "/down" && !strings.Contains(p.Detail, "may or may not have taken effect") {
			t.Errorf("%s: detail %q does not say that the command's outcome is unknown", path, p.Detail)
		}
		if took > timeout+time.Second {
			t.Errorf("%s answered after %v; the request timeout is %v", path, took, timeout)
		}
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/fine", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("GET /fine: %d %s", rec.Code, rec.Body)
	}
}
