// Command projbench measures the projector: how fast a rebuild projects a
// topic of many events, and how long an event on a topic takes to be
// visible in a query at a steady rate.
//
//	go run ./cmd/projbench                       # in-process kfake
//	KAFKA_BROKERS=127.0.0.1:9092 go run ./cmd/projbench
//
// It works in databases of its own (projbench_*), made afresh and dropped
// at the end, on the server of DATABASE_URL (default: the local Postgres),
// and on topics of its own.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/devbroker"
	"github.com/eventsaga/eventsaga/internal/pgdb"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/services/projector"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// The lag run starts the broker and the projector as processes of their
	// own, as deployed, by running this program again with these commands.
	if len(os.Args) > 1 && (os.Args[1] == "serve-broker" || os.Args[1] == "serve-projector") {
		if err := serve(os.Args[1], log); err != nil {
			fmt.Fprintln(os.Stderr, os.Args[1]+":", err)
			os.Exit(1)
		}
		return
	}
	if err := run(context.Background(), log); err != nil {
		fmt.Fprintln(os.Stderr, "projbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	total := flag.Int("events", 200_000, "events on the topics for the rebuild run")
	rate := flag.Int("rate", 500, "events per second for the lag run")
	duration := flag.Duration("duration", 10*time.Second, "length of the lag run")
	only := flag.String("only", "", "run only one of: rebuild, lag")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of this process to the file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	server := os.Getenv("DATABASE_URL")
	if server == "" {
		server = pgdb.Local
	}
	var brokers []string
	if b := os.Getenv("KAFKA_BROKERS"); b != "" {
		brokers = strings.Split(b, ",")
	} else {
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return err
		}
		defer c.Close()
		brokers = c.ListenAddrs()
	}
	fmt.Printf("projbench on %d CPUs, %s, Kafka %s\n", runtime.NumCPU(), runtime.Version(), strings.Join(brokers, ","))
	if *only == "" || *only == "rebuild" {
		if err := benchRebuild(ctx, server, brokers, *total, log); err != nil {
			return fmt.Errorf("rebuild: %w", err)
		}
	}
	if *only == "" || *only == "lag" {
		if err := benchLag(ctx, server, brokers, os.Getenv("KAFKA_BROKERS") == "", *rate, *duration, log); err != nil {
			return fmt.Errorf("lag: %w", err)
		}
	}
	return nil
}

// setup makes a fresh database and topics of their own, and returns the
// projector's configuration for them.
func setup(ctx context.Context, server string, brokers []string, name string) (projector.Config, func(), error) {
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		return projector.Config{}, nil, err
	}
	defer admin.Close(ctx)
	db := "projbench_" + name
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)"); err != nil {
		return projector.Config{}, nil, err
	}
	suffix := uuid.NewString()[:8]
	cfg := projector.Config{
		DatabaseURL: pgdb.WithDatabase(server, db), KafkaBrokers: brokers, HTTPAddr: "127.0.0.1:0",
		OrdersTopic: "orders.events." + suffix, CustomersTopic: "customers.events." + suffix,
		ShutdownTimeout: 5 * time.Second, ConsumerGroup: "projbench-" + suffix, SnapshotEvery: 100,
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return cfg, nil, err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopics(ctx, 12, 1, nil, cfg.OrdersTopic, cfg.CustomersTopic)
	if err == nil {
		err = resp.Error()
	}
	drop := func() {
		if c, err := pgx.Connect(context.Background(), server); err == nil {
			c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
			c.Close(context.Background())
		}
	}
	return cfg, drop, err
}

// saga writes the events of one order's saga, as the services would.
type saga struct {
	cfg projector.Config
	at  time.Time
}

func (s *saga) record(topic string, id uuid.UUID, v int64, corr uuid.UUID, e events.Event) *kgo.Record {
	data, _ := json.Marshal(e)
	s.at = s.at.Add(time.Microsecond)
	env := events.Envelope{
		EventID: eventstore.NewID(), EventType: e.EventType(), SchemaVersion: 1, AggregateID: id, AggregateVersion: v,
		OccurredAt: s.at, CorrelationID: corr, Data: data,
	}
	env.CausationID = env.EventID
	if topic == s.cfg.OrdersTopic {
		env.AggregateType = orders.AggregateType
	} else {
		env.AggregateType = customers.AggregateType
	}
	b, _ := json.Marshal(env)
	return &kgo.Record{Topic: topic, Key: []byte(id.String()), Value: b,
		Headers: []kgo.RecordHeader{{Key: events.HeaderEventType, Value: []byte(e.EventType())}, {Key: events.HeaderEventID, Value: []byte(env.EventID.String())}}}
}

