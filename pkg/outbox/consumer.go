package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsaga/eventsaga/internal/logctx"
	"github.com/eventsaga/eventsaga/internal/tracing"
	"github.com/eventsaga/eventsaga/pkg/events"
)

// Delivery is one consumed record and the envelope it carries.
type Delivery struct {
	Envelope events.Envelope
	Record   *kgo.Record
	// traceParent is the span applying the record, with tracing on.
	traceParent string
}

// TraceParent is the W3C traceparent to carry on the events a decision on
// d appends: with tracing on, that of the span applying d (tracing.go);
// else the record's own.
func (d Delivery) TraceParent() string {
	if d.traceParent != "" {
		return d.traceParent
	}
	return d.Header(events.HeaderTraceParent)
}

// Header returns the value of the record's header key, or "".
func (d Delivery) Header(key string) string { return header(d.Record, key) }

func header(rec *kgo.Record, key string) string {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Handler applies one event to the database within tx. An error rolls back
// everything the transaction did; the consumer retries and finally
// dead-letters the record. Wrap an error with Permanent when retrying cannot
// help.
type Handler func(ctx context.Context, tx pgx.Tx, d Delivery) error

// BatchHandler applies the events of one partition, in order, within tx.
// It is given a batch when a handler does better with many events at once
// (a projection folds them and writes each row once).
type BatchHandler func(ctx context.Context, tx pgx.Tx, ds []Delivery) error

// OnCommit makes fn run once the transaction that a Handler or BatchHandler
// was given has committed, and never if it did not (a failed COMMIT
// included, whose outcome the consumer cannot know). It is how a handler
// keeps state outside the database, such as a cache, in step with what
// committed. ctx must be the one the handler was called with; with any
// other, OnCommit reports false and fn never runs.
func OnCommit(ctx context.Context, fn func()) bool {
	h, ok := ctx.Value(commitHooksKey{}).(*commitHooks)
	if ok {
		h.fns = append(h.fns, fn)
	}
	return ok
}

type commitHooksKey struct{}

// commitHooks are the functions a transaction's handlers gave OnCommit.
type commitHooks struct{ fns []func() }

// Permanent marks err as one that no retry can cure: the record goes to the
// dead-letter topic at once.
func Permanent(err error) error { return permanentError{err} }

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// The headers a consumer adds to a record it dead-letters, and the one that
// marks a record replayed from a dead-letter topic (see ReplayDeadLetters).
const (
	// HeaderError is why the record was given up: the last error.
	HeaderError = "error"
	// HeaderDLQSource is where the record was: <topic>/<partition>@<offset>.
	HeaderDLQSource = "dlq_source"
	// HeaderDLQGroup is the consumer group that gave the record up.
	HeaderDLQGroup = "dlq_group"
	// HeaderReplay, on a record of a consumed topic, names the consumer
	// group it is replayed for. That group applies the event even though
	// it dead-lettered it before; any other group, or that group once the
	// event is applied, skips it as the duplicate it is.
	HeaderReplay = "dlq_replay"
)

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
	// Pool is the database the handler writes to; the inbox lives there.
	Pool *pgxpool.Pool
	// Brokers are the Kafka seed brokers.
	Brokers []string
	// Group is the consumer group, also the inbox's namespace.
	Group string
	// Topics are consumed from their start when the group is new.
	Topics []string
	// Handler applies each event that the group has not applied before.
	Handler Handler
	// Planner, instead of Handler or BatchHandler, applies a batch in two
	// round trips (see Planner).
	Planner Planner
	// BatchHandler, instead of Handler, applies a partition's events a
	// batch at a time. When a batch fails it is given its records one by
	// one, to find the bad one.
	BatchHandler BatchHandler
	// AcrossPartitions applies a poll whose records fit in one batch in a
	// single transaction, rather than one per partition: a partition's
	// records keep their order, and the records of one aggregate share a
	// partition, so each aggregate's order holds. At low volume this turns a
	// dozen small transactions, waiting on each other's locks, into one. If
	// that transaction fails, the partitions are applied apart.
	AcrossPartitions bool
	// NoInbox leaves out the inbox: for a handler that is idempotent by
	// itself (a projection that records each aggregate's last applied
	// version), where the inbox would only cost a write per event.
	NoInbox bool
	// Logger receives the consumer's and its Kafka client's logs. The
	// context a Handler or BatchHandler is given carries the event's
	// trace_id and correlation_id for the lines logged with it (package
	// internal/logctx; a logger of platform.NewLogger adds them).
	Logger *slog.Logger
	// DLQTopic receives records that cannot be applied; "dlq.<Group>" if
	// empty. It is created when missing.
	DLQTopic string
	// EnsureTopics are more topics to create, when missing, before
	// consuming (see EnsureTopics): those the service consumes and
	// produces. The consumer waits for Kafka to answer for them.
	EnsureTopics []string
	// MaxAttempts is how often a record is tried before it is dead-lettered;
	// 5 if zero. Attempts made while the database does not answer at all do
	// not count: that is no fault of the record.
	MaxAttempts int
	// RetryBackoff is the pause after the first failed attempt, doubled after
	// each further one up to five seconds; 50ms if zero.
	RetryBackoff time.Duration
	// BatchSize is the most records of one partition applied in one
	// transaction; 500 if zero.
	BatchSize int
	// MaxPollRecords bounds the records taken per poll; 5000 if zero.
	MaxPollRecords int
	// Concurrency is how many partitions are applied at once; 8 if zero.
	// Each takes a database connection.
	Concurrency int
	// ShutdownGrace is how long work in hand may go on after ctx is done
	// before it is abandoned (and redelivered later); 10s if zero.
	ShutdownGrace time.Duration
	// TxTimeout bounds each transaction; 5s if zero. One that runs out
	// counts as the database not answering: it is tried again, and the
	// attempt does not count towards MaxAttempts. Keep it well below the
	// group's rebalance timeout (10 s): a rebalance that finds a
	// transaction under way waits for it.
	TxTimeout time.Duration
	// Transient reports errors that are retried, with backoff, without
	// counting towards MaxAttempts: a lost optimistic-concurrency race is
	// no fault of the record, and dead-lettering it would strand its saga.
	Transient func(error) bool
	// AfterCommit runs after each transaction that applied events commits,
	// with the deliveries it applied: to wake the relay that publishes what
	// the handlers wrote, or to tell readers what is now in the database.
	AfterCommit func([]Delivery)
	// InstanceID, if set, makes this consumer a static member of its group
	// (KIP-345): an instance restarted within the session timeout gets its
	// partitions back without a rebalance, so a crash-and-restart pauses
	// only its own partitions, for as long as the restart takes. It must be
	// unique among the group's live members and the same across restarts
	// of one instance (a pod's name, devstack's "order-2").
	InstanceID string
	// ClientOpts are added to the Kafka client's options.
	ClientOpts []kgo.Opt
	// ConnOpts say how to connect (TLS, SASL: package kafkaconn); every
	// client of the consumer gets them, its dead-letter producer too.
	ConnOpts []kgo.Opt
	// TracerProvider, if not nil, traces the records applied (tracing.go).
	TracerProvider trace.TracerProvider
	// Metrics, if not nil, receives the consumer's metrics (see Metrics)
	// while it runs.
	Metrics *Metrics
}

