// Command loadgen puts a running system (make run) under load and measures
// it as a user would: it places orders over REST, at a fixed rate or as fast
// as the system takes them, across many customers, and times each order from
// its POST to its decision (OrderApproved or OrderRejected) on orders.events.
// It prints completed sagas per second, latency quantiles, whether every
// order was decided, a pgbench reference run on the same Postgres, and the
// memory of each process of the stack.
//
//	loadgen -rate 0 -duration 60s      # as fast as it goes
//	loadgen -rate 250 -duration 30s    # latency at a steady rate
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/auth"
	"github.com/eventsaga/eventsaga/internal/kafkaconn"
	"github.com/eventsaga/eventsaga/internal/pgbench"
	"github.com/eventsaga/eventsaga/internal/pgdb"
	"github.com/eventsaga/eventsaga/pkg/events"
)

type config struct {
	orderURL, customerURL string
	brokers               []string
	kafka                 []kgo.Opt // KAFKA_SASL_*, KAFKA_TLS* (package kafkaconn)
	customers             int
	rate                  int
	concurrency           int
	duration, settle      time.Duration
	databaseURL           string
	pgbench               bool
}

func main() {
	var cfg config
	var brokers string
	flag.StringVar(&cfg.orderURL, "order", "http://127.0.0.1:8080", "order service")
	flag.StringVar(&cfg.customerURL, "customer", "http://127.0.0.1:8081", "customer service")
	flag.StringVar(&brokers, "brokers", envOr("KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka seed brokers, comma-separated")
	flag.IntVar(&cfg.customers, "customers", 500, "customers to spread the orders over")
	flag.IntVar(&cfg.rate, "rate", 0, "orders per second; 0 places them as fast as the system answers")
	flag.IntVar(&cfg.concurrency, "concurrency", 64, "requests in flight at most")
	flag.DurationVar(&cfg.duration, "duration", 60*time.Second, "how long orders are placed")
	flag.DurationVar(&cfg.settle, "settle", 30*time.Second, "how long to wait afterwards for the last decisions")
	flag.StringVar(&cfg.databaseURL, "database", envOr("DATABASE_URL", pgdb.Local), "Postgres server for the pgbench reference")
	flag.BoolVar(&cfg.pgbench, "pgbench", true, "run the pgbench reference (single-row INSERT, 8 clients) first")
	flag.Parse()
	cfg.brokers = strings.Split(brokers, ",")
	var err error
	if cfg.kafka, err = kafkaconn.FromEnv(os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	if err := run(context.Background(), cfg); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, cfg config) error {
	tok, err := auth.ToolToken(os.Getenv) // an admin's, when the services run with AUTH_*
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: auth.WithToken(&http.Transport{MaxIdleConnsPerHost: cfg.concurrency * 2}, tok)}
	var tps float64
	if cfg.pgbench {
		var err error
		if tps, err = referenceTPS(ctx, cfg.databaseURL, cfg.duration); err != nil {
			return err
		}
		fmt.Printf("pgbench reference: single-row INSERT, 8 clients, %v: %.0f tx/s\n", cfg.duration, tps)
	}

	fmt.Printf("registering %d customers\n", cfg.customers)
	custs, err := register(client, cfg)
	if err != nil {
		return err
	}
	decisions, stop, err := watchDecisions(ctx, cfg.brokers, cfg.kafka)
	if err != nil {
		return err
	}
	defer stop()

	mode := fmt.Sprintf("%d orders/s", cfg.rate)
	if cfg.rate == 0 {
		mode = fmt.Sprintf("as fast as answered, %d in flight", cfg.concurrency)
	}
	fmt.Printf("placing orders for %v (%s)\n", cfg.duration, mode)
	placed, failed, start := place(client, cfg, custs)
	end := start.Add(cfg.duration)

	// Wait for the decisions of every order placed.
	deadline := time.Now().Add(cfg.settle)
	for decisions.count(placed) < len(placed) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return report(cfg, placed, failed, decisions, start, end, tps)
}

func register(client *http.Client, cfg config) ([]uuid.UUID, error) {
	custs := make([]uuid.UUID, cfg.customers)
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range custs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var out struct {
				CustomerID uuid.UUID `json:"customer_id"`
			}
			err := post(client, cfg.customerURL+"/customers", fmt.Sprintf(`{"name": "load-%d", "credit_limit": "1000000000.00"}`, i), &out)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			custs[i] = out.CustomerID
		})
	}
	wg.Wait()
	return custs, firstErr
}

// placedOrder is an order and when its POST began.
type placedOrder struct {
	id    uuid.UUID
	begun time.Time
}

