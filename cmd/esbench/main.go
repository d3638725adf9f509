// Command esbench measures the foundation: event store appends beside
// pgbench on the same Postgres, relay throughput from a pre-filled outbox,
// and latency from commit to a consumer seeing the record.
//
//	go run ./cmd/esbench                      # in-process kfake
//	KAFKA_BROKERS=127.0.0.1:9092 go run ./cmd/esbench
//
// It works in a database of its own (esbench), made afresh and dropped at
// the end, on the server of DATABASE_URL (default: the local Postgres).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/pgbench"
	"github.com/eventsaga/eventsaga/internal/pgdb"
	"github.com/eventsaga/eventsaga/internal/pgmigrate"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/pkg/outbox"
)

type config struct {
	databaseURL string
	brokers     []string
	duration    time.Duration
	writers     int
	relayRows   int
	rate        int
	only        string
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(context.Background(), log); err != nil {
		fmt.Fprintln(os.Stderr, "esbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	var cfg config
	flag.DurationVar(&cfg.duration, "duration", 15*time.Second, "length of the append and latency runs")
	flag.IntVar(&cfg.writers, "writers", 8, "concurrent writers for the append run (and pgbench clients)")
	flag.IntVar(&cfg.relayRows, "relay-rows", 200_000, "rows pre-filled for the relay run")
	flag.IntVar(&cfg.rate, "rate", 500, "events per second for the latency run")
	flag.StringVar(&cfg.only, "only", "", "run only one of: append, relay, latency")
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
	cfg.databaseURL = os.Getenv("DATABASE_URL")
	if cfg.databaseURL == "" {
		cfg.databaseURL = pgdb.Local
	}

	if b := os.Getenv("KAFKA_BROKERS"); b != "" {
		cfg.brokers = strings.Split(b, ",")
	} else {
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return err
		}
		defer c.Close()
		cfg.brokers = c.ListenAddrs()
	}

	fmt.Printf("esbench on %d CPUs, %s, Kafka %s\n", runtime.NumCPU(), runtime.Version(), strings.Join(cfg.brokers, ","))
	if cfg.only == "" || cfg.only == "append" {
		if err := benchAppend(ctx, cfg, log); err != nil {
			return fmt.Errorf("append: %w", err)
		}
	}
	if cfg.only == "" || cfg.only == "relay" {
		if err := benchRelay(ctx, cfg, log); err != nil {
			return fmt.Errorf("relay: %w", err)
		}
	}
	if cfg.only == "" || cfg.only == "latency" {
		if err := benchLatency(ctx, cfg, log); err != nil {
			return fmt.Errorf("latency: %w", err)
		}
	}
	return nil
}

// BenchEvent is about the size of an OrderCreated.
type BenchEvent struct {
	Seq   int64        `json:"seq"`
	Total events.Money `json:"total"`
	Pad   string       `json:"pad"`
}

func (BenchEvent) EventType() string { return "BenchEvent" }

type counter struct {
	N int64 `json:"n"`
}

func applyCounter(s counter, _ events.Event) counter { s.N++; return s }

// freshDB makes database esbench anew, migrated, and returns a pool on it
// and a function that drops it.
func freshDB(ctx context.Context, cfg config) (*pgxpool.Pool, string, func(), error) {
	admin, err := pgx.Connect(ctx, cfg.databaseURL)
	if err != nil {
		return nil, "", nil, err
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS esbench WITH (FORCE)"); err != nil {
		return nil, "", nil, err
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE esbench"); err != nil {
		return nil, "", nil, err
	}
	url := pgdb.WithDatabase(cfg.databaseURL, "esbench")
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, "", nil, err
	}
	pcfg.MaxConns = int32(cfg.writers + 4)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, "", nil, err
	}
	if err := pgmigrate.Apply(ctx, pool, eventstore.Migration(), outbox.Migration()); err != nil {
		pool.Close()
		return nil, "", nil, err
	}
	drop := func() {
		pool.Close()
		if c, err := pgx.Connect(context.Background(), cfg.databaseURL); err == nil {
			c.Exec(context.Background(), "DROP DATABASE IF EXISTS esbench WITH (FORCE)")
			c.Close(context.Background())
		}
	}
	return pool, url, drop, nil
}

