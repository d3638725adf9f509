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
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsaga/eventsaga/internal/pgmigrate"
	"github.com/eventsaga/eventsaga/internal/tracing"
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
	// Notifier, if set, is told after each Commit so that the relay
	// publishes at once.
	Notifier *outbox.Notifier
	// SnapshotEvery: a snapshot is written each time a stream's version
	// crosses a multiple of it. 100 if zero; negative turns snapshots off.
	SnapshotEvery int
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// CommitTimeout bounds how long a group of commits waits for the
	// database before its callers get an error; DefaultCommitTimeout if
	// zero.
	CommitTimeout time.Duration
	// TracerProvider, if not nil, traces the groups of commits: a unit
	// committed alone is sent within its caller's span; a group that
	// carries many has a span of its own linked to theirs.
	TracerProvider trace.TracerProvider
}

// Store is the event store of one service database.
type Store struct {
	pool          *pgxpool.Pool
	reg           *events.Registry
	notifier      *outbox.Notifier
	snapshotEvery int64
	now           func() time.Time
	commitTimeout time.Duration
	group         groupCommit
	tracer        trace.Tracer // nil with tracing off
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
	if cfg.CommitTimeout <= 0 {
		cfg.CommitTimeout = DefaultCommitTimeout
	}
	s := &Store{pool: cfg.Pool, reg: cfg.Registry, notifier: cfg.Notifier, snapshotEvery: int64(cfg.SnapshotEvery), now: cfg.Now, commitTimeout: cfg.CommitTimeout}
	if cfg.TracerProvider != nil {
		s.tracer = tracing.Tracer(cfg.TracerProvider)
	}
	return s, nil
}

// Registry is the store's event registry.
func (s *Store) Registry() *events.Registry { return s.reg }

// Meta is why events are appended: the saga they belong to and what caused
// them. Zero IDs default to the aggregate's ID (correlation) and the
// event's own ID (causation), as for a command that starts a saga.
type Meta struct {
	CorrelationID uuid.UUID
	CausationID   uuid.UUID
	// TraceParent is the W3C trace context to carry on the records, if any.
	TraceParent string
}

// insertEvents writes the events of any number of streams. The guard in its
// WHERE runs once, before any row is written, for the streams that must
// already exist; the primary key catches two writers of the same version.
const insertEvents = `
INSERT INTO events (aggregate_id, version, aggregate_type, event_id, event_type,
                    schema_version, occurred_at, correlation_id, causation_id, data)
SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::uuid[], $5::text[],
                     $6::int[], $7::timestamptz[], $8::uuid[], $9::uuid[], $10::jsonb[])`

const expectVersions = `
WHERE (SELECT eventstore_expect_versions($11::uuid[], $12::bigint[]))`

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

// stage adds to u the append of envs (versions expected+1...) to their
// stream, with their outbox messages and an optional snapshot;
// traceParents[i], if not empty, is carried on envs[i]'s record.
func (s *Store) stage(u *UnitOfWork, topic string, expected int64, envs []events.Envelope, snap *snapshot, traceParents []string) error {
	msgs := make([]outbox.Message, len(envs))
	for i, e := range envs {
		value, err := e.MarshalJSON() // json.Marshal(e) would compact its output again
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
		// Refused now, not when the unit is sent: a unit must never hold
		// events without all of their outbox rows.
		if err := outbox.Check(msgs[i]); err != nil {
			return err
		}
	}
	u.appends = append(u.appends, &staged{expected: expected, envs: envs, msgs: msgs, snap: snap})
	return nil
}

