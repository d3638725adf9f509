// Package projector is the query side: it projects orders.events and
// customers.events into read models in its own database and serves queries
// from them. The read models are eventually consistent; a query can wait
// for a version it knows was written (min_version) to read its own writes.
//
// Reading order: projection.go folds events into rows (effectively-once by
// each aggregate's last applied version); store.go keeps the rows, a
// generation of tables at a time; http.go serves queries; rebuild.go builds
// a new generation from the start of the topics, loading it in bulk
// (bulk.go), and switches to it; this file wires the parts.
package projector

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/auth"
	"github.com/eventsaga/eventsaga/internal/pgdb"
	"github.com/eventsaga/eventsaga/internal/pgmigrate"
	"github.com/eventsaga/eventsaga/internal/platform"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
	"github.com/eventsaga/eventsaga/pkg/outbox"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migration is the projector's schema (the generations it keeps).
func Migration() pgmigrate.Migration {
	return pgmigrate.Migration{VersionTable: "projector_schema_version", FS: migrations, Dir: "migrations"}
}

// Config is the projector's configuration.
type Config = platform.Config

// LoadConfig reads the configuration from getenv (os.Getenv in main).
func LoadConfig(getenv func(string) string) (Config, error) {
	return platform.Load(getenv, platform.Defaults{
		DatabaseURL: pgdb.WithDatabase(pgdb.Local, "readmodel"), HTTPAddr: ":8082", ConsumerGroup: "projector",
	})
}

// Service is a running projector's parts.
type Service struct {
	cfg      Config
	log      *slog.Logger
	auth     *auth.Verifier // nil: the open API
	registry *events.Registry
	// pool serves queries; projPool is the projection's own, so that a
	// crowd of queries can never make the projection wait for a connection
	// (and so fall further behind, and draw more waiting queries).
	pool, projPool *pgxpool.Pool
	store          store
	http           *echo.Echo
	// gen is the generation queries read and the consumer writes.
	gen      atomic.Int64
	consumer atomic.Pointer[outbox.Consumer]
	// kafka is a client of the service's lifetime for status and
	// readiness; a consumer's own is closed when a generation is replaced.
	kafka *kgo.Client
	// recent knows which order versions this instance has projected lately.
	recent recent
	// consumerMetrics receives the projection consumers' metrics (metrics.go).
	consumerMetrics *outbox.Metrics
	// feed tells the saga view's live pages what each batch touched (ui_feed.go).
	feed feed
}

// databaseURL is the configured one with every statement planned for its
// parameters and the tables as they are. A read model's tables start empty (a
// new database, a rebuild) and grow by thousands of rows a second; a generic
// plan settled on while they were empty scans them whole until autovacuum next
// analyzes them: seen costing 30 ms a batch where an index lookup costs well
// under 1 ms. The projector runs a few statements per batch, so planning each
// is cheap.
func databaseURL(cfg Config) string {
	return platform.WithSetting(cfg.DatabaseURL, "plan_cache_mode", "force_custom_plan")
}

// New connects to the database (creating and migrating it if need be); Serve
// runs the projection and the API.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Service, error) {
	s := &Service{cfg: cfg, log: log, registry: events.NewRegistry()}
	if err := registry(s.registry); err != nil {
		return nil, err
	}
	var err error
	if s.pool, err = platform.OpenDB(ctx, databaseURL(cfg), cfg.TracerProvider, Migration()); err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	projCfg := s.pool.Config()
	projCfg.MaxConns = 10 // the consumer applies up to 8 partitions at once
	if s.projPool, err = pgxpool.NewWithConfig(ctx, projCfg); err != nil {
		s.pool.Close()
		return nil, err
	}
	s.store = store{pool: s.projPool}
	g, err := s.store.current(ctx)
	if err != nil {
		s.pool.Close()
		s.projPool.Close()
		return nil, err
	}
	s.gen.Store(int64(g))
	conn, err := cfg.KafkaConn(log)
	if err != nil {
		s.pool.Close()
		s.projPool.Close()
		return nil, err
	}
	if s.kafka, err = kgo.NewClient(append(conn, kgo.SeedBrokers(cfg.KafkaBrokers...))...); err != nil {
		s.pool.Close()
		s.projPool.Close()
		return nil, err
	}
	if s.auth, err = auth.New(ctx, cfg.Auth, nil, log); err != nil {
		s.pool.Close()
		s.projPool.Close()
		s.kafka.Close()
		return nil, err
	}
	s.http = s.routes()
	if err := s.instrument(); err != nil {
		s.pool.Close()
		s.projPool.Close()
		s.kafka.Close()
		return nil, err
	}
	return s, nil
}

func registry(r *events.Registry) error {
	return errors.Join(orders.Register(r), customers.Register(r))
}