func (c *ConsumerConfig) setDefaults() {
	if c.DLQTopic == "" {
		c.DLQTopic = "dlq." + c.Group
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 5
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = 50 * time.Millisecond
	}
	if c.BatchSize == 0 {
		c.BatchSize = 500
	}
	if c.MaxPollRecords == 0 {
		c.MaxPollRecords = 5000
	}
	if c.Concurrency == 0 {
		c.Concurrency = 8
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 10 * time.Second
	}
	if c.TxTimeout == 0 {
		c.TxTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports a configuration the consumer cannot run with.
func (c *ConsumerConfig) Validate() error {
	switch {
	case c.Pool == nil:
		return errors.New("consumer: no database pool")
	case len(c.Brokers) == 0:
		return errors.New("consumer: no Kafka brokers")
	case c.Group == "":
		return errors.New("consumer: no group")
	case len(c.Topics) == 0:
		return errors.New("consumer: no topics")
	case btoi(c.Handler != nil)+btoi(c.BatchHandler != nil)+btoi(c.Planner != nil) != 1:
		return errors.New("consumer: give exactly one of Handler, BatchHandler and Planner")
	case c.MaxAttempts < 1, c.BatchSize < 1, c.MaxPollRecords < 1, c.Concurrency < 1, c.TxTimeout < 0:
		return errors.New("consumer: attempts, batch size, poll size and concurrency must be positive, the transaction timeout not negative")
	}
	return nil
}

// ConsumerStats counts what a consumer has done since it started.
type ConsumerStats struct {
	Applied      int64 // events the handler applied
	Duplicates   int64 // events skipped because the inbox had them
	DeadLettered int64 // records sent to the dead-letter topic
}

// Consumer applies the records of a consumer group to a database,
// effectively once.
//
// Records of one partition are applied in order; partitions are applied in
// parallel. A polled batch of a partition is applied in as few transactions
// as BatchSize allows; if one fails, that batch is applied again one record
// per transaction, so that a bad record is found, retried and dead-lettered
// without holding back the good ones. Offsets are committed after the
// transactions committed. A record that cannot be applied is dead-lettered
// and its event marked in the inbox: a redelivery skips it, a replay for the
// group (HeaderReplay) applies it.
//
// Rebalances are held off while a poll's records are in hand, so a
// partition is never given up in the middle of a transaction. When a
// rebalance is waiting, the consumer finishes the transactions under way,
// starts no other and stops retrying (as it does while the database is
// down), and lets the rebalance go on: the records it has not dealt with
// are polled again, by itself if it keeps their partition, else by the
// partition's next owner. Held longer than the group's rebalance timeout,
// the consumer would be put out of the group while still applying.
type Consumer struct {
	cfg  ConsumerConfig
	log  *slog.Logger
	cl   *kgo.Client
	dlq  *kgo.Client // a producer of its own, so that a shutdown can abandon a dead letter Kafka does not answer for
	pool *pgxpool.Pool
	// tracer is nil with tracing off.
	tracer trace.Tracer

	applied, duplicates, deadLettered atomic.Int64
	consuming                         atomic.Bool
	// retries counts transactions tried again after a failure (of a batch
	// or of a record), for Metrics; not in ConsumerStats, whose form the
	// projector's GET /status documents.
	retries atomic.Int64

	pollMu sync.Mutex
	yield  context.CancelCauseFunc // ends the poll in hand; nil between polls
	// held is set while the poll in hand waits for the database.
	held atomic.Bool
}

// errRebalance ends a poll's context when a rebalance waits for it.
var errRebalance = errors.New("a rebalance is waiting")

// errNoAnswer marks a transaction that ran out of TxTimeout.
var errNoAnswer = errors.New("the database did not answer in time")

// Consuming reports whether the consumer has its topics and consumes: false
// before, while it waits for Kafka to answer.
func (c *Consumer) Consuming() bool { return c.consuming.Load() }

// NewConsumer validates cfg and returns a consumer; Run starts it.
func NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Planner != nil {
		cfg.BatchHandler = PlannerInTx(cfg.Planner) // for what the two round trips do not cover (see applyPlanned)
	}
	// Its lines about a record carry the record's trace_id and
	// correlation_id (recordLogContext), whatever handler Logger has.
	log := slog.New(logctx.NewHandler(cfg.Logger.Handler())).With("component", "consumer", "group", cfg.Group)
	c := &Consumer{cfg: cfg, log: log, pool: cfg.Pool}
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.WithLogger(kafkaLogger(log)),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// A record's offset is marked once its effects are committed in the
		// database, and marked offsets are committed in the background (and
		// on a rebalance, and on leaving the group), not by the loop: a
		// round trip to the broker per poll was a fifth of the time between
		// polls. A crash can cost a redelivery of what was applied since the
		// last commit; the inbox makes that a no-op.
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(100 * time.Millisecond),
		// No rebalance while a polled batch is being applied; but the
		// batch is cut short when one waits (see Consumer).
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsCallbackBlocked(func(context.Context, *kgo.Client) { c.rebalanceWaiting() }),
		// A member killed outright (kill -9, a lost host) holds its
		// partitions until the group notices: kgo's default 45 s session
		// timeout left sagas waiting minutes when instances were killed one
		// after another. 6 s is the least a broker accepts by default
		// (group.min.session.timeout.ms), with heartbeats every second; a
		// rebalance waits at most 10 s for members to rejoin, twice
		// TxTimeout.
		kgo.SessionTimeout(6 * time.Second),
		kgo.HeartbeatInterval(time.Second),
		kgo.RebalanceTimeout(10 * time.Second),
	}, cfg.ClientOpts...)
	opts = append(opts, cfg.ConnOpts...)
	opts = append(opts, cfg.Metrics.kafkaHooks("consumer")...)
	opts = append(opts, kafkaTracing(cfg.TracerProvider, cfg.Group)...)
	if cfg.TracerProvider != nil {
		c.tracer = tracing.Tracer(cfg.TracerProvider)
	}
	if cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(cfg.InstanceID))
	}
	var err error
	if c.cl, err = kgo.NewClient(opts...); err != nil {
		return nil, fmt.Errorf("consumer %s: kafka client: %w", cfg.Group, err)
	}
	c.dlq, err = kgo.NewClient(append(append(cfg.Metrics.kafkaHooks("dead-letters"), cfg.ConnOpts...),
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.WithLogger(kafkaLogger(log)),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), // dead letters keep their key's partitioning
	)...)
	if err != nil {
		c.cl.Close()
		return nil, fmt.Errorf("consumer %s: kafka producer: %w", cfg.Group, err)
	}
	return c, nil
}