func newRepo(pool *pgxpool.Pool, notifier *outbox.Notifier, topic string) (*eventstore.Store, *eventstore.Repository[counter], error) {
	reg := events.NewRegistry()
	if err := events.Register[BenchEvent](reg, 1); err != nil {
		return nil, nil, err
	}
	store, err := eventstore.New(eventstore.Config{Pool: pool, Registry: reg, Notifier: notifier})
	if err != nil {
		return nil, nil, err
	}
	repo, err := eventstore.NewRepository(store, eventstore.RepositoryConfig[counter]{
		AggregateType: "bench", Topic: topic, Apply: applyCounter, SnapshotSchema: "counter/v1",
	})
	return store, repo, err
}

// benchAppend runs pgbench's single-row INSERT and the event store's
// one-event append with the same number of clients, alternately, twice each.
func benchAppend(ctx context.Context, cfg config, log *slog.Logger) error {
	pool, url, drop, err := freshDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer drop()
	if _, err := pool.Exec(ctx, pgbench.Table); err != nil {
		return err
	}
	// Alone, like pgbench: no relay running and none to wake.
	store, repo, err := newRepo(pool, nil, "bench.events")
	if err != nil {
		return err
	}

	fmt.Printf("\n== append: %d writers, one event per transaction (one round trip each), %v per run\n", cfg.writers, cfg.duration)
	// Two references: pgbench's single-row INSERT, and pgbench doing what
	// the event store does to append an event (its two statements, in one
	// pipelined transaction), so that what the Go side adds shows apart
	// from what an event costs Postgres. Rounds alternate, each run after a
	// CHECKPOINT, so that no run pays for another's WAL; medians are
	// reported.
	var ratios, uowRatios []float64
	for round := 1; round <= 3; round++ {
		if _, err := pool.Exec(ctx, "CHECKPOINT"); err != nil {
			return err
		}
		tps, err := pgbench.Run(ctx, url, cfg.writers, cfg.duration)
		if err != nil {
			return err
		}
		if _, err := pool.Exec(ctx, "CHECKPOINT"); err != nil {
			return err
		}
		uow, err := pgbench.RunUnitOfWork(ctx, pool, url, cfg.writers, cfg.duration)
		if err != nil {
			return err
		}
		if _, err := pool.Exec(ctx, "CHECKPOINT"); err != nil {
			return err
		}
		eps, err := appendRun(ctx, cfg, store, repo)
		if err != nil {
			return err
		}
		ratios, uowRatios = append(ratios, eps/tps), append(uowRatios, eps/uow)
		fmt.Printf("round %d  pgbench INSERT %6.0f tx/s   pgbench unit of work %6.0f tx/s   event store append %6.0f events/s   ratios %.2f / %.2f\n",
			round, tps, uow, eps, eps/tps, eps/uow)
	}
	slices.Sort(ratios)
	slices.Sort(uowRatios)
	fmt.Printf("median ratios: to the INSERT %.2f (target >= 0.80), to the unit of work %.2f (target >= 0.90)\n",
		ratios[len(ratios)/2], uowRatios[len(uowRatios)/2])

	// As a service runs: its relay in the same process, woken directly after
	// each commit, publishing while the writers write.
	topic := "bench.append." + uuid.NewString()[:8]
	if err := createTopic(ctx, cfg.brokers, topic); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, "DELETE FROM outbox"); err != nil { // the rounds' rows
		return err
	}
	relay, err := outbox.NewRelay(outbox.RelayConfig{Pool: pool, Brokers: cfg.brokers, Logger: log})
	if err != nil {
		return err
	}
	rctx, stopRelay := context.WithCancel(ctx)
	defer stopRelay()
	go relay.Run(rctx)
	for !relay.Leader() {
		time.Sleep(time.Millisecond)
	}
	local := outbox.NewNotifier(pool, "", log)
	local.SetLocalRelay(relay)
	store, repo, err = newRepo(pool, local, topic)
	if err != nil {
		return err
	}
	before := relay.Published()
	eps, err := appendRun(ctx, cfg, store, repo)
	if err != nil {
		return err
	}
	var left int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&left); err != nil {
		return err
	}
	fmt.Printf("with the relay publishing in-process: %.0f events/s appended, %d published meanwhile, %d rows waiting at the end\n",
		eps, relay.Published()-before, left)
	return nil
}