// place places orders for cfg.duration and returns them, with the number of
// POSTs that failed, and when it began.
func place(client *http.Client, cfg config, custs []uuid.UUID) ([]placedOrder, int64, time.Time) {
	var (
		mu     sync.Mutex
		placed []placedOrder
		failed atomic.Int64
		n      atomic.Int64
		wg     sync.WaitGroup
	)
	one := func() {
		i := n.Add(1)
		body := fmt.Sprintf(`{"customer_id": %q, "items": [{"product_id": "sku-%d", "quantity": %d, "unit_price": "%d.%02d"}]}`,
			custs[int(i)%len(custs)], i%100, 1+i%5, 1+i%50, i%100)
		begun := time.Now()
		var out struct {
			OrderID uuid.UUID `json:"order_id"`
		}
		if err := post(client, cfg.orderURL+"/orders", body, &out); err != nil {
			if failed.Add(1) <= 3 {
				fmt.Fprintln(os.Stderr, "POST /orders:", err)
			}
			return
		}
		mu.Lock()
		placed = append(placed, placedOrder{out.OrderID, begun})
		mu.Unlock()
	}
	start := time.Now()
	end := start.Add(cfg.duration)
	if cfg.rate == 0 {
		for range cfg.concurrency {
			wg.Go(func() {
				for time.Now().Before(end) {
					one()
				}
			})
		}
	} else {
		sem := make(chan struct{}, cfg.concurrency)
		interval := time.Second / time.Duration(cfg.rate)
		for i := 0; ; i++ {
			at := start.Add(time.Duration(i) * interval)
			if !at.Before(end) {
				break
			}
			time.Sleep(time.Until(at))
			sem <- struct{}{} // at the limit the rate falls: it is reported as achieved
			wg.Go(func() { defer func() { <-sem }(); one() })
		}
	}
	wg.Wait()
	return placed, failed.Load(), start
}

// decisions records when each order's decision was seen on orders.events,
// and when each step of its saga happened, to tell where the time goes.
type decisions struct {
	mu      sync.Mutex
	at      map[uuid.UUID]time.Time
	outcome map[string]int
	steps   map[uuid.UUID]*[nSteps]time.Time
}

// The steps of a saga as seen on the topics: when an event was stamped (its
// occurred_at, as its service decided, before committing) and when the
// service's relay produced it (the record's timestamp).
const (
	createdProduced = iota
	customerDecided
	customerProduced
	orderDecided
	orderProduced
	nSteps
)

var stepNames = [nSteps]string{
	"POST -> OrderCreated produced by the order relay",
	"-> customer decided (credit event stamped)",
	"-> credit event produced by the customer relay",
	"-> order decided (decision stamped)",
	"-> decision produced by the order relay",
}

func (d *decisions) step(order uuid.UUID, i int, at time.Time) {
	s := d.steps[order]
	if s == nil {
		s = new([nSteps]time.Time)
		d.steps[order] = s
	}
	if s[i].IsZero() {
		s[i] = at
	}
}

func (d *decisions) count(placed []placedOrder) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, p := range placed {
		if _, ok := d.at[p.id]; ok {
			n++
		}
	}
	return n
}

// watchDecisions reads orders.events from its current end.
func watchDecisions(ctx context.Context, brokers []string, conn []kgo.Opt) (*decisions, func(), error) {
	cl, err := kgo.NewClient(append(slices.Clone(conn), kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("orders.events"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), kgo.FetchMaxWait(100*time.Millisecond))...)
	if err != nil {
		return nil, nil, err
	}
	// The customer's steps are timed by the records' own timestamps, not
	// by when they arrive here: that client may gather them in fewer,
	// larger fetches, and leave more of the CPU to the system measured.
	steps, err := kgo.NewClient(append(slices.Clone(conn), kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("customers.events"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), kgo.FetchMinBytes(256<<10), kgo.FetchMaxWait(200*time.Millisecond))...)
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	d := &decisions{at: map[uuid.UUID]time.Time{}, outcome: map[string]int{}, steps: map[uuid.UUID]*[nSteps]time.Time{}}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, c := range []*kgo.Client{cl, steps} {
		ready := make(chan struct{})
		wg.Go(func() { d.consume(ctx, c, ready) })
		// The first poll returns once the consumer knows where the end is,
		// or after its wait: either way nothing placed after this is missed.
		select {
		case <-ready:
		case <-time.After(5 * time.Second):
		}
	}
	return d, func() { cancel(); wg.Wait(); cl.Close(); steps.Close() }, nil
}

// consume records the saga steps and decisions that cl reads, until ctx is
// done; ready is closed after the first poll.
func (d *decisions) consume(ctx context.Context, cl *kgo.Client, ready chan struct{}) {
	first := true
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		if first {
			close(ready)
			first = false
		}
		now := time.Now()
		fs.EachRecord(func(r *kgo.Record) {
			env, err := events.ParseEnvelope(r.Value)
			if err != nil {
				return
			}
			order := env.CorrelationID // a saga is correlated by its order's ID
			d.mu.Lock()
			defer d.mu.Unlock()
			switch env.EventType {
			case "OrderCreated":
				d.step(order, createdProduced, r.Timestamp)
			case "CreditReserved", "CreditReservationFailed":
				d.step(order, customerDecided, env.OccurredAt)
				d.step(order, customerProduced, r.Timestamp)
			case "OrderApproved", "OrderRejected":
				d.step(order, orderDecided, env.OccurredAt)
				d.step(order, orderProduced, r.Timestamp)
				if _, seen := d.at[env.AggregateID]; !seen {
					d.at[env.AggregateID] = now
					d.outcome[env.EventType]++
				}
			}
		})
	}
}

