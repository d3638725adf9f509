package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"
)

// Why the relay cannot skip a row, and keeps each aggregate's order.
//
// Outbox ids come from a sequence, and a transaction that drew a smaller id
// can commit after one that drew a larger id. A relay that remembers "I have
// published up to id N" skips the late row forever; that is the bug reported
// against Watermill, Marten, Axon and Eventuate. This relay keeps no cursor:
// it publishes the committed rows with the smallest ids, deletes them once
// Kafka has acknowledged them, and starts again from whatever is left. A row
// committed late is simply found on a later pass.
//
// Per-aggregate order follows from optimistic concurrency: version N+1 of an
// aggregate is appended by a transaction that read version N, so it began
// after N committed and drew a larger outbox id. Rows of one key are therefore
// visible no later than, and ordered after, the rows before them. kgo keeps
// the order within a partition and, when it must fail a record, fails every
// later record of that partition too, so the rows left behind after a partial
// failure are always a suffix of each key's rows.
//
// Only one relay per database publishes: it holds a session advisory lock on
// the very connection it reads and deletes with. If that connection or its
// process dies, Postgres releases the lock and a standby takes over; the rows
// it finds include any that were published but not yet deleted, so a takeover
// can duplicate records, never lose them.

// RelayConfig configures a Relay.
type RelayConfig struct {
	// Pool is the database whose outbox is relayed. The relay opens one
	// dedicated connection with the pool's settings; it holds the advisory
	// lock and LISTENs, so it cannot be a pooled connection.
	Pool *pgxpool.Pool
	// Brokers are the Kafka seed brokers.
	Brokers []string
	// Logger receives the relay's and its Kafka client's logs.
	Logger *slog.Logger
	// Channel is the NOTIFY channel to wake on; DefaultChannel if empty.
	Channel string
	// LockID is the advisory lock that elects the one active relay of a
	// database. Zero means DefaultRelayLockID.
	LockID int64
	// BatchSize is how many rows are published per round; 1000 if zero.
	BatchSize int
	// PollInterval is how long the relay waits for a notification before it
	// looks anyway, and how often a standby tries to take the lock; one second
	// if zero.
	PollInterval time.Duration
	// PublishTimeout bounds one batch's wait for Kafka's acknowledgment; 30s
	// if zero. A batch that takes longer ends the relay's session: its Kafka
	// client is closed (kgo cannot otherwise give up on records already
	// sent), the lock is released, and unacknowledged rows are published
	// again by whoever leads next.
	PublishTimeout time.Duration
	// Metrics, if not nil, receives the relay's metrics (see Metrics).
	Metrics *Metrics
	// TracerProvider, if not nil, traces each record's publication
	// (tracing.go).
	TracerProvider trace.TracerProvider
	// ClientOpts are added to the Kafka producer's options. The options the
	// relay's guarantees rest on (acks, partitioner, idempotence, batch
	// size) are applied after them and cannot be overridden.
	ClientOpts []kgo.Opt
	// VacuumEvery: on a server whose autovacuum is off, the relay vacuums
	// the outbox itself each time it has deleted this many rows; 20,000 if
	// zero, never if negative. Where autovacuum runs, the outbox's own
	// thresholds (see the migrations) leave it to autovacuum.
	VacuumEvery int

	// afterPublish, when set, runs after Kafka acknowledged a batch and
	// before its rows are deleted; an error abandons the batch. Tests use it
	// to crash the relay at the worst moment.
	afterPublish func(ctx context.Context) error
}

// DefaultRelayLockID is the advisory lock key of relays not told another.
// Advisory locks are per database, so every service can use the same key.
const DefaultRelayLockID int64 = 0x6f7574626f78 // "outbox"