// appendRun has each writer append the next event to one of its own
// aggregates, one event per transaction (a unit of work: one round trip),
// for cfg.duration.
func appendRun(ctx context.Context, cfg config, store *eventstore.Store, repo *eventstore.Repository[counter]) (float64, error) {
	var total atomic.Int64
	var firstErr error
	var once sync.Once
	deadline := time.Now().Add(cfg.duration)
	var wg sync.WaitGroup
	start := time.Now()
	for range cfg.writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			aggs := make([]eventstore.Aggregate[counter], 100)
			for i := range aggs {
				aggs[i] = repo.New(eventstore.NewID())
			}
			for i := 0; time.Now().Before(deadline); i++ {
				var u eventstore.UnitOfWork
				_, err := repo.Stage(&u, &aggs[i%len(aggs)], eventstore.Meta{}, BenchEvent{Seq: int64(i), Total: 1250, Pad: pgbench.Pad})
				if err == nil {
					err = store.Commit(ctx, &u)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				total.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(total.Load()) / time.Since(start).Seconds(), firstErr
}

// benchRelay fills the outbox, then times a relay from its start until
// Kafka has acknowledged (and the relay deleted) every row.
func benchRelay(ctx context.Context, cfg config, log *slog.Logger) error {
	pool, _, drop, err := freshDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer drop()
	topic := "bench.relay." + uuid.NewString()[:8]
	if err := createTopic(ctx, cfg.brokers, topic); err != nil {
		return err
	}
	fmt.Printf("\n== relay: %d rows pre-filled, 10,000 keys, 12 partitions\n", cfg.relayRows)
	sample, _ := json.Marshal(events.Envelope{
		EventID: uuid.New(), EventType: "BenchEvent", SchemaVersion: 1, AggregateType: "bench", AggregateID: uuid.New(),
		AggregateVersion: 1, OccurredAt: time.Now(), CorrelationID: uuid.New(), CausationID: uuid.New(),
		Data: json.RawMessage(`{"seq":1,"total":"12.50","pad":"` + pgbench.Pad + `"}`),
	})
	_, err = pool.Exec(ctx, `
INSERT INTO outbox (topic, key, value, header_keys, header_values)
SELECT $1, (SELECT uuid_in(md5((g % 10000)::text)::cstring))::text, $2::bytea,
       ARRAY['event_type','event_id'], ARRAY['BenchEvent'::bytea, gen_random_uuid()::text::bytea]
FROM generate_series(1, $3) g`, topic, sample, cfg.relayRows)
	if err != nil {
		return err
	}
	fmt.Printf("record value: %d bytes\n", len(sample))

	relay, err := outbox.NewRelay(outbox.RelayConfig{Pool: pool, Brokers: cfg.brokers, Logger: log, PollInterval: 50 * time.Millisecond})
	if err != nil {
		return err
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	start := time.Now()
	go relay.Run(rctx)
	for relay.Published() < int64(cfg.relayRows) {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	var left int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&left); err != nil {
		return err
	}
	fmt.Printf("relayed %d events in %v: %.0f events/s (target >= 20,000); %d rows left\n",
		relay.Published(), elapsed.Round(time.Millisecond), float64(relay.Published())/elapsed.Seconds(), left)
	return nil
}

// benchLatency appends at cfg.rate events/s with the relay and notifier
// running, and measures from each commit to a consumer receiving the record.
func benchLatency(ctx context.Context, cfg config, log *slog.Logger) error {
	pool, _, drop, err := freshDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer drop()
	topic := "bench.latency." + uuid.NewString()[:8]
	if err := createTopic(ctx, cfg.brokers, topic); err != nil {
		return err
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	relay, err := outbox.NewRelay(outbox.RelayConfig{Pool: pool, Brokers: cfg.brokers, Logger: log})
	if err != nil {
		return err
	}
	go relay.Run(rctx)
	notifier := outbox.NewNotifier(pool, "", log)
	notifier.SetLocalRelay(relay) // as in a service: the relay runs beside the writers
	go notifier.Run(rctx)
	store, repo, err := newRepo(pool, notifier, topic)
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()

	// Arrivals and commits are recorded apart and joined at the end: a
	// record can reach the consumer before its writer has read the clock
	// after Commit returned.
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	go func() {
		for rctx.Err() == nil {
			fs := cl.PollFetches(rctx)
			now := time.Now()
			mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				for _, h := range r.Headers {
					if h.Key == events.HeaderEventID {
						arrived[string(h.Value)] = now
					}
				}
			})
			mu.Unlock()
		}
	}()
	for !relay.Leader() {
		time.Sleep(time.Millisecond)
	}

	fmt.Printf("\n== latency: %d events/s for %v, commit -> consumer\n", cfg.rate, cfg.duration)
	interval := time.Second / time.Duration(cfg.rate)
	n := int(cfg.duration / interval)
	agg := make([]eventstore.Aggregate[counter], 50)
	for i := range agg {
		agg[i] = repo.New(eventstore.NewID())
	}
	// One event per aggregate first, not measured: the clock starts once
	// they all arrived. A real broker's consumer needs a moment to learn
	// the new topic's leaders (up to a second here) that kfake does not;
	// that is start-up, not commit-to-consumer latency.
	warm := map[string]bool{}
	for i := range agg {
		var u eventstore.UnitOfWork
		envs, err := repo.Stage(&u, &agg[i], eventstore.Meta{}, BenchEvent{Seq: -1, Total: 1250, Pad: pgbench.Pad})
		if err == nil {
			err = store.Commit(ctx, &u)
		}
		if err != nil {
			return err
		}
		warm[envs[0].EventID.String()] = true
	}
	for warmed := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		got := 0
		for id := range warm {
			if _, ok := arrived[id]; ok {
				got++
			}
		}
		mu.Unlock()
		if got == len(warm) {
			break
		}
		if time.Since(warmed) > 30*time.Second {
			return fmt.Errorf("warm-up: %d of %d events reached the consumer in 30 s", got, len(warm))
		}
	}
	mu.Lock()
	clear(arrived)
	mu.Unlock()
	committed := make(map[string]time.Time, n)
	start := time.Now()
	late := 0
	for i := range n {
		next := start.Add(time.Duration(i) * interval)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		} else if d < -interval {
			late++
		}
		var u eventstore.UnitOfWork
		envs, err := repo.Stage(&u, &agg[i%len(agg)], eventstore.Meta{}, BenchEvent{Seq: int64(i), Total: 1250, Pad: pgbench.Pad})
		if err == nil {
			err = store.Commit(ctx, &u)
		}
		if err != nil {
			return err
		}
		committed[envs[0].EventID.String()] = time.Now()
	}
	rate := float64(n) / time.Since(start).Seconds()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := len(arrived)
		mu.Unlock()
		if got >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	var lat []time.Duration
	for id, at := range committed {
		if got, ok := arrived[id]; ok {
			lat = append(lat, max(got.Sub(at), 0))
		}
	}
	if len(lat) < n {
		return fmt.Errorf("only %d of %d events reached the consumer", len(lat), n)
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)] }
	fmt.Printf("achieved %.0f events/s (%d sends more than one interval late); all %d reached the consumer\n", rate, late, n)
	fmt.Printf("latency p50 %v  p95 %v  p99 %v  max %v  (target p99 < 20ms)\n",
		q(0.50).Round(10*time.Microsecond), q(0.95).Round(10*time.Microsecond), q(0.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
	return nil
}

func createTopic(ctx context.Context, brokers []string, topic string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, 12, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	return err
}
