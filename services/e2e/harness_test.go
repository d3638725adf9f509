// Package e2e runs the order and customer services together, in this
// process, against one Kafka cluster and one Postgres server, and checks
// what users see: REST answers and the events on the topics.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsaga/eventsaga/internal/auth"
	"github.com/eventsaga/eventsaga/internal/kafkaconn"
	"github.com/eventsaga/eventsaga/internal/platform"
	"github.com/eventsaga/eventsaga/internal/testenv"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/services/customer"
	"github.com/eventsaga/eventsaga/services/order"
	"github.com/eventsaga/eventsaga/services/projector"
)

// system is both services, their databases and the topics.
type system struct {
	t                           *testing.T
	kafka                       *testenv.Kafka
	ordersTopic, customersTopic string
	orderDB, customerDB         string // connection strings
	readDB                      string
	orderPool, customerPool     *pgxpool.Pool
	order                       *running[*order.Service]
	customer                    *running[*customer.Service]
	projector                   *running[*projector.Service]
	topics                      *testenv.Collector
	// orderDeadline is the order service's ORDER_DEADLINE; 0 is its default.
	orderDeadline time.Duration
	// groups are the services' consumer groups by their plain names: on a
	// shared broker each system's are its own, the same across restarts.
	groups map[string]string
	// dbURL, if set, is the database URL the services are given for each
	// of theirs (a fault-injecting proxy's; see faults_test.go).
	dbURL func(string) string
	// tracing, if set, is each service's tracer provider by its consumer
	// group's plain name (see trace_test.go).
	tracing func(group string) trace.TracerProvider
	// auth is the services' AUTH_* settings; the zero value, an open API.
	auth auth.Config
	// kafkaConn, if set, is how the service with the consumer group of
	// that plain name connects to Kafka (see kafkasecure_test.go).
	kafkaConn func(group string) kafkaconn.Config
	// beforeServices run once the topics and databases exist, before the
	// services start.
	beforeServices []func()
}

// group is the consumer group the service called name uses.
func (s *system) group(name string) string {
	if s.groups == nil {
		s.groups = map[string]string{}
	}
	g, ok := s.groups[name]
	if !ok {
		g = s.kafka.Topic(name)
		s.groups[name] = g
	}
	return g
}

// option changes how startSystem starts the services.
type option func(*system)

// withOrderDeadline runs the order service with deadline d.
func withOrderDeadline(d time.Duration) option { return func(s *system) { s.orderDeadline = d } }

// running is a service serving on a port of its own until stop.
type running[S any] struct {
	svc  S
	url  string
	stop func()
}

func startSystem(t *testing.T, opts ...option) *system {
	t.Helper()
	s := &system{t: t}
	for _, o := range opts {
		o(s)
	}
	if s.kafka == nil {
		s.kafka = testenv.NewKafka(t)
	}
	s.ordersTopic, s.customersTopic = s.kafka.Topic("orders.events"), s.kafka.Topic("customers.events")
	s.kafka.CreateTopics(t, 12, s.ordersTopic, s.customersTopic)
	s.orderDB, s.customerDB, s.readDB = testenv.Database(t), testenv.Database(t), testenv.Database(t)
	for _, f := range s.beforeServices {
		f()
	}
	s.startCustomer()
	s.startOrder()
	s.startProjector()
	s.orderPool, s.customerPool = pool(t, s.orderDB), pool(t, s.customerDB)
	s.topics = s.kafka.Collect(t, s.ordersTopic, s.customersTopic)
	t.Cleanup(s.checkRecords) // first of the cleanups: the services still run
	return s
}