func (c *RelayConfig) setDefaults() {
	if c.Channel == "" {
		c.Channel = DefaultChannel
	}
	if c.LockID == 0 {
		c.LockID = DefaultRelayLockID
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.VacuumEvery == 0 {
		c.VacuumEvery = 20_000
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports a configuration the relay cannot run with.
func (c *RelayConfig) Validate() error {
	switch {
	case c.Pool == nil:
		return errors.New("relay: no database pool")
	case len(c.Brokers) == 0:
		return errors.New("relay: no Kafka brokers")
	case c.BatchSize < 0 || c.BatchSize > 10000:
		return fmt.Errorf("relay: batch size %d outside 1..10000", c.BatchSize)
	case c.PollInterval < 0:
		return errors.New("relay: negative poll interval")
	}
	return nil
}

// Relay publishes committed outbox rows to Kafka.
type Relay struct {
	cfg       RelayConfig
	log       *slog.Logger
	leader    atomic.Bool
	published atomic.Int64
	wake      chan struct{}
	// emptyPasses counts looks at the outbox that found nothing to publish.
	emptyPasses atomic.Int64
	// failed counts records Kafka did not acknowledge (for Metrics).
	failed atomic.Int64
	// vacuum is set, per session, when the relay must vacuum the outbox.
	vacuum *vacuumer
}

// NewRelay validates cfg and returns a relay; Run starts it.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Relay{cfg: cfg, log: cfg.Logger.With("component", "outbox-relay"), wake: make(chan struct{}, 1)}
	cfg.Metrics.addRelay(r)
	return r, nil
}

// Leader reports whether this relay currently holds the lock and publishes.
func (r *Relay) Leader() bool { return r.leader.Load() }

// Wake makes a waiting relay look at the outbox now, as a NOTIFY would;
// it never blocks. A Notifier calls it for a relay in the same process.
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Flush returns once this relay has published everything committed before
// the call; ErrNotLeader if it is not (or stops being) the active relay;
// ctx's error if that ends first.
func (r *Relay) Flush(ctx context.Context) error {
	// Two empty passes: the second began after this call, so it saw every
	// row committed before it.
	target := r.emptyPasses.Load() + 2
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for r.emptyPasses.Load() < target {
		if !r.Leader() {
			return ErrNotLeader
		}
		r.Wake()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Published is the number of records this relay has had acknowledged.
func (r *Relay) Published() int64 { return r.published.Load() }

// ErrNotLeader is returned by Flush when this relay is not the one
// publishing; another instance's relay is.
var ErrNotLeader = errors.New("relay is not the active publisher")

// Run publishes until ctx is done. It waits as a standby while another relay
// holds the lock, and survives lost database connections and Kafka errors by
// starting over after a pause. It returns when ctx is done.
func (r *Relay) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		err := r.session(ctx)
		if ctx.Err() != nil {
			break
		}
		r.log.Warn("relay session ended; starting over", "err", err)
		sleep(ctx, r.cfg.PollInterval)
	}
	return nil
}

// newProducer returns the Kafka client of one leadership session.
func (r *Relay) newProducer() (*kgo.Client, error) {
	opts := append(append(append(r.cfg.Metrics.kafkaHooks("relay"), kafkaTracing(r.cfg.TracerProvider, "")...), r.cfg.ClientOpts...),
		kgo.SeedBrokers(r.cfg.Brokers...),
		kgo.WithLogger(kafkaLogger(r.log)),
		// Idempotent (kgo's default) with acks from all in-sync replicas:
		// retries never duplicate or reorder within a partition.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// Partition by murmur2 of the key, as the Java client does, so
		// every Kafka client agrees where an aggregate's events live.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		// Above MaxMessageBytes: kgo fails a record too large for a batch on
		// its own, without failing its partition's later records.
		kgo.ProducerBatchMaxBytes(1<<20),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return cl, nil
}

// relayConnParams are the settings of the relay's own connection.
//
// The keepalives make Postgres notice within about half a minute that the
// relay's host died or was cut off, and so release its lock; by default an
// idle session can hold it for hours.
//
// Sequential scans are off because the relay reads and deletes outbox rows
// by their key only, and the outbox is a queue: a few live rows among the
// dead ones autovacuum has not removed yet (it waits for 10,000, see
// migration 002), so its statistics make a scan look cheapest while its
// dead rows make a scan dear. Seen at 250 sagas/s, a minute into a run:
// the SELECT and the DELETE at 2.2 and 1.9 ms a call, from 0.06 and 0.08.
var relayConnParams = map[string]string{
	"tcp_keepalives_idle":     "10",
	"tcp_keepalives_interval": "5",
	"tcp_keepalives_count":    "3",
	"tcp_user_timeout":        "30000",
	"application_name":        "outbox-relay",
	"enable_seqscan":          "off",
}

// relayConnConfig is the configuration of the relay's connection: the
// pool's, with relayConnParams.
func relayConnConfig(pool *pgxpool.Pool) *pgx.ConnConfig {
	cfg := pool.Config().ConnConfig.Copy()
	for k, v := range relayConnParams {
		cfg.RuntimeParams[k] = v
	}
	return cfg
}

// session runs one database connection's life: wait for the lock, then
// publish until something fails.
func (r *Relay) session(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, relayConnConfig(r.cfg.Pool))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		// Closing the connection releases the advisory lock.
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		conn.Close(closeCtx)
	}()

	for {
		var locked bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", r.cfg.LockID).Scan(&locked); err != nil {
			return fmt.Errorf("try lock: %w", err)
		}
		if locked {
			break
		}
		if !sleep(ctx, r.cfg.PollInterval) {
			return ctx.Err()
		}
	}
	cl, err := r.newProducer()
	if err != nil {
		return err
	}
	// Closing the client is the only way to make kgo give up on records
	// it has sent and has no answer for; without it a shutdown while Kafka
	// is unreachable would hang, holding the lock. Several things may close
	// it; it is closed once.
	closeProducer := sync.OnceFunc(cl.Close)
	defer closeProducer()
	defer context.AfterFunc(ctx, closeProducer)()

	r.leader.Store(true)
	defer r.leader.Store(false)
	r.log.Info("relay is the active publisher")

	// LISTEN before the first look, so that no commit falls between the look
	// and the wait.
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{r.cfg.Channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var autovacuum string
	if err := conn.QueryRow(ctx, "SELECT current_setting('autovacuum')").Scan(&autovacuum); err != nil {
		return fmt.Errorf("autovacuum setting: %w", err)
	}
	r.vacuum = nil
	if autovacuum != "on" && r.cfg.VacuumEvery > 0 {
		r.log.Info("autovacuum is off on this server: the relay vacuums the outbox itself", "every_rows", r.cfg.VacuumEvery)
		r.vacuum = &vacuumer{pool: r.cfg.Pool, every: int64(r.cfg.VacuumEvery), log: r.log}
		defer r.vacuum.wait()
	}
	for {
		n, err := r.publishBatch(ctx, conn, cl, closeProducer)
		if err != nil {
			return err
		}
		if n == r.cfg.BatchSize {
			continue // more is waiting
		}
		if err := r.wait(ctx, conn); err != nil {
			return err
		}
	}
}

// wait returns when a NOTIFY arrives, Wake is called or the poll interval
// has passed, whichever is first.
func (r *Relay) wait(ctx context.Context, conn *pgx.Conn) error {
	select {
	case <-r.wake: // woken while publishing: look again at once
		return nil
	default:
	}
	waitCtx, cancel := context.WithTimeout(ctx, r.cfg.PollInterval)
	defer cancel()
	woken := make(chan bool, 1)
	go func() {
		select {
		case <-r.wake:
			woken <- true
			cancel() // interrupts the wait; the connection stays usable
		case <-waitCtx.Done():
			woken <- false
		}
	}()
	_, err := conn.WaitForNotification(waitCtx)
	cancel()
	// Join the helper, so that a wake it took is never lost: whatever
	// happened, the caller looks at the outbox next.
	wasWoken := <-woken
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err == nil, wasWoken, errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return nil
	default:
		return fmt.Errorf("wait for notification: %w", err)
	}
}

