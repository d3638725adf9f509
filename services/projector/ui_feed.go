package projector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/eventsaga/eventsaga/internal/httpapi"
	"github.com/eventsaga/eventsaga/pkg/outbox"
)

// The live feed: after each committed batch the projection tells the feed
// which sagas it touched; each open page (an EventSource on /ui/events)
// reads those sagas back from the read model and gets their rows, or its
// order's timeline, rendered by the templates that render the pages.
//
// The projection never waits for a page: a subscriber whose buffer is full
// is dropped (its browser reconnects by itself). A page sees what this
// instance projects: with several projector instances, only the partitions
// this one holds.
const (
	// feedBuffer is how many batches a subscriber may fall behind.
	feedBuffer = 64
	// feedGather is how long a stream gathers batches before it reads the
	// sagas they touched: one query for many batches under load.
	feedGather = 100 * time.Millisecond
	// feedMaxSagas bounds the sagas one update reads; the newest win (a
	// page shows the newest).
	feedMaxSagas = 100
	// feedHeartbeat is how often an idle stream sends a comment, which
	// finds a client gone and keeps proxies from closing the stream.
	feedHeartbeat = 15 * time.Second
	// feedWriteTimeout bounds each write to a stream: a client that does
	// not read is cut off.
	feedWriteTimeout = 10 * time.Second
)

// feed hands each subscriber the saga (order) IDs of each committed batch.
// Its zero value is ready.
type feed struct {
	mu     sync.Mutex
	subs   map[chan []uuid.UUID]struct{}
	n      atomic.Int32 // len(subs), read without the lock
	closed bool
}

// committed is the projection's AfterCommit: it wakes the queries waiting
// for a version, then the live pages.
func (s *Service) committed(ds []outbox.Delivery) {
	s.recent.record(ds)
	s.feed.publish(ds)
}

// publish sends the batch's saga IDs to every subscriber, dropping those
// that are too far behind. A saga's events all carry the order's ID as
// correlation ID; a customer's own events carry the customer's, which no
// page asks for.
func (f *feed) publish(ds []outbox.Delivery) {
	if f.n.Load() == 0 {
		return
	}
	ids := make([]uuid.UUID, 0, len(ds))
	for _, d := range ds {
		if id := d.Envelope.CorrelationID; id != uuid.Nil && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.subs {
		select {
		case ch <- ids:
		default:
			f.drop(ch)
		}
	}
}

// subscribe returns a channel of batches, or nil once the feed is closed.
func (f *feed) subscribe() chan []uuid.UUID {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	if f.subs == nil {
		f.subs = map[chan []uuid.UUID]struct{}{}
	}
	ch := make(chan []uuid.UUID, feedBuffer)
	f.subs[ch] = struct{}{}
	f.n.Add(1)
	return ch
}

// unsubscribe ends a subscription, if the feed has not already.
func (f *feed) unsubscribe(ch chan []uuid.UUID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.subs[ch]; ok {
		f.drop(ch)
	}
}

func (f *feed) drop(ch chan []uuid.UUID) {
	delete(f.subs, ch)
	f.n.Add(-1)
	close(ch)
}

// close ends every subscription and refuses new ones: the service is
// stopping.
func (f *feed) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for ch := range f.subs {
		f.drop(ch)
	}
}

// feedQuery is what one stream follows: the sagas of a list (customer and
// status filters, as on the page), or one order's timeline.
type feedQuery struct {
	list  sagaFilter
	order uuid.UUID
}

func parseFeedQuery(c echo.Context) (feedQuery, error) {
	var q feedQuery
	var err error
	if v := c.QueryParam("order_id"); v != "" {
		q.order, err = httpapi.ParseUUID("order_id", v)
		return q, err
	}
	q.list, err = parseSagaFilter(c)
	return q, err
}