// Stats returns the consumer's counters.
func (c *Consumer) Stats() ConsumerStats {
	return ConsumerStats{Applied: c.applied.Load(), Duplicates: c.duplicates.Load(), DeadLettered: c.deadLettered.Load()}
}

// Client is the consumer's Kafka client, for readiness checks and lag.
func (c *Consumer) Client() *kgo.Client { return c.cl }

// Run consumes until ctx is done, then lets the batch in hand finish (within
// ShutdownGrace), commits its offsets and leaves the group. It closes the
// consumer: a Consumer runs once.
func (c *Consumer) Run(ctx context.Context) error {
	c.cfg.Metrics.addConsumer(c)
	defer c.cfg.Metrics.removeConsumer(c)
	defer func() {
		// A poll that returned as ctx ended may still hold off rebalances;
		// leaving the group waits for that hold to be released.
		c.cl.AllowRebalance()
		c.cl.Close()
	}()
	if err := c.ensureTopics(ctx); err != nil || ctx.Err() != nil {
		return err
	}
	c.consuming.Store(true)
	defer c.consuming.Store(false)

	// Work in hand outlives ctx by ShutdownGrace, so that a shutdown commits
	// what it finished instead of abandoning it.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	closeDLQ := sync.OnceFunc(c.dlq.Close)
	defer closeDLQ()
	defer context.AfterFunc(workCtx, closeDLQ)()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(c.cfg.ShutdownGrace, cancelWork)
		context.AfterFunc(workCtx, func() { t.Stop() })
	})
	defer stop()

	for c.pollAndApply(ctx, workCtx) {
	}
	return nil
}

