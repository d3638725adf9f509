package httpapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// acceptSignal is a listener that reports each connection it accepts.
type acceptSignal struct {
	net.Listener
	accepted chan net.Conn
}

func (l *acceptSignal) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted <- c
	}
	return c, err
}

// served is Serve running on a port of its own.
type served struct {
	addr     string
	accepted chan net.Conn
	log      *bytes.Buffer
	stop     context.CancelFunc
	done     chan error
}

func startServe(t *testing.T, h http.Handler, drain time.Duration) *served {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &served{addr: ln.Addr().String(), accepted: make(chan net.Conn, 16), log: &bytes.Buffer{}, done: make(chan error, 1)}
	log := slog.New(slog.NewTextHandler(s.log, nil))
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go func() { s.done <- Serve(ctx, log, h, &acceptSignal{Listener: ln, accepted: s.accepted}, drain) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return s
}

// stopped stops the server and returns what Serve returned and how long
// it took.
func (s *served) stopped(t *testing.T, within time.Duration) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	s.stop()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		return time.Since(start), err
	case <-time.After(within):
		t.Fatalf("Serve did not return within %v of the stop", within)
		return 0, nil
	}
}

func (s *served) awaitAccepted(t *testing.T) {
	t.Helper()
	select {
	case <-s.accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not accept the connection")
	}
}

// assertClosed checks that the server closed conn and no longer listens.
func (s *served) assertClosed(t *testing.T, conn net.Conn) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
		t.Errorf("the client's connection is still open after the shutdown: read %d, %v", n, err)
	}
	if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		c.Close()
		t.Error("the server still accepts connections after the shutdown")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })

// A client that holds a connection it never sent a request on (as an HTTP
// transport does with a dial it ended up not needing) does not make the
// shutdown fail: http.Server.Shutdown counts the connection as busy for its
// first 5 seconds, so the drain runs out; then the connection is closed, the
// closing logged, and Serve returns nil.
func TestServeClosesUnusedConnectionAfterDrain(t *testing.T) {
	const drain = 300 * time.Millisecond
	s := startServe(t, ok, drain)
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s.awaitAccepted(t)

	took, err := s.stopped(t, drain+3*time.Second)
	if err != nil {
		t.Fatalf("Serve returned %v; want nil: an unused connection is not a failure", err)
	}
	if took < drain {
		t.Errorf("Serve returned after %v, before the drain of %v ran out", took, drain)
	}
	if took > drain+time.Second {
		t.Errorf("Serve returned after %v; want about the drain of %v", took, drain)
	}
	s.assertClosed(t, conn)
	log := s.log.String()
	for _, want := range []string{"level=WARN", "closed the connections left", "closed=1", "unused=1", "in_flight=0"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not say %q:\n%s", want, log)
		}
	}
}

// An idle keep-alive connection does not hold the shutdown up at all.
func TestServeClosesIdleConnectionsAtOnce(t *testing.T) {
	const drain = 3 * time.Second
	s := startServe(t, ok, drain)
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s.awaitAccepted(t)
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	if n, err := conn.Read(buf); err != nil || !bytes.Contains(buf[:n], []byte("200 OK")) {
		t.Fatalf("read %q, %v", buf[:n], err)
	}

	took, err := s.stopped(t, drain+3*time.Second)
	if err != nil {
		t.Fatalf("Serve returned %v", err)
	}
	if took >= drain {
		t.Errorf("Serve took %v: it waited out the drain for an idle connection", took)
	}
	s.assertClosed(t, conn)
	if s.log.Len() != 0 {
		t.Errorf("a clean shutdown logged:\n%s", s.log)
	}
}

// A request still in flight when the drain runs out is cut off, and that
// is an error.
func TestServeCuttingARequestIsAnError(t *testing.T) {
	const drain = 300 * time.Millisecond
	release, entered := make(chan struct{}), make(chan struct{})
	defer close(release)
	s := startServe(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
	}), drain)
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not reach the handler")
	}

	_, err = s.stopped(t, drain+3*time.Second)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 request(s) still in flight") {
		t.Fatalf("Serve returned %v; want the cut request as an error", err)
	}
	s.assertClosed(t, conn)
	if log := s.log.String(); !strings.Contains(log, "closed=1") || !strings.Contains(log, "in_flight=1") {
		t.Errorf("the log does not say what was closed:\n%s", log)
	}
}

// failingListener fails to accept.
type failingListener struct{ net.Listener }

func (failingListener) Accept() (net.Conn, error) { return nil, errors.New("accept: broken") }

// A server that cannot serve returns the error.
func TestServeReturnsAServingFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = Serve(context.Background(), slog.New(slog.DiscardHandler), ok, failingListener{ln}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "accept: broken") {
		t.Fatalf("Serve returned %v", err)
	}
}