// Serve runs the API on ln and the projection until ctx is done, then stops
// the API, lets the projection finish its batch and commit, and closes the
// database.
func (s *Service) Serve(ctx context.Context, ln net.Listener) error {
	defer s.pool.Close()
	defer s.projPool.Close()
	defer s.kafka.Close()
	s.log.Info("projector running", "addr", ln.Addr().String(), "config", s.cfg, "generation", s.gen.Load())
	if s.cfg.PprofAddr != "" {
		platform.ServePprof(ctx, s.log, s.cfg.PprofAddr)
	}
	// The saga view's live streams end as shutdown begins, or the HTTP
	// drain would wait for them until SHUTDOWN_TIMEOUT.
	stopFeed := context.AfterFunc(ctx, s.feed.close)
	defer stopFeed()
	return platform.Run(ctx, s.log, ln, platform.Parts{HTTP: s.http, Worker: s.project}, s.cfg.ShutdownTimeout)
}

// project runs the consumer of the current generation, and replaces it by
// the next generation's when a rebuild has made that one current: it then
// goes on from the offsets the rebuild committed, in the tables the rebuild
// filled.
func (s *Service) project(ctx context.Context) error {
	for {
		g := generation(s.gen.Load())
		c, err := newProjection(s.cfg, s.log, s.projPool, s.registry, g, s.committed, projectionTuning{metrics: s.consumerMetrics})
		if err != nil {
			return err
		}
		s.consumer.Store(c)
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(runCtx) }()
		next, err := s.watchGeneration(ctx, g, done)
		stop()
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return <-done
		}
		if err := <-done; err != nil {
			return err
		}
		s.log.Info("switching to the rebuilt read model", "from", int(g), "to", int(next))
		s.gen.Store(int64(next))
	}
}

// watchGeneration returns when the current generation is no longer g (with
// the new one), when ctx ends, or when the consumer stopped by itself.
func (s *Service) watchGeneration(ctx context.Context, g generation, done chan error) (generation, error) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return g, nil
		case err := <-done:
			done <- err
			if err == nil {
				err = errors.New("the projection stopped")
			}
			return g, err
		case <-t.C:
			now, err := s.store.current(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("could not read the current generation", "err", err)
				}
				continue
			}
			if now != g {
				return now, nil
			}
		}
	}
}

// projectionTuning sets how much a projection takes at once.
type projectionTuning struct {
	batchSize, pollRecords int
	// metrics receives the consumer's metrics; nil for none (a rebuild,
	// which may run beside a projector in the same process).
	metrics *outbox.Metrics
	// bulk makes the projection a bulk load of a new generation (bulk.go),
	// its partitions applied side by side.
	bulk bool
}

// newProjection returns the consumer that projects both topics into
// generation g's tables, as the group of that generation.
func newProjection(cfg Config, log *slog.Logger, pool *pgxpool.Pool, reg *events.Registry, g generation, committed func([]outbox.Delivery), t projectionTuning) (*outbox.Consumer, error) {
	p := projection{registry: reg, gen: g, bulk: t.bulk}
	conn, err := cfg.Kafka.Opts()
	if err != nil {
		return nil, err
	}
	return outbox.NewConsumer(outbox.ConsumerConfig{
		Pool: pool, Brokers: cfg.KafkaBrokers, ConnOpts: conn, Group: groupOf(cfg.ConsumerGroup, g), InstanceID: cfg.ConsumerInstance,
		Topics:       []string{cfg.OrdersTopic, cfg.CustomersTopic},
		EnsureTopics: []string{cfg.OrdersTopic, cfg.CustomersTopic},
		// A bulk load's partitions share no rows, so they are applied side
		// by side (decoding on every core) rather than in one transaction
		// at a time.
		BatchHandler: p.apply, NoInbox: true, AcrossPartitions: !t.bulk,
		BatchSize: max(t.batchSize, 1000), MaxPollRecords: max(t.pollRecords, 10000),
		Logger: log.With("generation", int(g)),
		// A read model may trail by a few milliseconds more: fetches that
		// wait up to 10 ms for data to gather make for fewer, larger
		// batches when traffic is light, leaving the CPU to the saga.
		ClientOpts: []kgo.Opt{kgo.FetchMinBytes(64 << 10), kgo.FetchMaxWait(10 * time.Millisecond)},
		// Two partitions that update the same customer's counts wait for
		// each other; should Postgres still see a deadlock, it is retried.
		AfterCommit:    committed,
		Metrics:        t.metrics,
		TracerProvider: cfg.TracerProvider,
	})
}

// groupOf is the consumer group of generation g.
func groupOf(base string, g generation) string { return base + ".g" + strconv.Itoa(int(g)) }

// projection applies batches of events to one generation's tables.
type projection struct {
	registry *events.Registry
	gen      generation
	// bulk loads a new generation's tables (bulk.go).
	bulk bool
}