// statements are what the unit sends: its appends as one insert of events,
// one of outbox rows and one per snapshot, then its other statements.
func (u *UnitOfWork) statements() ([]statement, error) {
	if len(u.appends) == 0 {
		return u.stmts, nil
	}
	var n int
	for _, a := range u.appends {
		n += len(a.envs)
	}
	// UUIDs go to pgx as [16]byte, its native form: a uuid.UUID would take
	// the slow driver.Valuer path (a string, parsed back, per value).
	aggIDs, versions, aggTypes := make([][16]byte, 0, n), make([]int64, 0, n), make([]string, 0, n)
	ids, types, schemas := make([][16]byte, 0, n), make([]string, 0, n), make([]int32, 0, n)
	times, corrs, causes := make([]time.Time, 0, n), make([][16]byte, 0, n), make([][16]byte, 0, n)
	datas, msgs := make([]json.RawMessage, 0, n), make([]outbox.Message, 0, n)
	var streams [][16]byte // those that must exist, at...
	var expected []int64   // ...these versions
	var snaps []statement
	for _, a := range u.appends {
		for _, e := range a.envs {
			aggIDs, versions, aggTypes = append(aggIDs, e.AggregateID), append(versions, e.AggregateVersion), append(aggTypes, e.AggregateType)
			ids, types, schemas = append(ids, e.EventID), append(types, e.EventType), append(schemas, int32(e.SchemaVersion))
			times, corrs, causes = append(times, e.OccurredAt), append(corrs, e.CorrelationID), append(causes, e.CausationID)
			datas = append(datas, e.Data)
		}
		msgs = append(msgs, a.msgs...)
		if a.expected > 0 {
			streams, expected = append(streams, a.envs[0].AggregateID), append(expected, a.expected)
		}
		if a.snap != nil {
			last := a.envs[len(a.envs)-1]
			snaps = append(snaps, statement{upsertSnapshot,
				[]any{[16]byte(last.AggregateID), last.AggregateType, a.snap.schema, last.AggregateVersion, last.OccurredAt, a.snap.state},
				func(_ pgconn.CommandTag, err error) error {
					if err != nil {
						return fmt.Errorf("snapshot of %s: %w", last.AggregateID, err)
					}
					return nil
				}})
		}
	}
	sql, args := insertEvents, []any{aggIDs, versions, aggTypes, ids, types, schemas, times, corrs, causes, datas}
	if len(streams) > 0 {
		sql, args = sql+expectVersions, append(args, streams, expected)
	}
	out := []statement{{sql, args, func(tag pgconn.CommandTag, err error) error {
		if err != nil {
			return u.appendError(err)
		}
		if tag.RowsAffected() != int64(n) {
			return fmt.Errorf("append: %d of %d events inserted", tag.RowsAffected(), n)
		}
		return nil
	}}}
	sql, args, err := outbox.Insert(msgs...)
	if err != nil {
		return nil, err
	}
	out = append(out, statement{sql, args, func(_ pgconn.CommandTag, err error) error {
		if err != nil {
			return fmt.Errorf("outbox rows: %w", err)
		}
		return nil
	}})
	out = append(out, snaps...)
	return append(out, u.stmts...), nil
}

// appendError turns a failed insert of the unit's events into a
// ConflictError naming the stream that had moved, when that is what it is.
func (u *UnitOfWork) appendError(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return fmt.Errorf("append: %w", err)
	}
	var detail string
	switch {
	case pgErr.Code == "ES409":
		detail = pgErr.Detail // the stream's ID
	case pgErr.Code == "23505" && pgErr.ConstraintName == "events_pkey":
		// "Key (aggregate_id, version)=(<id>, <version>) already exists."
		if _, rest, ok := strings.Cut(pgErr.Detail, "=("); ok {
			detail, _, _ = strings.Cut(rest, ",")
		}
	default:
		return fmt.Errorf("append: %w", err)
	}
	conflict := &ConflictError{AggregateID: u.appends[0].envs[0].AggregateID, Expected: u.appends[0].expected}
	if id, perr := uuid.Parse(detail); perr == nil {
		for _, a := range u.appends {
			if a.envs[0].AggregateID == id {
				conflict = &ConflictError{AggregateID: id, Expected: a.expected}
				break
			}
		}
	}
	return conflict
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

// selectStreams reads many streams in one statement: for each (by its
// ordinal n), the snapshot of the given schema if it is to be read whole
// (after = 0), then its events past the snapshot or past after.
const selectStreams = `
WITH want AS (
    SELECT w.n, w.id, w.after, s.version AS snap_version, s.occurred_at AS snap_at, s.state AS snap_state
    FROM unnest($1::uuid[], $2::bigint[]) WITH ORDINALITY AS w(id, after, n)
    LEFT JOIN snapshots s
           ON w.after = 0 AND s.aggregate_id = w.id AND s.aggregate_type = $3 AND s.schema = $4
)
SELECT n, true, snap_version, NULL::uuid, NULL::text, NULL::int, snap_at, NULL::uuid, NULL::uuid, snap_state
FROM want WHERE snap_version IS NOT NULL
UNION ALL
SELECT want.n, false, e.version, e.event_id, e.event_type, e.schema_version, e.occurred_at, e.correlation_id, e.causation_id, e.data
FROM want CROSS JOIN LATERAL (
    SELECT * FROM events e
    WHERE e.aggregate_id = want.id AND e.aggregate_type = $3
      AND e.version > greatest(want.after, COALESCE(want.snap_version, 0))
    OFFSET 0 -- keeps this a lookup per stream: never a join over all events
) e
ORDER BY 1, 2 DESC, 3`