func pool(t *testing.T, url string) *pgxpool.Pool {
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func (s *system) base(db, group string) platform.Config {
	if s.dbURL != nil {
		db = s.dbURL(db)
	}
	var tp trace.TracerProvider
	if s.tracing != nil {
		tp = s.tracing(group)
	}
	var conn kafkaconn.Config
	if s.kafkaConn != nil {
		conn = s.kafkaConn(group)
	}
	return platform.Config{
		DatabaseURL: db, KafkaBrokers: s.kafka.Brokers, Kafka: conn, HTTPAddr: "127.0.0.1:0",
		OrdersTopic: s.ordersTopic, CustomersTopic: s.customersTopic, ShutdownTimeout: 5 * time.Second,
		ConsumerGroup: s.group(group), SnapshotEvery: 100, TracerProvider: tp, Auth: s.auth,
	}
}

func (s *system) startOrder() {
	cfg := order.Config{Config: s.base(s.orderDB, "order-service"), Deadline: s.orderDeadline}
	svc, err := order.New(context.Background(), cfg, testenv.Logger(s.t).With("service", "order"))
	if err != nil {
		s.t.Fatal(err)
	}
	s.order = serve(s.t, svc, svc.Serve)
}

func (s *system) startCustomer() {
	cfg := s.base(s.customerDB, "customer-service")
	svc, err := customer.New(context.Background(), cfg, testenv.Logger(s.t).With("service", "customer"))
	if err != nil {
		s.t.Fatal(err)
	}
	s.customer = serve(s.t, svc, svc.Serve)
}

func (s *system) startProjector() {
	svc, err := projector.New(context.Background(), s.base(s.readDB, "projector"), testenv.Logger(s.t).With("service", "projector"))
	if err != nil {
		s.t.Fatal(err)
	}
	s.projector = serve(s.t, svc, svc.Serve)
}

func serve[S any](t *testing.T, svc S, run func(context.Context, net.Listener) error) *running[S] {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := run(ctx, ln); err != nil {
			t.Errorf("service stopped with: %v", err)
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			// Connections the test's transport dialled but never used
			// would hold the drain for its whole deadline.
			http.DefaultTransport.(*http.Transport).CloseIdleConnections()
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	r := &running[S]{svc: svc, url: "http://" + ln.Addr().String(), stop: stop}
	testenv.WaitFor(t, 10*time.Second, "the service to answer", func() bool {
		status, _ := tryCall(t, r.url+"/healthz")
		return status == 200
	})
	return r
}

// call sends a request and returns the status and the body.
func call(t *testing.T, method, url, body string, headers ...string) (int, []byte) {
	t.Helper()
	status, b, _ := send(t, method, url, body, headers...)
	return status, b
}

// send is call that also returns the response's headers.
func send(t *testing.T, method, url, body string, headers ...string) (int, []byte, http.Header) {
	t.Helper()
	return sendContext(context.Background(), t, method, url, body, headers...)
}

// sendContext is send with the request's context (see sendMalformed).
// Requests and responses are validated against docs/openapi.yaml.
func sendContext(ctx context.Context, t *testing.T, method, url, body string, headers ...string) (int, []byte, http.Header) {
	t.Helper()
	return exchange(ctx, t, apiClient(t), method, url, body, headers...)
}

// exchange sends one request through client and returns the answer.
func exchange(ctx context.Context, t *testing.T, client *http.Client, method, url, body string, headers ...string) (int, []byte, http.Header) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = bytes.NewBufferString(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

// tryCall GETs url and returns the status, or 0 if nothing answered.
func tryCall(t testing.TB, url string) (int, error) {
	resp, err := apiClient(t).Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// mustCall is call that fails the test unless the status is want, and
// decodes the body into out (if not nil).
func mustCall(t *testing.T, want int, out any, method, url, body string, headers ...string) {
	t.Helper()
	status, b := call(t, method, url, body, headers...)
	if status != want {
		t.Fatalf("%s %s: %d %s; want %d", method, url, status, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, url, err, b)
		}
	}
}

type customerView struct {
	CustomerID  uuid.UUID `json:"customer_id"`
	Name        string    `json:"name"`
	CreditLimit string    `json:"credit_limit"`
	Reserved    string    `json:"reserved"`
	Available   string    `json:"available"`
	Version     int64     `json:"version"`
}

type orderView struct {
	OrderID         uuid.UUID `json:"order_id"`
	CustomerID      uuid.UUID `json:"customer_id"`
	Status          string    `json:"status"`
	Total           string    `json:"total"`
	RejectionReason *string   `json:"rejection_reason"`
	Version         int64     `json:"version"`
}

func (s *system) register(name, limit string) uuid.UUID {
	s.t.Helper()
	var out struct {
		CustomerID uuid.UUID `json:"customer_id"`
		Version    int64     `json:"version"`
	}
	mustCall(s.t, 201, &out, "POST", s.customer.url+"/customers", `{"name": "`+name+`", "credit_limit": "`+limit+`"}`)
	return out.CustomerID
}

func (s *system) customerView(id uuid.UUID) customerView {
	s.t.Helper()
	var v customerView
	mustCall(s.t, 200, &v, "GET", s.customer.url+"/customers/"+id.String(), "")
	return v
}

// place places an order of one item and returns its ID.
func (s *system) place(customerID uuid.UUID, quantity int, price string) uuid.UUID {
	s.t.Helper()
	var out struct {
		OrderID uuid.UUID `json:"order_id"`
		Status  string    `json:"status"`
	}
	body := `{"customer_id": "` + customerID.String() + `", "items": [{"product_id": "sku-1", "quantity": ` +
		itoa(quantity) + `, "unit_price": "` + price + `"}]}`
	mustCall(s.t, 201, &out, "POST", s.order.url+"/orders", body)
	if out.Status != "PENDING" {
		s.t.Fatalf("new order is %s", out.Status)
	}
	return out.OrderID
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func (s *system) orderView(id uuid.UUID) orderView {
	s.t.Helper()
	var v orderView
	mustCall(s.t, 200, &v, "GET", s.order.url+"/orders/"+id.String(), "")
	return v
}

// awaitStatus waits until the order is in status over REST.
func (s *system) awaitStatus(id uuid.UUID, status string) orderView {
	s.t.Helper()
	var v orderView
	testenv.WaitFor(s.t, 20*time.Second, "order "+id.String()+" to be "+status, func() bool {
		v = s.orderView(id)
		return v.Status == status
	})
	return v
}

// seen is an event as read from a topic.
type seen struct {
	Topic   string
	Key     string
	Env     events.Envelope
	Data    map[string]any
	Headers []kgo.RecordHeader
}

// seenOn decodes what c has read.
func seenOn(t *testing.T, c *testenv.Collector) []seen {
	t.Helper()
	recs := c.Records()
	out := make([]seen, 0, len(recs))
	for _, r := range recs {
		env, err := events.ParseEnvelope(r.Value)
		if err != nil {
			t.Fatalf("undecodable record on %s: %v", r.Topic, err)
		}
		var data map[string]any
		_ = json.Unmarshal(env.Data, &data)
		out = append(out, seen{Topic: r.Topic, Key: string(r.Key), Env: env, Data: data, Headers: r.Headers})
	}
	return out
}

// saga returns the event types of one saga (correlation ID = the order),
// per topic, in topic order.
func (s *system) saga(orderID uuid.UUID) (onOrders, onCustomers []string) {
	for _, e := range seenOn(s.t, s.topics) {
		if e.Env.CorrelationID != orderID {
			continue
		}
		if e.Topic == s.ordersTopic {
			onOrders = append(onOrders, e.Env.EventType)
		} else {
			onCustomers = append(onCustomers, e.Env.EventType)
		}
	}
	return
}

// awaitSaga waits until the topics show exactly the given events of the
// saga of orderID, and fails on anything else.
func (s *system) awaitSaga(orderID uuid.UUID, onOrders, onCustomers []string) {
	s.t.Helper()
	var o, c []string
	testenv.WaitFor(s.t, 20*time.Second, "the saga's events on the topics", func() bool {
		o, c = s.saga(orderID)
		return len(o) >= len(onOrders) && len(c) >= len(onCustomers)
	})
	if !equal(o, onOrders) || !equal(c, onCustomers) {
		s.t.Fatalf("saga of %s:\n orders.events    %v, want %v\n customers.events %v, want %v", orderID, o, onOrders, c, onCustomers)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// count returns the number of rows of a table.
func count(t *testing.T, p *pgxpool.Pool, table string) int {
	t.Helper()
	var n int
	if err := p.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
