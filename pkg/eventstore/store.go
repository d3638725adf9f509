// Package eventstore keeps event-sourced aggregates in Postgres: append with
// optimistic concurrency, load a stream (whole, as of a version or as of a
// time), and snapshots so that a long stream loads as snapshot plus tail.
//
// Every append also writes the events' outbox rows in the same transaction,
// so an event is in the store if and only if it will reach Kafka.
package eventstore

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsaga/eventsaga/internal/pgmigrate"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/outbox"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migration is the schema of the events and snapshots tables.
func Migration() pgmigrate.Migration {
	return pgmigrate.Migration{VersionTable: "eventstore_schema_version", FS: migrations, Dir: "migrations"}
}

// Errors callers branch on.
var (
	// ErrConflict: the stream was not at the expected version, because
	// another writer appended first. Reload and decide again.
	ErrConflict = errors.New("concurrency conflict")
	// ErrNotFound: no such stream, or not at the version or time asked.
	ErrNotFound = errors.New("stream not found")
)

// ConflictError says which append lost; it matches ErrConflict.
type ConflictError struct {
	AggregateID uuid.UUID
	Expected    int64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("append to %s at version %d: %v", e.AggregateID, e.Expected, ErrConflict)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Querier is what loading needs: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Config configures a Store.
type Config struct {
	Pool     *pgxpool.Pool
	Registry *events.Registry
	// Notifier, if set, is told after each commit of Tx so that the relay
	// publishes at once.
	Notifier *outbox.Notifier
	// SnapshotEvery: a snapshot is written each time a stream's version
	// crosses a multiple of it. 100 if zero; negative turns snapshots off.
	SnapshotEvery int
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// Store is the event store of one service database.
type Store struct {
	pool          *pgxpool.Pool
	reg           *events.Registry
	notifier      *outbox.Notifier
	snapshotEvery int64
	now           func() time.Time
	group         groupCommit
}

// New returns a store; the schema must have been migrated.
func New(cfg Config) (*Store, error) {
	if cfg.Pool == nil || cfg.Registry == nil {
		return nil, errors.New("eventstore: pool and registry are required")
	}
	if cfg.SnapshotEvery == 0 {
		cfg.SnapshotEvery = 100
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{pool: cfg.Pool, reg: cfg.Registry, notifier: cfg.Notifier, snapshotEvery: int64(cfg.SnapshotEvery), now: cfg.Now}, nil
}

// Pool is the store's database.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Registry is the store's event registry.
func (s *Store) Registry() *events.Registry { return s.reg }

// Tx runs fn in a transaction, one unit of work: everything fn appends, and
// whatever else it writes, commits together or not at all. After the commit
// it wakes the relay.
func (s *Store) Tx(ctx context.Context, fn func(pgx.Tx) error) error {
	if err := pgx.BeginFunc(ctx, s.pool, fn); err != nil {
		return err
	}
	if s.notifier != nil {
		s.notifier.Notify()
	}
	return nil
}

// Meta is why events are appended: the saga they belong to and what caused
// them. Zero IDs default to the aggregate's ID (correlation) and the
// event's own ID (causation), as for a command that starts a saga.
type Meta struct {
	CorrelationID uuid.UUID
	CausationID   uuid.UUID
	// TraceParent is the W3C trace context to carry on the records, if any.
	TraceParent string
}

const insertEvents = `
INSERT INTO events (aggregate_id, version, aggregate_type, event_id, event_type,
                    schema_version, occurred_at, correlation_id, causation_id, data)
SELECT $1, v.version, $2, v.event_id, v.event_type, v.schema_version, $3, v.correlation_id, v.causation_id, v.data
FROM unnest($4::bigint[], $5::uuid[], $6::text[], $7::int[], $8::uuid[], $9::uuid[], $10::jsonb[])
     AS v(version, event_id, event_type, schema_version, correlation_id, causation_id, data)
WHERE (SELECT eventstore_expect_version($1, $11))`

const upsertSnapshot = `
INSERT INTO snapshots (aggregate_id, aggregate_type, schema, version, occurred_at, state)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (aggregate_id) DO UPDATE
SET schema = EXCLUDED.schema, version = EXCLUDED.version,
    occurred_at = EXCLUDED.occurred_at, state = EXCLUDED.state
WHERE snapshots.version < EXCLUDED.version`

// snapshot is a state to store with an append.
type snapshot struct {
	schema string
	state  []byte
}

// stage queues into u the insert of envs (versions expected+1...), their
// outbox rows and an optional snapshot; traceParents[i], if not empty, is
// carried on envs[i]'s record.
func (s *Store) stage(u *UnitOfWork, topic string, expected int64, envs []events.Envelope, snap *snapshot, traceParents []string) error {
	first := envs[0]
	n := len(envs)
	versions := make([]int64, n)
	// UUIDs go to pgx as [16]byte, its native form: a uuid.UUID would take
	// the slow driver.Valuer path (a string, parsed back, per value).
	ids := make([][16]byte, n)
	types := make([]string, n)
	schemas := make([]int32, n)
	corrs := make([][16]byte, n)
	causes := make([][16]byte, n)
	datas := make([]json.RawMessage, n)
	msgs := make([]outbox.Message, n)
	for i, e := range envs {
		versions[i], ids[i], types[i], schemas[i], corrs[i], causes[i], datas[i] = e.AggregateVersion, e.EventID, e.EventType, int32(e.SchemaVersion), e.CorrelationID, e.CausationID, e.Data
		value, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode envelope: %w", err)
		}
		headers := []outbox.Header{
			{Key: events.HeaderEventType, Value: []byte(e.EventType)},
			{Key: events.HeaderEventID, Value: []byte(e.EventID.String())},
		}
		if traceParents[i] != "" {
			headers = append(headers, outbox.Header{Key: events.HeaderTraceParent, Value: []byte(traceParents[i])})
		}
		msgs[i] = outbox.Message{Topic: topic, Key: e.AggregateID.String(), Value: value, Headers: headers}
	}

	// Every outbox row is built, and checked, before anything is queued:
	// a unit must never hold events without all of their outbox rows.
	type statement struct {
		sql  string
		args []any
	}
	rows := make([]statement, len(msgs))
	for i, m := range msgs {
		sql, args, err := outbox.Insert(m)
		if err != nil {
			return err
		}
		rows[i] = statement{sql, args}
	}

	conflict := &ConflictError{AggregateID: first.AggregateID, Expected: expected}
	u.queue(func(tag pgconn.CommandTag, err error) error {
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr) && (pgErr.Code == "23505" && pgErr.ConstraintName == "events_pkey" || pgErr.Code == "ES409"):
			return conflict
		case err != nil:
			return fmt.Errorf("append to %s: %w", first.AggregateID, err)
		case tag.RowsAffected() != int64(n):
			return fmt.Errorf("append to %s: %d of %d events inserted", first.AggregateID, tag.RowsAffected(), n)
		}
		return nil
	}, insertEvents, [16]byte(first.AggregateID), first.AggregateType, first.OccurredAt,
		versions, ids, types, schemas, corrs, causes, datas, expected)

	for _, row := range rows {
		u.queue(func(_ pgconn.CommandTag, err error) error {
			if err != nil {
				return fmt.Errorf("outbox row for %s: %w", first.AggregateID, err)
			}
			return nil
		}, row.sql, row.args...)
	}
	if snap != nil {
		last := envs[n-1]
		u.queue(func(_ pgconn.CommandTag, err error) error {
			if err != nil {
				return fmt.Errorf("snapshot of %s: %w", first.AggregateID, err)
			}
			return nil
		}, upsertSnapshot, [16]byte(last.AggregateID), last.AggregateType, snap.schema, last.AggregateVersion, last.OccurredAt, snap.state)
	}
	return nil
}