const (
	selectBatch = `
SELECT id, topic, key, value, header_keys, header_values
FROM outbox ORDER BY id LIMIT $1`
	deleteAcked = `DELETE FROM outbox WHERE id = ANY($1)`
)

// publishBatch publishes the oldest committed rows and deletes those Kafka
// acknowledged. It returns how many rows it read.
func (r *Relay) publishBatch(ctx context.Context, conn *pgx.Conn, cl *kgo.Client, closeProducer func()) (int, error) {
	ids := make([]int64, 0, r.cfg.BatchSize)
	recs := make([]*kgo.Record, 0, r.cfg.BatchSize)
	rows, _ := conn.Query(ctx, selectBatch, r.cfg.BatchSize) // errors surface in rows.Err
	for rows.Next() {
		var (
			rec  = &kgo.Record{}
			id   int64
			key  string
			keys []string
			vals [][]byte
		)
		if err := rows.Scan(&id, &rec.Topic, &key, &rec.Value, &keys, &vals); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read outbox: %w", err)
		}
		rec.Key = []byte(key)
		if len(keys) > 0 {
			rec.Headers = make([]kgo.RecordHeader, len(keys))
			for i := range keys {
				rec.Headers[i] = kgo.RecordHeader{Key: keys[i], Value: vals[i]}
			}
		}
		if r.cfg.TracerProvider != nil {
			rec.Context = publishContext(ctx, rec)
		}
		ids = append(ids, id)
		recs = append(recs, rec)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read outbox: %w", err)
	}
	if len(recs) == 0 {
		r.emptyPasses.Add(1)
		return 0, nil
	}

	idOf := make(map[*kgo.Record]int64, len(recs))
	for i, rec := range recs {
		idOf[rec] = ids[i]
	}
	acked := ids[:0]
	var firstErr error
	watchdog := time.AfterFunc(r.cfg.PublishTimeout, closeProducer)
	start := time.Now()
	results := produceNow(ctx, cl, recs)
	r.cfg.Metrics.observePublish(time.Since(start))
	if !watchdog.Stop() {
		r.failed.Add(int64(len(recs)))
		return 0, fmt.Errorf("kafka did not acknowledge %d records within %v", len(recs), r.cfg.PublishTimeout)
	}
	for _, res := range results {
		if res.Err != nil {
			r.failed.Add(1)
			if firstErr == nil {
				firstErr = fmt.Errorf("publish to %s: %w", res.Record.Topic, res.Err)
			}
			continue
		}
		acked = append(acked, idOf[res.Record])
	}
	if r.cfg.afterPublish != nil {
		if err := r.cfg.afterPublish(ctx); err != nil {
			return 0, err
		}
	}
	if len(acked) > 0 {
		// Deleting under a cancelled ctx would fail and republish rows that
		// are already on the topic; give the delete its own short deadline.
		delCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, err := conn.Exec(delCtx, deleteAcked, acked)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("delete %d published rows: %w", len(acked), err)
		}
		r.published.Add(int64(len(acked)))
		if r.vacuum != nil {
			r.vacuum.deleted(ctx, len(acked))
		}
	}
	return len(recs), firstErr
}