// pollAndApply polls once and applies what it got, within workCtx; it
// returns false once ctx is done.
func (c *Consumer) pollAndApply(ctx, workCtx context.Context) bool {
	// The poll's context is there before the poll returns: a rebalance may
	// wait for the poll from the moment it returns records.
	pollCtx, release := c.hold(workCtx)
	defer release()
	fetches := c.cl.PollRecords(ctx, c.cfg.MaxPollRecords)
	if ctx.Err() != nil || fetches.IsClientClosed() {
		return false
	}
	defer c.cl.AllowRebalance()
	fetches.EachError(func(topic string, p int32, err error) {
		c.log.Warn("fetch error", "topic", topic, "partition", p, "err", err)
	})
	var parts [][]*kgo.Record
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) > 0 {
			parts = append(parts, p.Records)
		}
	})
	if len(parts) == 0 {
		if len(fetches.Errors()) > 0 {
			c.cl.AllowRebalance()
			sleep(ctx, c.cfg.RetryBackoff) // do not spin on a broker error
		}
		return true
	}
	done := c.applyPoll(pollCtx, parts)
	if len(done) > 0 {
		c.cl.MarkCommitRecords(done...)
	}
	if ctx.Err() == nil { // else the client closes, and nothing is polled again
		c.rewind(pollCtx, parts, done)
	}
	return true
}

// hold returns the context of a poll's work: it ends with work, or when a
// rebalance waits for the poll (cause errRebalance). release ends it.
func (c *Consumer) hold(work context.Context) (ctx context.Context, release func()) {
	ctx, cancel := context.WithCancelCause(work)
	c.held.Store(false)
	c.pollMu.Lock()
	c.yield = cancel
	c.pollMu.Unlock()
	return ctx, func() {
		c.pollMu.Lock()
		c.yield = nil
		c.pollMu.Unlock()
		cancel(nil)
	}
}

// rebalanceWaiting is told by the Kafka client that a rebalance waits for
// the poll in hand.
func (c *Consumer) rebalanceWaiting() {
	c.pollMu.Lock()
	defer c.pollMu.Unlock()
	if c.yield != nil {
		c.yield(errRebalance)
	}
}

// rewind makes the records of parts that were not dealt with (those after
// done's, the last dealt with of each partition) be polled again, from the
// first of them. Offsets are committed only up to what was dealt with, so
// a partition that goes to another member in the rebalance is resumed there
// from no later than that.
func (c *Consumer) rewind(ctx context.Context, parts [][]*kgo.Record, done []*kgo.Record) {
	type tp struct {
		topic     string
		partition int32
	}
	last := make(map[tp]int64, len(done))
	for _, r := range done {
		last[tp{r.Topic, r.Partition}] = r.Offset
	}
	offsets := map[string]map[int32]kgo.EpochOffset{}
	var left int
	var where []string
	for _, p := range parts {
		k := tp{p[0].Topic, p[0].Partition}
		i := 0
		if at, ok := last[k]; ok {
			i = slices.IndexFunc(p, func(r *kgo.Record) bool { return r.Offset > at })
			if i < 0 {
				continue // all dealt with
			}
		}
		if offsets[k.topic] == nil {
			offsets[k.topic] = map[int32]kgo.EpochOffset{}
		}
		offsets[k.topic][k.partition] = kgo.EpochOffset{Epoch: p[i].LeaderEpoch, Offset: p[i].Offset}
		left += len(p) - i
		where = append(where, locationOf(p[i]).String())
	}
	if left == 0 {
		return
	}
	c.cl.SetOffsets(offsets)
	switch {
	case !errors.Is(context.Cause(ctx), errRebalance):
		c.log.Warn("records left unapplied; polling them again", "records", left, "from", where)
	case c.held.Load():
		c.log.Warn("a rebalance is waiting: let go of the partitions held while the database is unavailable; "+
			"their records are applied once it is back, by whichever member then owns them",
			"records", left, "from", where)
	default:
		c.log.Info("a rebalance is waiting: left the rest of the poll for after it", "records", left, "from", where)
	}
}