const selectStream = `
WITH snap AS (
    SELECT version, occurred_at, state FROM snapshots
    WHERE aggregate_id = $1 AND aggregate_type = $2 AND schema = $3 AND version <= $4
)
SELECT true, version, NULL::uuid, NULL::text, NULL::int, occurred_at, NULL::uuid, NULL::uuid, state
FROM snap
UNION ALL
SELECT false, version, event_id, event_type, schema_version, occurred_at, correlation_id, causation_id, data
FROM events
WHERE aggregate_id = $1 AND aggregate_type = $2
  AND version > COALESCE((SELECT version FROM snap), 0) AND version <= $4
ORDER BY 1 DESC, 2`

// streamRow is a row of selectStream: the snapshot (first, if any) or an
// event after it.
type streamRow struct {
	isSnapshot bool
	env        events.Envelope
}

// load reads the stream of id up to version upTo, starting from its
// snapshot when one at or below upTo exists with the given schema (pass
// schema "" to read every event).
func (s *Store) load(ctx context.Context, q Querier, aggType string, id uuid.UUID, schema string, upTo int64) ([]streamRow, error) {
	rows, err := q.Query(ctx, selectStream, [16]byte(id), aggType, schema, upTo)
	if err != nil {
		return nil, fmt.Errorf("load %s %s: %w", aggType, id, err)
	}
	return scanStream(rows, aggType, id)
}