// apply folds a partition's batch into the rows it concerns and writes each
// changed row once, in the consumer's transaction.
func (p projection) apply(ctx context.Context, tx pgx.Tx, ds []outbox.Delivery) error {
	var orderEvs, customerEvs []Event
	for _, d := range ds {
		data, err := p.registry.Decode(d.Envelope)
		if errors.Is(err, events.ErrUnknownEventType) {
			continue // an event type this projection does not show
		}
		if err != nil {
			return outbox.Permanent(err)
		}
		e := Event{Env: d.Envelope, Data: data, TraceParent: d.Header(events.HeaderTraceParent)}
		switch d.Envelope.AggregateType {
		case orders.AggregateType:
			orderEvs = append(orderEvs, e)
		case customers.AggregateType:
			customerEvs = append(customerEvs, e)
		}
	}
	var steps sagaLog // for the saga view (ui_log.go)
	if len(orderEvs) > 0 {
		rows, err := p.gen.loadOrders(ctx, tx, idsOf(orderEvs))
		if err != nil {
			return fmt.Errorf("load orders: %w", err)
		}
		if p.bulk {
			if err := p.bulkOrders(ctx, tx, rows, orderEvs, &steps); err != nil {
				return err
			}
		} else {
			steps.addOrders(orderEvs)
			changed, counts, _ := foldOrders(rows, orderEvs)
			if err := p.gen.writeOrders(ctx, tx, changed); err != nil {
				return fmt.Errorf("write orders: %w", err)
			}
			if err := p.gen.addCounts(ctx, tx, counts); err != nil {
				return fmt.Errorf("count orders: %w", err)
			}
		}
	}
	if len(customerEvs) > 0 {
		rows, err := p.gen.loadCustomers(ctx, tx, idsOf(customerEvs))
		if err != nil {
			return fmt.Errorf("load customers: %w", err)
		}
		changed, credits := foldCustomers(rows, customerEvs)
		if err := p.gen.writeCustomers(ctx, tx, changed); err != nil {
			return fmt.Errorf("write customers: %w", err)
		}
		steps.addCredits(credits)
	}
	write := p.gen.writeSagaLog
	if p.bulk {
		write = p.gen.copySagaLog
	}
	if err := write(ctx, tx, steps); err != nil {
		return fmt.Errorf("write the saga log: %w", err)
	}
	return nil
}

func idsOf(evs []Event) [][16]byte {
	seen := make(map[uuid.UUID]bool, len(evs))
	out := make([][16]byte, 0, len(evs))
	for _, e := range evs {
		if !seen[e.Env.AggregateID] {
			seen[e.Env.AggregateID] = true
			out = append(out, e.Env.AggregateID)
		}
	}
	return out
}

// recent remembers, for a few seconds, the highest version of each order
// that this instance has committed to the read model, and wakes the queries
// waiting for those orders. A waiting query checks it rather than the
// database, which it reads once its version is there; and a commit wakes
// only the queries of the orders it touched, so a crowd of waiting queries
// costs neither database work nor wake-ups per commit.
type recent struct {
	mu        sync.Mutex
	cur, prev map[uuid.UUID]int64
	rotated   time.Time
	waiters   map[uuid.UUID][]chan struct{}
}

// record notes committed deliveries. A delivery committed at version v means
// the row is at v or later: it was applied, or skipped as older than the row.
func (r *recent) record(ds []outbox.Delivery) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); r.cur == nil || now.Sub(r.rotated) > MinVersionWait {
		r.prev, r.cur, r.rotated = r.cur, make(map[uuid.UUID]int64), now
	}
	for _, d := range ds {
		id, v := d.Envelope.AggregateID, d.Envelope.AggregateVersion
		if d.Envelope.AggregateType != orders.AggregateType || v <= r.cur[id] {
			continue
		}
		r.cur[id] = v
		for _, ch := range r.waiters[id] {
			close(ch)
		}
		delete(r.waiters, id)
	}
}

// watch returns the highest version of order id recorded lately, and a
// channel closed when a newer one is recorded. Call unwatch when done.
func (r *recent) watch(id uuid.UUID) (int64, chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.waiters == nil {
		r.waiters = make(map[uuid.UUID][]chan struct{})
	}
	ch := make(chan struct{})
	r.waiters[id] = append(r.waiters[id], ch)
	return max(r.cur[id], r.prev[id]), ch
}

// unwatch forgets ch, if it is still waiting.
func (r *recent) unwatch(id uuid.UUID, ch chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ws := r.waiters[id]
	for i, w := range ws {
		if w == ch {
			r.waiters[id] = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(r.waiters[id]) == 0 {
		delete(r.waiters, id)
	}
}
