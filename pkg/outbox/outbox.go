// Package outbox moves events from a service's Postgres database to Kafka
// and from Kafka into another service's database without losing or
// double-applying any of them.
//
//   - Insert is the statement that writes outbox rows; the caller sends it
//     in the transaction of the state change they announce (the event
//     store's unit of work does), so both commit or neither does.
//   - Relay publishes committed rows to Kafka and deletes each row only after
//     Kafka acknowledged it. A crash in between publishes again: duplicates
//     are possible, loss is not.
//   - Consumer applies records to a database through a handler, recording
//     each event ID in an inbox table in the same transaction as the effect,
//     so a duplicate or redelivered event changes nothing, and commits Kafka
//     offsets only after that transaction committed. A record it cannot apply
//     goes to the group's dead-letter topic, and its event is marked in the
//     inbox as dead-lettered, so that only a replay applies it.
//   - ReadDeadLetters and ReplayDeadLetters list a dead-letter topic and
//     send chosen records back to where they came from, for their group's
//     consumer to apply, once (bin/dlq runs them).
//   - Notifier wakes the relay right after a commit, so that latency is a
//     few milliseconds rather than a poll interval.
//   - Metrics reports to Prometheus what relays and consumers do, the
//     outbox's depth and a group's lag (docs/operations.md, "Metrics").
package outbox

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/eventsaga/eventsaga/internal/pgmigrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migration is the schema of the outbox and inbox tables.
func Migration() pgmigrate.Migration {
	return pgmigrate.Migration{VersionTable: "outbox_schema_version", FS: migrations, Dir: "migrations"}
}

// DefaultChannel is the LISTEN/NOTIFY channel of relays and notifiers that
// are not told another.
const DefaultChannel = "outbox"

// Message is one record to publish.
type Message struct {
	Topic   string
	Key     string
	Value   []byte
	Headers []Header
}

// Header is a Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// insertMessages writes any number of messages in one statement: a
// statement per message costs Postgres more than the row does. Each row's
// headers are its slice of the flattened header arrays. Rows are inserted,
// and so numbered, in the order given.
const insertMessages = `
INSERT INTO outbox (topic, key, value, header_keys, header_values)
SELECT m.topic, m.key, m.value, ($4::text[])[m.hfrom:m.hto], ($5::bytea[])[m.hfrom:m.hto]
FROM unnest($1::text[], $2::text[], $3::bytea[], $6::int[], $7::int[]) WITH ORDINALITY
     AS m(topic, key, value, hfrom, hto, n)
ORDER BY m.n`

// MaxMessageBytes bounds a message's key, value and headers together. Kafka
// refuses larger records (its default limit is about 1 MB), and a refused
// record would be overtaken on its partition by the records after it, so an
// oversized message is refused here, before the transaction commits.
const MaxMessageBytes = 900 << 10

// ErrMessageTooLarge is returned for a message over MaxMessageBytes.
var ErrMessageTooLarge = errors.New("outbox message too large")

// Check returns why m cannot be published, if it cannot.
func Check(m Message) error {
	size := len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		size += len(h.Key) + len(h.Value)
	}
	if size > MaxMessageBytes {
		return fmt.Errorf("%w: %d bytes to %s (key %s)", ErrMessageTooLarge, size, m.Topic, m.Key)
	}
	if m.Topic == "" {
		return fmt.Errorf("outbox message with key %s has no topic", m.Key)
	}
	return nil
}

// Insert returns the one statement that writes msgs to the outbox, in the
// order given, for a caller that sends it in a batch of its own with the rest
// of its transaction. It refuses them all if any fails Check.
func Insert(msgs ...Message) (sql string, args []any, err error) {
	n := len(msgs)
	topics, keys, values := make([]string, n), make([]string, n), make([][]byte, n)
	from, to := make([]int32, n), make([]int32, n)
	var hkeys []string
	var hvalues [][]byte
	for i, m := range msgs {
		if err := Check(m); err != nil {
			return "", nil, err
		}
		topics[i], keys[i], values[i] = m.Topic, m.Key, m.Value
		from[i] = int32(len(hkeys)) + 1 // Postgres arrays count from 1
		for _, h := range m.Headers {
			hkeys, hvalues = append(hkeys, h.Key), append(hvalues, h.Value)
		}
		to[i] = int32(len(hkeys))
	}
	if hkeys == nil { // an empty array, not NULL: a slice of NULL is NULL
		hkeys, hvalues = []string{}, [][]byte{}
	}
	return insertMessages, []any{topics, keys, values, hkeys, hvalues, from, to}, nil
}

// Notifier wakes the active relay after a commit that wrote outbox rows.
// Call Notify after each such commit.
//
// When the active relay runs in this process (SetLocalRelay), it is woken
// directly and Postgres is not involved. Otherwise the notifier sends a
// Postgres NOTIFY, which reaches the relay wherever it runs.
//
// NOTIFY is sent after the commit, in a statement of its own, and never inside
// the writing transaction: a transaction that notifies holds a cluster-wide
// lock from its commit until its commit record is flushed, which serialises
// every notifying commit and defeats group commit. Notifications are only
// hints; a relay that misses one finds the rows at its next poll.
type Notifier struct {
	pool    *pgxpool.Pool
	channel string
	log     *slog.Logger
	kick    chan struct{}
	local   atomic.Pointer[Relay]
}

// NewNotifier returns a notifier on channel (DefaultChannel if empty). Run
// must be running for NOTIFYs to be sent.
func NewNotifier(pool *pgxpool.Pool, channel string, log *slog.Logger) *Notifier {
	if channel == "" {
		channel = DefaultChannel
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Notifier{pool: pool, channel: channel, log: log, kick: make(chan struct{}, 1)}
}

// SetLocalRelay tells the notifier about the relay of this process, to wake
// it directly while it is the active one.
func (n *Notifier) SetLocalRelay(r *Relay) { n.local.Store(r) }

// Notify wakes the active relay; it never blocks. NOTIFYs asked for while
// one is being sent are coalesced into the next, so there is at most one in
// flight.
func (n *Notifier) Notify() {
	if r := n.local.Load(); r != nil && r.Leader() {
		r.Wake()
		return
	}
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// Run sends NOTIFYs until ctx is done.
func (n *Notifier) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-n.kick:
		}
		if _, err := n.pool.Exec(ctx, "SELECT pg_notify($1, '')", n.channel); err != nil && ctx.Err() == nil {
			n.log.Warn("outbox notify failed", "err", err)
			sleep(ctx, 100*time.Millisecond)
		}
	}
}

// sleep waits for d or until ctx is done, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// kafkaLogger passes a Kafka client's warnings and errors to log; kgo's
// info messages (metadata refreshes, group heartbeats) are left out as
// noise in a service's log.
func kafkaLogger(log *slog.Logger) kgo.Logger {
	return cappedLogger{kslog.New(log)}
}

type cappedLogger struct{ kgo.Logger }

func (l cappedLogger) Level() kgo.LogLevel { return min(l.Logger.Level(), kgo.LogLevelWarn) }