// produceNow hands kgo a pass's records and has them sent at once, then
// waits for every one's result. kgo lingers 10 ms by default for more records
// to fill a batch; a pass has handed it all it has, so lingering gathers
// nothing and delays every hop of a saga (three a saga) by up to 10 ms.
func produceNow(ctx context.Context, cl *kgo.Client, recs []*kgo.Record) kgo.ProduceResults {
	results := make(kgo.ProduceResults, 0, len(recs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(len(recs))
	for _, rec := range recs {
		cl.Produce(ctx, rec, func(rec *kgo.Record, err error) {
			mu.Lock()
			results = append(results, kgo.ProduceResult{Record: rec, Err: err})
			mu.Unlock()
			wg.Done()
		})
	}
	// Flush ends the lingering; the results come from the callbacks, each
	// called once whatever happens (a closed client fails what it holds).
	_ = cl.Flush(ctx)
	wg.Wait()
	return results
}

// vacuumer vacuums the outbox after every so many deleted rows, for a server
// that will not. Every published row is deleted; without vacuum the dead rows
// stay, and each look at the outbox walks past more of them (seen at 250
// sagas/s: 0.3 ms a look on a new stack, 1.2 ms after a minute at 1,500/s).
type vacuumer struct {
	pool    *pgxpool.Pool
	every   int64
	log     *slog.Logger
	since   int64
	running sync.WaitGroup
	busy    atomic.Bool
}

// deleted counts n deleted rows and, when enough have been, starts a vacuum
// on a pooled connection, beside the publishing: one at a time.
func (v *vacuumer) deleted(ctx context.Context, n int) {
	v.since += int64(n)
	if v.since < v.every || !v.busy.CompareAndSwap(false, true) {
		return
	}
	v.since = 0
	v.running.Go(func() {
		defer v.busy.Store(false)
		if _, err := v.pool.Exec(ctx, "VACUUM outbox"); err != nil && ctx.Err() == nil {
			v.log.Warn("vacuum of the outbox failed", "err", err)
		}
	})
}

// wait returns when no vacuum is running.
func (v *vacuumer) wait() { v.running.Wait() }