const selectTail = `
SELECT false, version, event_id, event_type, schema_version, occurred_at, correlation_id, causation_id, data
FROM events
WHERE aggregate_id = $1 AND aggregate_type = $2 AND version > $3
ORDER BY version`

// loadStreams reads, in one round trip, the streams of ids: each whole
// (from a snapshot of the given schema) if after[i] is 0, else only its
// events past version after[i].
func (s *Store) loadStreams(ctx context.Context, q batchSender, aggType string, ids []uuid.UUID, after []int64, schema string) ([][]streamRow, error) {
	var b pgx.Batch
	for i, id := range ids {
		if after[i] > 0 {
			b.Queue(selectTail, [16]byte(id), aggType, after[i])
		} else {
			b.Queue(selectStream, [16]byte(id), aggType, schema, int64(math.MaxInt64))
		}
	}
	res := q.SendBatch(ctx, &b)
	defer res.Close()
	out := make([][]streamRow, len(ids))
	for i, id := range ids {
		rows, err := res.Query()
		if err != nil {
			return nil, fmt.Errorf("load %s %s: %w", aggType, id, err)
		}
		if out[i], err = scanStream(rows, aggType, id); err != nil {
			return nil, err
		}
	}
	return out, res.Close()
}

// scanStream reads the rows of selectStream.
func scanStream(rows pgx.Rows, aggType string, id uuid.UUID) ([]streamRow, error) {
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (streamRow, error) {
		var (
			r             streamRow
			eventID, corr *[16]byte
			causation     *[16]byte
			eventType     *string
			schemaVersion *int32
		)
		err := row.Scan(&r.isSnapshot, &r.env.AggregateVersion, &eventID, &eventType, &schemaVersion,
			&r.env.OccurredAt, &corr, &causation, &r.env.Data)
		if err != nil {
			return r, err
		}
		r.env.AggregateType, r.env.AggregateID = aggType, id
		if !r.isSnapshot {
			r.env.EventID, r.env.EventType, r.env.SchemaVersion = *eventID, *eventType, int(*schemaVersion)
			r.env.CorrelationID, r.env.CausationID = *corr, *causation
		}
		r.env.OccurredAt = r.env.OccurredAt.UTC()
		return r, nil
	})
	if err != nil {
		return nil, fmt.Errorf("load %s %s: %w", aggType, id, err)
	}
	return out, nil
}

const versionAsOf = `
SELECT COALESCE(max(version), 0) FROM events
WHERE aggregate_id = $1 AND aggregate_type = $2 AND occurred_at <= $3`

// versionAt is the version a stream had at time t (0 if it did not exist).
func (s *Store) versionAt(ctx context.Context, q Querier, aggType string, id uuid.UUID, t time.Time) (int64, error) {
	var v int64
	if err := q.QueryRow(ctx, versionAsOf, [16]byte(id), aggType, t).Scan(&v); err != nil {
		return 0, fmt.Errorf("version of %s %s at %s: %w", aggType, id, t, err)
	}
	return v, nil
}

// snapshotDue reports whether moving a stream from version from to to
// crosses a multiple of the snapshot interval.
func (s *Store) snapshotDue(from, to int64) bool {
	return s.snapshotEvery > 0 && to/s.snapshotEvery > from/s.snapshotEvery
}