// benchRebuild fills the topics with the sagas of many orders of 1,000
// customers and times a rebuild of the read models from them.
func benchRebuild(ctx context.Context, server string, brokers []string, total int, log *slog.Logger) error {
	cfg, drop, err := setup(ctx, server, brokers, "rebuild")
	if err != nil {
		return err
	}
	defer drop()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err != nil {
		return err
	}
	defer cl.Close()

	s := &saga{cfg: cfg, at: time.Now().Add(-time.Hour)}
	custs := make([]uuid.UUID, 1000)
	custVersion := map[uuid.UUID]int64{}
	var recs []*kgo.Record
	for i := range custs {
		custs[i] = eventstore.NewID()
		custVersion[custs[i]] = 1
		recs = append(recs, s.record(cfg.CustomersTopic, custs[i], 1, custs[i], customers.CustomerRegistered{CustomerID: custs[i], Name: fmt.Sprint("c", i), CreditLimit: 1 << 40}))
	}
	for i := 0; len(recs) < total; i++ {
		o, c := eventstore.NewID(), custs[i%len(custs)]
		recs = append(recs, s.record(cfg.OrdersTopic, o, 1, o, orders.OrderCreated{OrderID: o, CustomerID: c, Total: 1000, Items: []orders.Item{{ProductID: "p", Quantity: 1, UnitPrice: 1000}}}))
		custVersion[c]++
		if i%5 == 0 {
			recs = append(recs, s.record(cfg.CustomersTopic, c, custVersion[c], o, customers.CreditReservationFailed{CustomerID: c, OrderID: o, Amount: 1000, Reason: "INSUFFICIENT_CREDIT"}),
				s.record(cfg.OrdersTopic, o, 2, o, orders.OrderRejected{OrderID: o, CustomerID: c, Reason: "INSUFFICIENT_CREDIT"}))
			continue
		}
		recs = append(recs, s.record(cfg.CustomersTopic, c, custVersion[c], o, customers.CreditReserved{CustomerID: c, OrderID: o, Amount: 1000}),
			s.record(cfg.OrdersTopic, o, 2, o, orders.OrderApproved{OrderID: o, CustomerID: c, Total: 1000}))
	}
	fmt.Printf("\n== rebuild: %d events on two 12-partition topics (%d customers)\n", len(recs), len(custs))
	start := time.Now()
	for len(recs) > 0 {
		n := min(len(recs), 10000)
		if err := cl.ProduceSync(ctx, recs[:n]...).FirstErr(); err != nil {
			return err
		}
		recs = recs[n:]
	}
	fmt.Printf("produced in %v\n", time.Since(start).Round(time.Millisecond))

	res, err := projector.Rebuild(ctx, cfg, log, projector.RebuildOptions{CaughtUp: -1, CheckEvery: 50 * time.Millisecond})
	if err != nil {
		return err
	}
	fmt.Printf("rebuilt generation %d: %d events in %v: %.0f events/s (target >= 100,000)\n",
		res.Generation, res.Events, res.Took.Round(time.Millisecond), float64(res.Events)/res.Took.Seconds())
	return nil
}

// serve runs the dev broker or the projector until SIGTERM.
func serve(what string, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if what == "serve-broker" {
		port, _ := strconv.Atoi(os.Getenv("BROKER_PORT"))
		c, err := devbroker.Start(devbroker.Config{Port: port, Logger: log})
		if err != nil {
			return err
		}
		<-ctx.Done()
		c.Close()
		return nil
	}
	cfg, err := projector.LoadConfig(os.Getenv)
	if err != nil {
		return err
	}
	svc, err := projector.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return err
	}
	return svc.Serve(ctx, ln)
}