// streamFeed serves GET /ui/events, a stream of server-sent events:
// "sagas" events {"rows": [{"id", "html"}], "gone": [id], "all": bool} for
// a list (the rows of the sagas a batch touched that match the filters, and
// the IDs of those that no longer do; first, the whole page, "all"), or
// "timeline" events {"html"} for an order.
//
// It runs outside the API's middleware (see register): a stream outlives the
// request deadline, and its context must end only when the client goes.
func (u *uiServer) streamFeed(c echo.Context) error {
	s := u.s
	q, err := parseFeedQuery(c)
	if err != nil {
		return err
	}
	ch := s.feed.subscribe()
	if ch == nil {
		return httpapi.Unavailable("the service is stopping")
	}
	defer s.feed.unsubscribe(ch)
	ctx := c.Request().Context()
	w := c.Response()
	rc := http.NewResponseController(w.Writer)
	// The server's read timeout would end the stream: net/http cancels a
	// request whose connection's read deadline passes. Behind a writer
	// that cannot clear it, the stream ends with the timeout and the
	// browser reconnects.
	if err := rc.SetReadDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	h := w.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set("Cache-Control", "no-store")
	setUIHeaders(h)
	w.WriteHeader(http.StatusOK)
	send := func(b []byte) error {
		if err := rc.SetWriteDeadline(time.Now().Add(feedWriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := send([]byte("retry: 2000\n: subscribed\n\n")); err != nil {
		return nil
	}
	// What the page shows, as of now that the stream is subscribed: what
	// was committed between the page's rendering (or a dropped stream)
	// and the subscription is in it, and what comes after, in the feed.
	if msg, err := u.feedUpdate(ctx, q, nil); err != nil {
		if ctx.Err() == nil {
			s.log.WarnContext(ctx, "saga view: live update failed", "err", err)
		}
	} else if msg != nil {
		if err := send(msg); err != nil {
			return nil
		}
	}
	heartbeat := time.NewTicker(feedHeartbeat)
	defer heartbeat.Stop()
	pending := map[uuid.UUID]bool{}
	var gather <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ids, ok := <-ch:
			if !ok {
				return nil // dropped, or the service is stopping
			}
			for _, id := range ids {
				if q.order == uuid.Nil || id == q.order {
					pending[id] = true
				}
			}
			if gather == nil && len(pending) > 0 {
				gather = time.After(feedGather)
			}
			continue
		case <-heartbeat.C:
			if err := send([]byte(": ping\n\n")); err != nil {
				return nil
			}
			continue
		case <-gather:
		}
		gather = nil
		msg, err := u.feedUpdate(ctx, q, pending)
		clear(pending)
		if err != nil {
			if ctx.Err() == nil {
				s.log.WarnContext(ctx, "saga view: live update failed", "err", err)
			}
			continue
		}
		if msg != nil {
			if err := send(msg); err != nil {
				return nil
			}
		}
	}
}

// feedUpdate renders the event that tells a page about the sagas in ids,
// or nil if there is nothing to tell. With ids nil it tells the whole list
// the page shows (its filters, its page), marked "all": the page replaces
// its rows with these.
func (u *uiServer) feedUpdate(ctx context.Context, q feedQuery, ids map[uuid.UUID]bool) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, httpapi.RequestTimeout)
	defer cancel()
	if q.order != uuid.Nil {
		page, err := u.timeline(ctx, q.order)
		if errors.Is(err, ErrNotFound) {
			return nil, nil // its OrderCreated is yet to be projected
		}
		if err != nil {
			return nil, err
		}
		var html bytes.Buffer
		if err := ui.render(&html, "order.html", "timeline", page); err != nil {
			return nil, err
		}
		return sse("timeline", map[string]string{"html": html.String()})
	}
	f := q.list
	var list []uuid.UUID
	if ids != nil {
		list = make([]uuid.UUID, 0, len(ids))
		for id := range ids {
			list = append(list, id)
		}
		// The newest first (UUIDv7 sort by time), and no more than a page shows.
		slices.SortFunc(list, func(a, b uuid.UUID) int { return bytes.Compare(b[:], a[:]) })
		list = list[:min(len(list), feedMaxSagas)]
		f.IDs, f.Before, f.Limit = list, uuid.Nil, len(list)
	}
	rows, err := generation(u.s.gen.Load()).recentSagas(ctx, u.s.pool, f)
	if err != nil {
		return nil, err
	}
	type row struct {
		ID   uuid.UUID `json:"id"`
		HTML string    `json:"html"`
	}
	out := struct {
		Rows []row       `json:"rows"`
		Gone []uuid.UUID `json:"gone"`
		All  bool        `json:"all"`
	}{Rows: []row{}, Gone: []uuid.UUID{}, All: ids == nil}
	found := map[uuid.UUID]bool{}
	for _, r := range rows {
		var html bytes.Buffer
		if err := ui.render(&html, "sagas.html", "saga-row", u.s.sagaView(r)); err != nil {
			return nil, err
		}
		out.Rows = append(out.Rows, row{ID: r.OrderID, HTML: html.String()})
		found[r.OrderID] = true
	}
	// Those not found left the filter (or are not orders at all: a
	// customer's own events); a page drops their rows if it shows them.
	for _, id := range list {
		if !found[id] {
			out.Gone = append(out.Gone, id)
		}
	}
	return sse("sagas", out)
}

// sse frames v as a server-sent event. JSON has no raw newlines, so the
// data is one line.
func sse(event string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if bytes.ContainsAny(b, "\r\n") {
		return nil, errors.New("an event's JSON has a newline")
	}
	var buf bytes.Buffer
	buf.WriteString("event: ")
	buf.WriteString(event)
	buf.WriteString("\ndata: ")
	buf.Write(b)
	buf.WriteString("\n\n")
	return buf.Bytes(), nil
}