// applyPoll applies a poll's records. Across partitions, they are applied
// in transactions of up to BatchSize records in the order of the poll, so
// each partition's records keep their order; a chunk that fails is applied
// partition by partition (and so record by record where need be). It
// returns, for each partition, the last record dealt with.
func (c *Consumer) applyPoll(ctx context.Context, parts [][]*kgo.Record) []*kgo.Record {
	if !c.cfg.AcrossPartitions || len(parts) < 2 {
		return c.applyPartitions(ctx, parts)
	}
	type tp struct {
		topic     string
		partition int32
	}
	last := map[tp]*kgo.Record{}
	var all []*kgo.Record
	for _, p := range parts {
		all = append(all, p...)
	}
	for len(all) > 0 {
		n := min(len(all), c.cfg.BatchSize)
		chunk := all[:n]
		all = all[n:]
		if err := c.applyBatchRetrying(ctx, chunk); err == nil {
			for _, r := range chunk {
				last[tp{r.Topic, r.Partition}] = r
			}
			continue
		} else if ctx.Err() == nil {
			c.log.DebugContext(recordLogContext(ctx, chunk[0], nil), "chunk failed as one batch; applying its partitions apart", "records", n, "err", err)
		}
		if ctx.Err() != nil {
			break
		}
		var sub [][]*kgo.Record
		at := map[tp]int{}
		for _, r := range chunk {
			k := tp{r.Topic, r.Partition}
			i, ok := at[k]
			if !ok {
				i = len(sub)
				at[k] = i
				sub = append(sub, nil)
			}
			sub[i] = append(sub[i], r)
		}
		complete := true
		for i, r := range c.applyEach(ctx, sub) {
			if r != nil {
				last[tp{r.Topic, r.Partition}] = r
			}
			if r != sub[i][len(sub[i])-1] {
				complete = false
			}
		}
		if !complete {
			break // ctx ended part-way: later chunks must wait for the rest
		}
	}
	out := make([]*kgo.Record, 0, len(last))
	for _, r := range last {
		out = append(out, r)
	}
	return out
}

// applyPartitions applies each partition's records and returns, for each,
// the last record that was fully dealt with (applied, skipped or
// dead-lettered).
func (c *Consumer) applyPartitions(ctx context.Context, parts [][]*kgo.Record) []*kgo.Record {
	var out []*kgo.Record
	for _, r := range c.applyEach(ctx, parts) {
		if r != nil {
			out = append(out, r)
		}
	}
	return out
}

// applyEach applies each partition's records, in parallel, and returns for
// parts[i] the last record dealt with, or nil for none.
func (c *Consumer) applyEach(ctx context.Context, parts [][]*kgo.Record) []*kgo.Record {
	done := make([]*kgo.Record, len(parts))
	sem := make(chan struct{}, c.cfg.Concurrency)
	var wg sync.WaitGroup
	for i, recs := range parts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			done[i] = c.applyPartition(ctx, recs)
		}()
	}
	wg.Wait()
	return done
}

func (c *Consumer) applyPartition(ctx context.Context, recs []*kgo.Record) (last *kgo.Record) {
	for len(recs) > 0 {
		n := min(len(recs), c.cfg.BatchSize)
		chunk := recs[:n]
		recs = recs[n:]
		err := c.applyBatchRetrying(ctx, chunk)
		if err == nil {
			last = chunk[n-1]
			continue
		}
		if ctx.Err() != nil {
			return last
		}
		if n > 1 {
			c.log.DebugContext(recordLogContext(ctx, chunk[0], nil), "batch failed; applying its records one by one", "records", n, "err", err)
		}
		for _, rec := range chunk {
			if !c.applyWithRetries(ctx, rec) {
				return last
			}
			last = rec
		}
	}
	return last
}

// claimEvents records events in the inbox as applied and returns those it
// had no row for: an event applied before, or dead-lettered before, is
// skipped.
const claimEvents = `
INSERT INTO inbox (consumer_group, event_id)
SELECT $1, unnest($2::uuid[])
ON CONFLICT DO NOTHING
RETURNING event_id`

// claimReplays turns dead-lettered events into applied ones and returns
// them: what a replay may apply. An event applied since (by an earlier
// replay) keeps its row and is not returned.
const claimReplays = `
UPDATE inbox SET dead_letter = NULL, processed_at = now()
WHERE consumer_group = $1 AND event_id = ANY($2::uuid[]) AND dead_letter IS NOT NULL
RETURNING event_id`