// spawn runs this program with a serve command and env; stop ends it.
func spawn(what string, env ...string) (stop func(), err error) {
	cmd := exec.Command(os.Args[0], what)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// benchLag runs the projector as a process of its own (and, unless
// KAFKA_BROKERS is set, the broker too) and writes order events at rate per
// second; for each it measures from Kafka's acknowledgment to a query that
// waits for it (min_version) answering.
func benchLag(ctx context.Context, server string, brokers []string, ownBroker bool, rate int, duration time.Duration, log *slog.Logger) error {
	if ownBroker {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		_, port, _ := net.SplitHostPort(addr)
		stop, err := spawn("serve-broker", "BROKER_PORT="+port)
		if err != nil {
			return err
		}
		defer stop()
		brokers = []string{addr}
		if err := waitTCP(addr); err != nil {
			return err
		}
	}
	cfg, drop, err := setup(ctx, server, brokers, "lag")
	if err != nil {
		return err
	}
	defer drop()
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	stopProjector, err := spawn("serve-projector", "DATABASE_URL="+cfg.DatabaseURL, "KAFKA_BROKERS="+strings.Join(brokers, ","),
		"HTTP_ADDR="+addr, "ORDERS_TOPIC="+cfg.OrdersTopic, "CUSTOMERS_TOPIC="+cfg.CustomersTopic, "CONSUMER_GROUP="+cfg.ConsumerGroup)
	if err != nil {
		return err
	}
	defer stopProjector()
	url := "http://" + addr
	if err := platformReady(url); err != nil {
		return err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), kgo.ProducerLinger(0))
	if err != nil {
		return err
	}
	defer cl.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}

	fmt.Printf("\n== projection lag: %d events/s for %v (after 2s of warm-up), orders of 100 customers;\n   broker, projector and this client as separate processes;\n   acknowledged on the topic -> answered by GET /orders/{id}?min_version\n", rate, duration)
	s := &saga{cfg: cfg, at: time.Now()}
	custs := make([]uuid.UUID, 100)
	for i := range custs {
		custs[i] = eventstore.NewID()
	}
	interval := time.Second / time.Duration(rate)

	// Warm up with the same load, unmeasured: the projector's first batches
	// and queries open its database connections and prepare its statements.
	if _, _, err := lagRun(ctx, cl, client, s, cfg, url, custs, interval, int(2*time.Second/interval)); err != nil {
		return err
	}
	n := int(duration / interval)
	lat, ackLat, err := lagRun(ctx, cl, client, s, cfg, url, custs, interval, n)
	if err != nil {
		return err
	}
	slices.Sort(lat)
	slices.Sort(ackLat)
	q := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)].Round(10 * time.Microsecond) }
	qa := func(p float64) time.Duration {
		return ackLat[int(float64(len(ackLat)-1)*p)].Round(10 * time.Microsecond)
	}
	fmt.Printf("(producing, for reference: Kafka acknowledged in p50 %v  p99 %v  max %v)\n", qa(0.5), qa(0.99), ackLat[len(ackLat)-1].Round(10*time.Microsecond))
	fmt.Printf("%d events, all visible: p50 %v  p95 %v  p99 %v  max %v  (target p99 < 50ms)\n", len(lat), q(0.5), q(0.95), q(0.99), lat[len(lat)-1].Round(10*time.Microsecond))
	return nil
}

// lagRun places n orders at the given interval; for each it measures how
// long Kafka took to acknowledge it and how long after that the read model
// answered a query waiting for it.
func lagRun(ctx context.Context, cl *kgo.Client, client *http.Client, s *saga, cfg projector.Config, url string, custs []uuid.UUID, interval time.Duration, n int) (lat, ackLat []time.Duration, err error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	failed := 0
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		o := eventstore.NewID()
		rec := s.record(cfg.OrdersTopic, o, 1, o, orders.OrderCreated{OrderID: o, CustomerID: custs[i%len(custs)], Total: 100})
		wg.Go(func() {
			sent := time.Now()
			if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
				return
			}
			acked := time.Now()
			resp, err := client.Get(url + "/orders/" + o.String() + "?min_version=1")
			if err == nil {
				resp.Body.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil || resp.StatusCode != 200 {
				failed++
				return
			}
			lat, ackLat = append(lat, time.Since(acked)), append(ackLat, acked.Sub(sent))
		})
	}
	wg.Wait()
	if failed > 0 || len(lat) == 0 {
		return nil, nil, fmt.Errorf("%d of %d events were not seen in the read model", failed, n)
	}
	return lat, ackLat, nil
}

func waitTCP(addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s", addr)
}

func platformReady(url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("projector at %s not ready", url)
}