func report(cfg config, placed []placedOrder, failed int64, d *decisions, start, end time.Time, tps float64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var lat []time.Duration
	var last time.Time
	inWindow := 0
	for _, p := range placed {
		at, ok := d.at[p.id]
		if !ok {
			continue
		}
		lat = append(lat, at.Sub(p.begun))
		if at.After(last) {
			last = at
		}
		if at.Before(end) {
			inWindow++
		}
	}
	undecided := len(placed) - len(lat)
	fmt.Printf("\nplaced %d orders (%d POSTs failed) in %v: %.0f/s\n", len(placed), failed, cfg.duration, float64(len(placed))/cfg.duration.Seconds())
	fmt.Printf("decided %d (approved %d, rejected %d); undecided after %v: %d\n",
		len(lat), d.outcome["OrderApproved"], d.outcome["OrderRejected"], cfg.settle, undecided)
	if len(lat) == 0 {
		return errors.New("no order was decided")
	}
	sustained := float64(inWindow) / cfg.duration.Seconds()
	fmt.Printf("completed sagas: %.0f/s within the %v of load; all decided by %v after the start\n", sustained, cfg.duration, last.Sub(start).Round(time.Millisecond))
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)].Round(100 * time.Microsecond) }
	fmt.Printf("saga latency (POST -> decision on orders.events): p50 %v  p95 %v  p99 %v  max %v\n", q(0.5), q(0.95), q(0.99), lat[len(lat)-1].Round(100*time.Microsecond))
	stepLatency(placed, d)
	if tps > 0 {
		fmt.Printf("ratio to pgbench: %.2f\n", sustained/tps)
	}
	printRSS()
	if undecided > 0 || failed > 0 {
		return fmt.Errorf("%d orders undecided, %d POSTs failed", undecided, failed)
	}
	fmt.Println("every order reached a decision")
	return nil
}

// printRSS prints the resident memory of the stack's processes, found by
// their command names in /proc.
func printRSS() {
	names := map[string]bool{"order": true, "customer": true, "projector": true, "devbroker": true, "postgres": false}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var lines []string
	for _, dir := range dirs {
		comm, err := os.ReadFile(filepath.Join(dir, "comm"))
		if err != nil || !names[strings.TrimSpace(string(comm))] {
			continue
		}
		status, _ := os.ReadFile(filepath.Join(dir, "status"))
		if m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(status); m != nil {
			kb, _ := strconv.Atoi(string(m[1]))
			lines = append(lines, fmt.Sprintf("  %-10s %4d MiB (pid %s)", strings.TrimSpace(string(comm)), kb/1024, filepath.Base(dir)))
		}
	}
	slices.Sort(lines)
	if len(lines) > 0 {
		fmt.Println("memory (RSS) at the end:")
		fmt.Println(strings.Join(lines, "\n"))
	}
}

// referenceTPS is the pgbench figure of the issue: a single-row INSERT with 8
// clients, for d, in a database of its own on server (dropped afterwards).
func referenceTPS(ctx context.Context, server string, d time.Duration) (float64, error) {
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		return 0, err
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS loadgen_pgbench WITH (FORCE)"); err != nil {
		return 0, err
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE loadgen_pgbench"); err != nil {
		return 0, err
	}
	defer admin.Exec(context.Background(), "DROP DATABASE IF EXISTS loadgen_pgbench WITH (FORCE)")
	url := pgdb.WithDatabase(server, "loadgen_pgbench")
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, err
	}
	_, err = db.Exec(ctx, pgbench.Table)
	db.Close(ctx)
	if err != nil {
		return 0, err
	}
	return pgbench.Run(ctx, url, 8, d)
}

func post(client *http.Client, url, body string, out any) error {
	resp, err := client.Post(url, "application/json", bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, b)
	}
	return json.Unmarshal(b, out)
}

// stepLatency prints where a saga's time goes: p50 and p99 of each step, for
// the sagas seen whole. A step's time includes waiting for the one before
// it to be consumed.
func stepLatency(placed []placedOrder, d *decisions) {
	var per [nSteps + 1][]time.Duration
	for _, p := range placed {
		s, at := d.steps[p.id], d.at[p.id]
		if s == nil || at.IsZero() || slices.ContainsFunc(s[:], time.Time.IsZero) {
			continue
		}
		prev := p.begun
		for i, t := range s {
			per[i] = append(per[i], t.Sub(prev))
			prev = t
		}
		per[nSteps] = append(per[nSteps], at.Sub(prev))
	}
	if len(per[0]) == 0 {
		return
	}
	fmt.Printf("where the time goes (%d sagas; p50 / p99):\n", len(per[0]))
	names := append(stepNames[:], "-> decision consumed here")
	for i, ds := range per {
		slices.Sort(ds)
		q := func(p float64) time.Duration { return ds[int(float64(len(ds)-1)*p)].Round(100 * time.Microsecond) }
		fmt.Printf("  %-50s %8v / %v\n", names[i], q(0.5), q(0.99))
	}
}