// applyBatch applies recs in one transaction: it claims their event IDs in
// the inbox and runs the handler for those not claimed before.
func (c *Consumer) applyBatch(ctx context.Context, recs []*kgo.Record) error {
	envs := make([]events.Envelope, len(recs))
	ids := make([][16]byte, len(recs)) // pgx's native uuid form; see eventstore
	var replays [][16]byte
	for i, rec := range recs {
		env, err := events.ParseEnvelope(rec.Value)
		if err != nil {
			return Permanent(err)
		}
		envs[i], ids[i] = env, env.EventID
		if c.replayed(rec) {
			replays = append(replays, env.EventID)
		}
	}
	var applied, dups int64
	var ds []Delivery
	hooks := &commitHooks{}
	txCtx, cancel := c.txContext(context.WithValue(ctx, commitHooksKey{}, hooks))
	defer cancel()
	var batch trace.Span
	var spans []trace.Span // of the records applied
	var dctx []context.Context
	if c.tracer != nil {
		txCtx, batch = c.startBatchSpan(txCtx, recs)
	}
	// deliveries returns the records to apply: those fresh names, each once
	// (all when fresh is nil).
	deliveries := func(fresh map[[16]byte]bool) []Delivery {
		ds := make([]Delivery, 0, len(recs))
		for i, rec := range recs {
			if fresh != nil && !fresh[ids[i]] {
				continue // applied before, or twice in this batch
			}
			delete(fresh, ids[i])
			d := Delivery{Envelope: envs[i], Record: rec}
			if c.tracer != nil {
				sctx, span := c.startRecordSpan(txCtx, batch, d)
				d.traceParent = tracing.TraceParent(sctx)
				spans, dctx = append(spans, span), append(dctx, sctx)
			}
			ds = append(ds, d)
		}
		applied, dups = int64(len(ds)), int64(len(recs)-len(ds))
		return ds
	}
	var err error
	if c.cfg.Planner != nil && len(replays) == 0 && !c.cfg.NoInbox {
		ds, err = c.applyPlanned(txCtx, recs, envs, ids, deliveries)
	} else {
		err = pgx.BeginFunc(txCtx, c.pool, func(tx pgx.Tx) error {
			fresh, err := c.claim(txCtx, tx, ids, replays)
			if err != nil {
				return err
			}
			ds = deliveries(fresh)
			if c.cfg.BatchHandler != nil {
				if len(ds) == 0 {
					return nil
				}
				if err := c.cfg.BatchHandler(batchLogContext(txCtx, ds), tx, ds); err != nil {
					return batchError(ds, err)
				}
				return nil
			}
			for i, d := range ds {
				hctx := txCtx
				if dctx != nil {
					hctx = dctx[i]
				}
				if err := c.cfg.Handler(recordLogContext(hctx, d.Record, &d.Envelope), tx, d); err != nil {
					return fmt.Errorf("%s %s (%s/%d@%d): %w", d.Envelope.EventType, d.Envelope.EventID, d.Record.Topic, d.Record.Partition, d.Record.Offset, err)
				}
			}
			return nil
		})
	}
	if err != nil && txCtx.Err() != nil && ctx.Err() == nil {
		err = fmt.Errorf("transaction of %d records given up after %v: %w (%w)", len(recs), c.cfg.TxTimeout, errNoAnswer, err)
	}
	if batch != nil {
		for _, span := range spans {
			tracing.End(span, err)
		}
		tracing.End(batch, err)
	}
	if err == nil {
		for _, fn := range hooks.fns {
			fn()
		}
		c.applied.Add(applied)
		c.duplicates.Add(dups)
		if applied > 0 && c.cfg.AfterCommit != nil {
			c.cfg.AfterCommit(ds)
		}
		if len(replays) > 0 {
			c.logReplays(ctx, recs, envs, ds)
		}
	}
	return err
}

// batchError says which records a batch handler failed on.
func batchError(ds []Delivery, err error) error {
	first := ds[0].Record
	return fmt.Errorf("%d events from %s/%d@%d: %w", len(ds), first.Topic, first.Partition, first.Offset, err)
}

// txContext is the context of a transaction within the work of ctx: it ends
// after TxTimeout, or with ctx unless a rebalance is what ended ctx (one
// lets a transaction under way finish). The values of ctx are kept.
func (c *Consumer) txContext(ctx context.Context) (context.Context, context.CancelFunc) {
	txCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.TxTimeout)
	stop := context.AfterFunc(ctx, func() {
		if !errors.Is(context.Cause(ctx), errRebalance) {
			cancel()
		}
	})
	return txCtx, func() { stop(); cancel() }
}

// unavailable reports a failure that is the database's, not the records':
// a transaction that ran out of time, or a database that does not answer a
// ping. It is false once ctx has ended.
func (c *Consumer) unavailable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if errors.Is(err, errNoAnswer) {
		return true
	}
	pingCtx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	return c.pool.Ping(pingCtx) != nil && ctx.Err() == nil
}

// pingTimeout bounds the ping that tells a failing database from a failing
// record.
const pingTimeout = 2 * time.Second

// holding says that the database keeps recs from being applied, so their
// partition waits.
func (c *Consumer) holding(ctx context.Context, recs []*kgo.Record, err error) {
	c.held.Store(true)
	first := recs[0]
	c.log.WarnContext(recordLogContext(ctx, recs[0], nil), "database unavailable; holding the partition",
		"topic", first.Topic, "partition", first.Partition, "offset", first.Offset, "records", len(recs), "err", err)
}

// replayed reports a record replayed from this group's dead letters.
func (c *Consumer) replayed(rec *kgo.Record) bool {
	return header(rec, HeaderReplay) == c.cfg.Group
}