// loadStreams reads, in one statement, the streams of ids: each whole
// (from a snapshot of the given schema) if after[i] is 0, else only its
// events past version after[i].
func (s *Store) loadStreams(ctx context.Context, q Querier, aggType string, ids []uuid.UUID, after []int64, schema string) ([][]streamRow, error) {
	rows, err := q.Query(ctx, selectStreams, streamKeys(ids), after, aggType, schema)
	if err != nil {
		return nil, fmt.Errorf("load %d %s streams: %w", len(ids), aggType, err)
	}
	return scanStreams(rows, aggType, ids)
}

// lockStreams takes a transaction-level advisory lock per stream, in the
// order of $2: two transactions that lock overlapping sets in the same
// (sorted) order wait for each other and never deadlock.
const lockStreams = `SELECT count(pg_advisory_xact_lock($1::int4, k)) FROM unnest($2::int4[]) AS k`

// queueLockAndLoad queues into b the locking of the streams of ids for the
// rest of the transaction and, after it, their load (as loadStreams), and
// returns the function that reads both results once b is sent. The load is
// a statement of its own, so that under READ COMMITTED it sees what a
// writer that held a lock before us committed: a lock taken within the
// reading statement would not.
func queueLockAndLoad(b *pgx.Batch, aggType string, ids []uuid.UUID, after []int64, schema string) func(pgx.BatchResults) ([][]streamRow, error) {
	typeKey, idKeys := streamLockKeys(aggType, ids)
	b.Queue(lockStreams, typeKey, idKeys)
	b.Queue(selectStreams, streamKeys(ids), after, aggType, schema)
	return func(br pgx.BatchResults) ([][]streamRow, error) {
		if _, err := br.Exec(); err != nil {
			return nil, fmt.Errorf("lock %d %s streams: %w", len(ids), aggType, err)
		}
		rows, err := br.Query()
		if err != nil {
			return nil, fmt.Errorf("load %d %s streams: %w", len(ids), aggType, err)
		}
		return scanStreams(rows, aggType, ids)
	}
}

// streamLockKeys returns the advisory lock keys of the streams ids of one
// type: the type's key, and the streams' keys sorted and without repeats.
// Two streams may share a key (32 bits of a UUID); that only makes their
// writers take turns.
func streamLockKeys(aggType string, ids []uuid.UUID) (int32, []int32) {
	h := fnv.New32a()
	h.Write([]byte(aggType))
	keys := make([]int32, len(ids))
	for i, id := range ids {
		keys[i] = int32(binary.BigEndian.Uint32(id[12:])) // the random end of a UUIDv4 or v7
	}
	slices.Sort(keys)
	return int32(h.Sum32()), slices.Compact(keys)
}

func streamKeys(ids []uuid.UUID) [][16]byte {
	keys := make([][16]byte, len(ids))
	for i, id := range ids {
		keys[i] = id
	}
	return keys
}

// scanStreams reads the rows of selectStreams into the streams of ids.
func scanStreams(rows pgx.Rows, aggType string, ids []uuid.UUID) ([][]streamRow, error) {
	out := make([][]streamRow, len(ids))
	var (
		n                     int64
		r                     streamRow
		eventID, corr, causes *[16]byte
		eventType             *string
		schemaVersion         *int32
	)
	_, err := pgx.ForEachRow(rows, []any{&n, &r.isSnapshot, &r.env.AggregateVersion, &eventID, &eventType, &schemaVersion,
		&r.env.OccurredAt, &corr, &causes, &r.env.Data}, func() error {
		i := n - 1
		if i < 0 || i >= int64(len(ids)) {
			return fmt.Errorf("stream ordinal %d of %d", n, len(ids))
		}
		row := r
		row.env.AggregateType, row.env.AggregateID = aggType, ids[i]
		if !row.isSnapshot {
			row.env.EventID, row.env.EventType, row.env.SchemaVersion = *eventID, *eventType, int(*schemaVersion)
			row.env.CorrelationID, row.env.CausationID = *corr, *causes
		}
		row.env.OccurredAt = row.env.OccurredAt.UTC()
		row.env.Data = append(json.RawMessage(nil), r.env.Data...) // the row's buffer is reused
		out[i] = append(out[i], row)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load %d %s streams: %w", len(ids), aggType, err)
	}
	return out, nil
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
