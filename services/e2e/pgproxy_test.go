package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// loseTheAnswer is the NOTICE that arms the proxy on a connection: a
// trigger raises it in the transaction whose COMMIT is to reach Postgres
// and succeed while its answer never reaches the client.
const loseTheAnswer = "fault injection: lose the answer to this commit"

// pgProxy stands between the services and Postgres and loses connections
// at the worst moment: once a connection has carried a loseTheAnswer
// NOTICE, the proxy holds back what the server says next, and when that
// ends with the transaction committed (ReadyForQuery idle, no error, no
// ROLLBACK) it drops what it held and closes both sides. The client then
// sees a lost connection for a COMMIT that took effect: the outcome it
// cannot know. Everything else passes through untouched; connections must
// not use TLS.
type pgProxy struct {
	t      testing.TB
	target string // host:port of the server
	ln     net.Listener
	lost   atomic.Int32 // answers lost so far

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

// newPGProxy forwards to the server of serverURL until the test ends.
func newPGProxy(t testing.TB, serverURL string) *pgProxy {
	t.Helper()
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{t: t, target: u.Host, ln: ln, conns: map[net.Conn]bool{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// url is dbURL with the proxy in the server's place.
func (p *pgProxy) url(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		p.t.Fatalf("proxy: %v", err)
	}
	u.Host = p.ln.Addr().String()
	q := u.Query()
	q.Set("sslmode", "disable") // the proxy reads the server's messages
	u.RawQuery = q.Encode()
	return u.String()
}

// Lost is how many answers to a COMMIT the proxy has lost.
func (p *pgProxy) Lost() int { return int(p.lost.Load()) }

func (p *pgProxy) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// track registers c to be closed with the proxy; false if it is closing.
func (p *pgProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *pgProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *pgProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(client) {
			return
		}
		p.wg.Go(func() { p.serve(client) })
	}
}

func (p *pgProxy) serve(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil || !p.track(server) {
		p.untrack(client)
		return
	}
	defer p.untrack(client, server)
	p.wg.Go(func() {
		_, _ = io.Copy(server, client)
		p.untrack(client, server)
	})
	p.relay(bufio.NewReaderSize(server, 64<<10), client)
}

// relay forwards the server's messages to the client, message by message
// (type byte, then a length that counts itself), losing the answer to a
// COMMIT as described on pgProxy.
func (p *pgProxy) relay(from *bufio.Reader, client net.Conn) {
	to := bufio.NewWriterSize(client, 64<<10)
	armed := false
	var held []byte
	for {
		msg, err := readMessage(from)
		if err != nil {
			_ = to.Flush()
			return
		}
		switch typ := msg[0]; {
		case typ == 'N' && bytes.Contains(msg, []byte(loseTheAnswer)):
			armed = true // and the NOTICE itself goes nowhere
		case !armed:
			_, _ = to.Write(msg)
		default:
			held = append(held, msg...)
			if typ != 'Z' {
				break
			}
			switch status := msg[5]; {
			case status == 'I' && committed(held):
				p.lost.Add(1)
				return // serve closes both sides: the answer is lost
			case status == 'T':
				// Still in the transaction: its COMMIT is yet to come.
				_, _ = to.Write(held)
				held = held[:0]
			default: // it failed or rolled back: nothing to lose
				_, _ = to.Write(held)
				held, armed = held[:0], false
			}
		}
		if from.Buffered() == 0 {
			if err := to.Flush(); err != nil {
				return
			}
		}
	}
}

// readMessage reads one message of the server.
func readMessage(r *bufio.Reader) ([]byte, error) {
	head := make([]byte, 5)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(head[1:]))
	if n < 4 || n > 1<<30 {
		return nil, errors.New("proxy: not a Postgres message")
	}
	msg := make([]byte, 1+n)
	copy(msg, head)
	_, err := io.ReadFull(r, msg[5:])
	return msg, err
}

// committed reports whether the server's messages up to an idle
// ReadyForQuery show a transaction that committed: no ErrorResponse, and no
// COMMIT answered "ROLLBACK" (what a failed transaction's COMMIT gets).
func committed(msgs []byte) bool {
	for len(msgs) > 0 {
		n := 1 + int(binary.BigEndian.Uint32(msgs[1:5]))
		switch msgs[0] {
		case 'E':
			return false
		case 'C':
			if bytes.HasPrefix(msgs[5:n], []byte("ROLLBACK")) {
				return false
			}
		}
		msgs = msgs[n:]
	}
	return true
}