// logReplays tells the operator who replayed dead letters what became of
// them: nothing else shows that a replay was skipped.
func (c *Consumer) logReplays(ctx context.Context, recs []*kgo.Record, envs []events.Envelope, applied []Delivery) {
	done := make(map[*kgo.Record]bool, len(applied))
	for _, d := range applied {
		done[d.Record] = true
	}
	for i, rec := range recs {
		if !c.replayed(rec) {
			continue
		}
		attrs := []any{"event_id", envs[i].EventID, "event_type", envs[i].EventType, "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset}
		lctx := recordLogContext(ctx, rec, &envs[i])
		if done[rec] {
			c.log.InfoContext(lctx, "replayed dead letter applied", attrs...)
		} else {
			c.log.InfoContext(lctx, "replayed dead letter skipped: the group has applied its event already", attrs...)
		}
	}
}

// claim records ids in the inbox and returns those to apply: the ones not
// recorded before, and those of replays (a subset of ids) whose events were
// dead-lettered and not applied since. Without an inbox it returns nil:
// everything is to be applied.
func (c *Consumer) claim(ctx context.Context, tx pgx.Tx, ids, replays [][16]byte) (map[[16]byte]bool, error) {
	if c.cfg.NoInbox {
		return nil, nil
	}
	fresh := make(map[[16]byte]bool, len(ids))
	for _, q := range []struct {
		sql string
		ids [][16]byte
	}{{claimEvents, ids}, {claimReplays, replays}} {
		if len(q.ids) == 0 {
			continue
		}
		rows, _ := tx.Query(ctx, q.sql, c.cfg.Group, q.ids)
		claimed, err := pgx.CollectRows(rows, pgx.RowTo[[16]byte])
		if err != nil {
			return nil, fmt.Errorf("claim in inbox: %w", err)
		}
		for _, id := range claimed {
			fresh[id] = true
		}
	}
	return fresh, nil
}

// applyBatchRetrying is applyBatch, tried again as a whole after a short,
// jittered pause while it fails for a transient reason (a lost optimistic
// race, a deadlock), up to maxBatchRetries times. Such a failure says
// nothing about the records: splitting the batch to find a bad one, as any
// other failure does, would apply a backlog one record per transaction
// exactly when two instances race for the same aggregates. In the chaos
// check (two customer instances, 200 customers, a backlog after the broker
// froze) that cut the customer service below the arrival rate and left
// sagas waiting a minute.
//
// While the database is unavailable the batch is held and tried again
// whole, with backoff: its records are not at fault either.
func (c *Consumer) applyBatchRetrying(ctx context.Context, recs []*kgo.Record) error {
	backoff := c.cfg.RetryBackoff
	for try := 0; ; {
		err := c.applyBatch(ctx, recs)
		switch {
		case err == nil || ctx.Err() != nil:
			return err
		case len(recs) > 1 && try < maxBatchRetries && c.transient(err):
			try++
			c.retries.Add(1)
			c.log.DebugContext(recordLogContext(ctx, recs[0], nil), "batch lost a race; trying it again", "records", len(recs), "err", err)
			if !sleep(ctx, c.cfg.RetryBackoff/2+rand.N(c.cfg.RetryBackoff)) {
				return ctx.Err()
			}
		case len(recs) > 1 && c.unavailable(ctx, err):
			c.holding(ctx, recs, err)
			c.retries.Add(1)
			if !sleep(ctx, backoff) {
				return ctx.Err()
			}
			backoff = min(2*backoff, 5*time.Second)
		default:
			return err
		}
	}
}

// maxBatchRetries bounds the retries of a whole batch before it is split.
const maxBatchRetries = 10

// applyWithRetries applies one record in its own transaction, retrying with
// backoff, and dead-letters it when it cannot be applied. It returns false
// only when ctx ended first, leaving the record unhandled.
func (c *Consumer) applyWithRetries(ctx context.Context, rec *kgo.Record) bool {
	backoff := c.cfg.RetryBackoff
	transients := 0
	for attempt := 1; ; attempt++ {
		err := c.applyBatch(ctx, []*kgo.Record{rec})
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		var perm permanentError
		switch {
		case errors.As(err, &perm):
			return c.deadLetter(ctx, rec, err)
		case c.transient(err) && transients < maxTransientRetries:
			// Another writer got there first; it will have finished by
			// the time a short, jittered pause is over. A "transient"
			// failure that keeps coming back is counted like any other.
			transients++
			c.retries.Add(1)
			c.log.DebugContext(recordLogContext(ctx, rec, nil), "transient failure; retrying", "err", err)
			attempt--
			if !sleep(ctx, c.cfg.RetryBackoff/2+rand.N(c.cfg.RetryBackoff)) {
				return false
			}
			continue
		case c.unavailable(ctx, err):
			// The database is down or stalled: no fault of the record, so
			// the attempt does not count. Hold the partition until it is
			// back, or until a rebalance wants it.
			c.holding(ctx, []*kgo.Record{rec}, err)
			attempt--
		case attempt >= c.cfg.MaxAttempts:
			return c.deadLetter(ctx, rec, err)
		default:
			c.log.InfoContext(recordLogContext(ctx, rec, nil), "apply failed; retrying", "attempt", attempt, "err", err)
		}
		c.retries.Add(1)
		if !sleep(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// maxTransientRetries bounds the retries of one record that do not count
// towards MaxAttempts: 200 short pauses, about ten seconds.
const maxTransientRetries = 200

// transient reports a failure that says nothing about the record: a
// deadlock or serialization failure that Postgres resolved by aborting this
// transaction, or what the handler's Transient says.
func (c *Consumer) transient(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001") {
		return true
	}
	if errors.Is(err, errInboxRace) {
		return true
	}
	return c.cfg.Transient != nil && c.cfg.Transient(err)
}

// markDeadLetter records in the inbox that the group gave an event up, and
// where the dead letter went; a replay that failed again moves the mark to
// its new dead letter. It never touches an event applied meanwhile.
const markDeadLetter = `
INSERT INTO inbox (consumer_group, event_id, dead_letter) VALUES ($1, $2, $3)
ON CONFLICT (consumer_group, event_id) DO UPDATE SET dead_letter = EXCLUDED.dead_letter, processed_at = now()
WHERE inbox.dead_letter IS NOT NULL`

// deadLetter publishes rec, with the reason, to the dead-letter topic and
// waits for Kafka's acknowledgment. It returns false only if ctx ended first.
func (c *Consumer) deadLetter(ctx context.Context, rec *kgo.Record, cause error) bool {
	lctx := recordLogContext(ctx, rec, nil)
	c.log.ErrorContext(lctx, "dead-lettering record", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", cause)
	headers := append(append([]kgo.RecordHeader(nil), rec.Headers...),
		kgo.RecordHeader{Key: HeaderError, Value: []byte(cause.Error())},
		kgo.RecordHeader{Key: HeaderDLQSource, Value: []byte(locationOf(rec).String())},
		kgo.RecordHeader{Key: HeaderDLQGroup, Value: []byte(c.cfg.Group)},
	)
	dl := &kgo.Record{Topic: c.cfg.DLQTopic, Key: rec.Key, Value: rec.Value, Headers: headers}
	backoff := c.cfg.RetryBackoff
	for {
		err := c.dlq.ProduceSync(ctx, dl).FirstErr()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		c.log.WarnContext(lctx, "dead-letter publish failed; retrying", "err", err)
		if !sleep(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	// Counted once the inbox knows too (below), so that what Stats
	// reports dead-lettered is also marked there.
	defer c.deadLettered.Add(1)
	// Remember it as dealt with: if its offset is not committed (a crash, a
	// rebalance), a redelivery must not apply it after the records that
	// followed it, nor dead-letter it twice. Only a replay applies it now.
	if env, err := events.ParseEnvelope(rec.Value); err == nil && !c.cfg.NoInbox {
		ctx, cancel := c.txContext(ctx)
		defer cancel()
		if _, err := c.pool.Exec(ctx, markDeadLetter, c.cfg.Group, env.EventID, locationOf(dl).String()); err != nil {
			c.log.WarnContext(lctx, "could not record the dead letter in the inbox", "err", err)
		}
	}
	return true
}

// ensureTopics creates the topics of EnsureTopics and the dead-letter topic
// if they do not exist (a real cluster does not create them on first use),
// waiting for Kafka to answer.
func (c *Consumer) ensureTopics(ctx context.Context) error {
	err := AwaitTopics(ctx, c.cl, c.log, append(slices.Clone(c.cfg.EnsureTopics), c.cfg.DLQTopic)...)
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("consumer %s: %w", c.cfg.Group, err)
	}
	return nil
}

// recordLogContext returns ctx carrying, for the lines logged with it
// (package logctx), the trace ID of rec's traceparent header and the
// correlation ID of its envelope: env, or parsed from rec when env is nil
// (only on paths that log, which are failures'). A handler logging with the
// context it is given gets them on its lines.
func recordLogContext(ctx context.Context, rec *kgo.Record, env *events.Envelope, attrs ...slog.Attr) context.Context {
	if env == nil {
		if e, err := events.ParseEnvelope(rec.Value); err == nil {
			env = &e
		}
	}
	var correlation string
	if env != nil && env.CorrelationID != uuid.Nil {
		correlation = env.CorrelationID.String()
	}
	return logctx.With(ctx, logctx.TraceIDFromParent(header(rec, events.HeaderTraceParent)), correlation, attrs...)
}

// batchLogContext is recordLogContext for a BatchHandler: a batch may hold
// the events of many sagas, and the handler's lines carry the IDs of its
// first event and, with more than one, how many it holds (batch_records).
// The consumer's own lines about a batch carry its first record's IDs and
// say how many records it holds themselves.
func batchLogContext(ctx context.Context, ds []Delivery) context.Context {
	var attrs []slog.Attr
	if len(ds) > 1 {
		attrs = []slog.Attr{slog.Int("batch_records", len(ds))}
	}
	return recordLogContext(ctx, ds[0].Record, &ds[0].Envelope, attrs...)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
