package projector

import (
	"bufio"
	"bytes"
	"context"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/testenv"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
	"github.com/eventsaga/eventsaga/pkg/outbox"
)

const hostileName = "<script>alert(1)</script>"

// sagaFixture is a read model with one customer and one approved order
// in it, projected through apply with redeliveries, served by the routes.
type sagaFixture struct {
	t        *testing.T
	s        *Service
	h        http.Handler
	p        projection
	customer uuid.UUID
	order    uuid.UUID
	at       time.Time
}

const trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

func newSagaFixture(t *testing.T, customerName string) *sagaFixture {
	t.Helper()
	pool := testenv.Postgres(t, Migration())
	s := &Service{log: testenv.Logger(t), pool: pool, registry: events.NewRegistry()}
	if err := registry(s.registry); err != nil {
		t.Fatal(err)
	}
	g, err := store{pool: pool}.current(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s.gen.Store(int64(g))
	f := &sagaFixture{t: t, s: s, p: projection{registry: s.registry, gen: g},
		customer: uuid.New(), order: uuid.Must(uuid.NewV7()), at: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	s.http = s.routes()
	f.h = s.http

	c, o := f.customer, f.order
	registered := f.delivery(c, 1, c, customers.CustomerRegistered{CustomerID: c, Name: customerName, CreditLimit: 10000}, "")
	created := f.delivery(o, 1, o, orders.OrderCreated{OrderID: o, CustomerID: c, Total: 1000}, trace)
	reserved := f.delivery(c, 2, o, customers.CreditReserved{CustomerID: c, OrderID: o, Amount: 1000}, trace)
	approved := f.delivery(o, 2, o, orders.OrderApproved{OrderID: o, CustomerID: c, Total: 1000}, trace)
	settled := f.delivery(c, 3, o, customers.CreditSettled{CustomerID: c, OrderID: o, Amount: 1000}, trace)
	// Batches as a consumer may give them, with redeliveries.
	f.apply(registered, created)
	f.apply(created, reserved, approved)
	f.apply(settled, reserved, created)
	return f
}

// delivery makes a delivery of data as the version-th event of aggregate
// id, 1.5 ms after the previous one.
func (f *sagaFixture) delivery(id uuid.UUID, version int64, correlation uuid.UUID, data events.Event, traceParent string) outbox.Delivery {
	f.t.Helper()
	typ, sv, raw, err := f.s.registry.Encode(data)
	if err != nil {
		f.t.Fatal(err)
	}
	aggType := customers.AggregateType
	if strings.HasPrefix(typ, "Order") {
		aggType = orders.AggregateType
	}
	f.at = f.at.Add(1500 * time.Microsecond)
	rec := &kgo.Record{}
	if traceParent != "" {
		rec.Headers = []kgo.RecordHeader{{Key: events.HeaderTraceParent, Value: []byte(traceParent)}}
	}
	return outbox.Delivery{Record: rec, Envelope: events.Envelope{
		EventID: uuid.New(), EventType: typ, SchemaVersion: sv, AggregateType: aggType, AggregateID: id,
		AggregateVersion: version, OccurredAt: f.at, CorrelationID: correlation, CausationID: uuid.New(), Data: raw,
	}}
}

func (f *sagaFixture) apply(ds ...outbox.Delivery) {
	f.t.Helper()
	err := pgx.BeginFunc(context.Background(), f.s.pool, func(tx pgx.Tx) error { return f.p.apply(context.Background(), tx, ds) })
	if err != nil {
		f.t.Fatal(err)
	}
}

// get fetches path and checks the status and that the answer is HTML.
func (f *sagaFixture) get(path string, status int) string {
	f.t.Helper()
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != status {
		f.t.Fatalf("GET %s: %d, want %d: %s", path, rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		f.t.Fatalf("GET %s: Content-Type %q", path, ct)
	}
	if rec.Header().Get("Content-Security-Policy") == "" {
		f.t.Fatalf("GET %s: no Content-Security-Policy", path)
	}
	return rec.Body.String()
}

var stepType = regexp.MustCompile(`data-type="(\w+)"`)

// The saga log holds each event of the saga once whatever the redeliveries,
// with the credit around the customer's; the timeline shows them in order.
func TestSagaTimeline(t *testing.T) {
	t.Setenv("JAEGER_UI_URL", "http://jaeger.example:16686/")
	f := newSagaFixture(t, "Ada")
	g := generation(f.s.gen.Load())
	steps, err := g.sagaSteps(context.Background(), f.s.pool, f.order)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, st := range steps {
		got = append(got, st.EventType)
	}
	want := []string{"OrderCreated", "CreditReserved", "OrderApproved", "CreditSettled"}
	if !slices.Equal(got, want) {
		t.Fatalf("saga log %v, want %v", got, want)
	}
	for i, st := range steps {
		if st.Offset != time.Duration(i)*1500*time.Microsecond {
			t.Errorf("step %d (%s): offset %v", i, st.EventType, st.Offset)
		}
		if st.TraceID != "0af7651916cd43dd8448eb211c80319c" {
			t.Errorf("step %d: trace %q", i, st.TraceID)
		}
	}
	if c := steps[1].Credit; c == nil || c.AvailableBefore() != 10000 || c.AvailableAfter() != 9000 {
		t.Errorf("CreditReserved's credit: %+v", c)
	}
	if c := steps[3].Credit; c == nil || c.AvailableBefore() != 9000 || c.AvailableAfter() != 9000 {
		t.Errorf("CreditSettled's credit: %+v", c)
	}
	if steps[0].Credit != nil || steps[0].Amount == nil || *steps[0].Amount != 1000 {
		t.Errorf("OrderCreated: %+v", steps[0])
	}

	page := html.UnescapeString(f.get("/ui/orders/"+f.order.String(), http.StatusOK))
	var shown []string
	for _, m := range stepType.FindAllStringSubmatch(page, -1) {
		shown = append(shown, m[1])
	}
	if !slices.Equal(shown, want) {
		t.Errorf("the timeline shows %v, want %v", shown, want)
	}
	for _, s := range []string{
		`+0 ms`, `+1.5 ms`, `+4.5 ms`,
		`available <span class="before">100.00</span> → <span class="after">90.00</span>`,
		`href="http://jaeger.example:16686/trace/0af7651916cd43dd8448eb211c80319c"`,
		`>Ada</a>`, `APPROVED`,
	} {
		if !strings.Contains(page, s) {
			t.Errorf("the timeline lacks %q", s)
		}
	}

	list := f.get("/ui", http.StatusOK)
	for _, s := range []string{`id="saga-` + f.order.String() + `"`, `data-steps="4"`, `data-status="APPROVED"`, `4.5 ms`} {
		if !strings.Contains(list, s) {
			t.Errorf("the list lacks %q", s)
		}
	}
	if other := f.get("/ui?status=REJECTED", http.StatusOK); strings.Contains(other, f.order.String()) {
		t.Error("the REJECTED filter shows an approved order")
	}
	if other := f.get("/ui?customer_id="+uuid.NewString(), http.StatusOK); strings.Contains(other, f.order.String()) {
		t.Error("another customer's filter shows the order")
	}
	cust := f.get("/ui/customers/"+f.customer.String(), http.StatusOK)
	for _, s := range []string{`<dd id="credit-limit">100.00</dd>`, `<dd id="reserved">10.00</dd>`, `<dd id="available">90.00</dd>`, f.order.String()} {
		if !strings.Contains(cust, s) {
			t.Errorf("the customer's page lacks %q", s)
		}
	}
}

// Without JAEGER_UI_URL there is no trace link; with it, a saga without a
// traceparent links to a search by its correlation ID.
func TestTraceURL(t *testing.T) {
	u := &uiServer{}
	id := uuid.New()
	if got := u.traceURL(id, nil); got != "" {
		t.Errorf("no JAEGER_UI_URL: %q", got)
	}
	u.jaeger = "http://j:16686"
	if got, want := u.traceURL(id, []sagaStep{{}}), `http://j:16686/search?tags=%7B%22eventsaga.correlation_id%22%3A%22`+id.String()+`%22%7D`; got != want {
		t.Errorf("untraced: %q, want %q", got, want)
	}
	for _, tp := range []string{"", "00-00000000000000000000000000000000-b7ad6b7169203331-01", "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", "junk"} {
		if traceID(tp) != "" {
			t.Errorf("traceID(%q) = %q", tp, traceID(tp))
		}
	}
}

// Whatever the event data or the URL hold, the pages show it as text.
func TestUIEscapes(t *testing.T) {
	f := newSagaFixture(t, hostileName)
	escaped := "&lt;script&gt;alert(1)&lt;/script&gt;"
	for _, path := range []string{"/ui", "/ui/orders/" + f.order.String(), "/ui/customers/" + f.customer.String()} {
		page := f.get(path, http.StatusOK)
		if strings.Contains(page, hostileName) || !strings.Contains(page, escaped) {
			t.Errorf("%s does not escape the customer's name", path)
		}
	}
	// The row the live feed sends is rendered by the same template.
	var row bytes.Buffer
	if err := ui.render(&row, "sagas.html", "saga-row", sagaView{CustomerName: hostileName, Status: "REJECTED", Reason: `"><img src=x onerror=alert(1)>`}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(row.String(), "<script") || strings.Contains(row.String(), "<img") {
		t.Errorf("a row does not escape: %s", row.String())
	}
	page := f.get("/ui/orders/%3Cscript%3Ealert(1)%3C%2Fscript%3E", http.StatusNotFound)
	if strings.Contains(page, "<script>alert") {
		t.Errorf("the 404 page does not escape the ID it was asked for: %s", page)
	}
	if page := f.get("/ui?customer_id=%3Cscript%3E", http.StatusBadRequest); strings.Contains(page, "<script>") {
		t.Errorf("the list does not escape its filter: %s", page)
	}
}

// An unknown or malformed order or customer, or page, is a friendly 404.
func TestUINotFound(t *testing.T) {
	f := newSagaFixture(t, "Ada")
	for _, path := range []string{
		"/ui/orders/" + uuid.NewString(), "/ui/orders/not-an-id", "/ui/orders/",
		"/ui/customers/" + uuid.NewString(), "/ui/customers/42",
		"/ui/customers/" + f.order.String(), // an order's ID is no customer's
		"/ui/nope", "/ui/static/nope.js",
	} {
		page := f.get(path, http.StatusNotFound)
		if !strings.Contains(page, "<h1>Not found</h1>") || !strings.Contains(page, `href="/ui"`) {
			t.Errorf("GET %s: not the friendly 404 page:\n%s", path, page)
		}
	}
	f.get("/ui?status=NOPE", http.StatusBadRequest)
}

// The live feed streams the rows of the sagas each commit touched, and
// ends when the service stops.
func TestLiveFeed(t *testing.T) {
	f := newSagaFixture(t, "Ada")
	srv := httptest.NewServer(f.h)
	defer srv.Close()
	for _, q := range []string{"?status=NOPE", "?order_id=x"} {
		resp, err := http.Get(srv.URL + "/ui/events" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("/ui/events%s: %d", q, resp.StatusCode)
		}
	}

	list := f.stream(srv.URL + "/ui/events")
	other := f.stream(srv.URL + "/ui/events?status=PENDING")
	timeline := f.stream(srv.URL + "/ui/events?order_id=" + f.order.String())
	c, o := f.customer, f.order
	// Each stream starts with what its page shows, as of its subscription.
	if ev := list.next("sagas"); !strings.Contains(ev, `"all":true`) || !strings.Contains(ev, `"id":"`+o.String()+`"`) {
		t.Errorf("the list's first event: %s", ev)
	}
	if ev := other.next("sagas"); !strings.Contains(ev, `"rows":[],"gone":[],"all":true`) {
		t.Errorf("the PENDING list's first event: %s", ev)
	}
	if ev := timeline.next("timeline"); !strings.Contains(ev, `data-type=\"CreditSettled\"`) {
		t.Errorf("the timeline's first event: %s", ev)
	}
	if n := f.s.feed.n.Load(); n != 3 {
		t.Fatalf("%d subscribers, want 3", n)
	}
	f.s.committed([]outbox.Delivery{f.delivery(o, 3, o, orders.OrderCancelled{OrderID: o, CustomerID: c, Total: 1000, PreviousStatus: orders.StatusApproved}, "")})

	ev := list.next("sagas")
	if !strings.Contains(ev, `"id":"`+o.String()+`"`) || !strings.Contains(ev, `data-status=\"APPROVED\"`) || !strings.Contains(ev, `"all":false`) {
		// The delivery was published without being applied: the row is
		// still APPROVED, which is what the feed reads back.
		t.Errorf("list update: %s", ev)
	}
	if ev := other.next("sagas"); !strings.Contains(ev, `"rows":[]`) || !strings.Contains(ev, `"gone":["`+o.String()+`"]`) {
		t.Errorf("PENDING list update: %s", ev)
	}
	if ev := timeline.next("timeline"); !strings.Contains(ev, `data-type=\"CreditSettled\"`) {
		t.Errorf("timeline update: %s", ev)
	}

	f.s.feed.close()
	for _, s := range []*sseStream{list, other, timeline} {
		if ev := s.next(""); ev != "EOF" {
			t.Errorf("after close: %q", ev)
		}
	}
	if f.s.feed.subscribe() != nil {
		t.Error("a closed feed takes subscribers")
	}
}

type sseStream struct {
	t    *testing.T
	body io.ReadCloser
	r    *bufio.Reader
}

func (f *sagaFixture) stream(url string) *sseStream {
	f.t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		f.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		f.t.Fatalf("GET %s: %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	f.t.Cleanup(func() { resp.Body.Close() })
	return &sseStream{t: f.t, body: resp.Body, r: bufio.NewReader(resp.Body)}
}

// next returns the data of the next event of type typ, skipping comments,
// or "EOF" when the stream ends.
func (s *sseStream) next(typ string) string {
	s.t.Helper()
	timer := time.AfterFunc(5*time.Second, func() { s.body.Close() })
	defer timer.Stop()
	event := ""
	for {
		line, err := s.r.ReadString('\n')
		if err == io.EOF {
			return "EOF"
		}
		if err != nil {
			s.t.Fatalf("waiting for a %q event: %v", typ, err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && event == typ:
			return strings.TrimPrefix(line, "data: ")
		}
	}
}

// A subscriber that falls behind is dropped; publishing never waits.
func TestFeedDropsASlowSubscriber(t *testing.T) {
	var f feed
	slow, fast := f.subscribe(), f.subscribe()
	d := outbox.Delivery{Envelope: events.Envelope{CorrelationID: uuid.New()}}
	for range feedBuffer + 1 {
		f.publish([]outbox.Delivery{d})
		<-fast
	}
	n := 0
	for range slow {
		n++
	}
	if n != feedBuffer {
		t.Errorf("the slow subscriber got %d batches before it was dropped, want %d", n, feedBuffer)
	}
	if f.n.Load() != 1 {
		t.Errorf("%d subscribers, want 1", f.n.Load())
	}
	f.unsubscribe(fast)
	f.unsubscribe(slow) // already dropped: no double close
	if f.n.Load() != 0 {
		t.Errorf("%d subscribers, want 0", f.n.Load())
	}
}

// Migration 002 gives a generation made before the saga log the same table
// a new generation gets.
func TestSagaLogMigration(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Postgres(t, Migration())
	st := store{pool: pool}
	if _, err := st.current(ctx); err != nil {
		t.Fatal(err)
	}
	g2, err := st.startBuilding(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ddl, err := migrations.ReadFile("migrations/002_saga_log.sql")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "DROP TABLE rm_saga_log_g1"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, string(ddl)); err != nil {
		t.Fatal(err)
	}
	shape := func(table string) string {
		var s string
		err := pool.QueryRow(ctx, `
SELECT string_agg(column_name || ' ' || data_type || ' ' || is_nullable, ', ' ORDER BY ordinal_position)
    || ' / ' || (SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = $1::text::regclass AND indisprimary)
FROM information_schema.columns WHERE table_name = $1::text`, table).Scan(&s)
		if err != nil {
			t.Fatal(err)
		}
		return strings.ReplaceAll(s, table, "T")
	}
	if a, b := shape("rm_saga_log_g1"), shape(g2.sagaLog()); a != b {
		t.Errorf("the migration's table:\n %s\nthe new generation's:\n %s", a, b)
	}
}

// startBuilding makes a new generation as a rebuild leaves it just before
// the switch: registered, loaded (here with nothing) and finished.
func (s store) startBuilding(ctx context.Context) (generation, error) {
	g, err := s.startBulk(ctx)
	if err != nil {
		return 0, err
	}
	return g, s.finishBulk(ctx, g)
}

// The saga log comes and goes with its generation: a rebuild's generation
// has its own, a replaced generation's is dropped with its other tables,
// and so is an abandoned one's.
func TestSagaLogFollowsGenerations(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Postgres(t, Migration())
	st := store{pool: pool}
	exists := func(g generation) bool {
		var ok bool
		if err := pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, g.sagaLog()).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	g1, err := st.current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g2, err := st.startBuilding(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !exists(g1) || !exists(g2) {
		t.Fatal("a generation without its saga log")
	}
	if err := st.switchTo(ctx, g2); err != nil {
		t.Fatal(err)
	}
	g3, err := st.startBuilding(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.switchTo(ctx, g3); err != nil {
		t.Fatal(err)
	}
	if exists(g1) || !exists(g2) || !exists(g3) {
		t.Errorf("after two switches: saga logs of g1 %v, g2 %v, g3 %v; want false, true, true", exists(g1), exists(g2), exists(g3))
	}
	g4, err := st.startBuilding(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.abandon(ctx, g4)
	if exists(g4) {
		t.Error("an abandoned generation's saga log is left")
	}
}

// A read model that cannot be read is an error page, not a problem+json.
func TestUIErrorPage(t *testing.T) {
	f := newSagaFixture(t, "Ada")
	f.s.pool.Close()
	if page := f.get("/ui", http.StatusInternalServerError); !strings.Contains(page, "<h1>Internal Server Error</h1>") {
		t.Errorf("not the error page:\n%s", page)
	}
}
