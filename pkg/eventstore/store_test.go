package eventstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsaga/eventsaga/internal/pgmigrate"
	"github.com/eventsaga/eventsaga/internal/testenv"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
	"github.com/eventsaga/eventsaga/pkg/outbox"
)

// Added is at schema v2; v1 stored the amount as "n".
type Added struct {
	Amount int `json:"amount"`
}

func (Added) EventType() string { return "Added" }

type Reset struct{}

func (Reset) EventType() string { return "Reset" }

// tally is the test aggregate: a running sum and the number of events.
type tally struct {
	Sum    int `json:"sum"`
	Events int `json:"events"`
}

func applyTally(s tally, e events.Event) tally {
	switch e := e.(type) {
	case Added:
		s.Sum += e.Amount
	case Reset:
		s.Sum = 0
	}
	s.Events++
	return s
}

func registry(t *testing.T) *events.Registry {
	t.Helper()
	r := events.NewRegistry()
	if err := events.Register[Added](r, 2); err != nil {
		t.Fatal(err)
	}
	if err := events.Register[Reset](r, 1); err != nil {
		t.Fatal(err)
	}
	err := r.AddUpcaster("Added", 1, func(d json.RawMessage) (json.RawMessage, error) {
		var v1 struct {
			N int `json:"n"`
		}
		if err := json.Unmarshal(d, &v1); err != nil {
			return nil, err
		}
		return json.Marshal(Added{Amount: v1.N})
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

type fixture struct {
	pool  *pgxpool.Pool
	store *eventstore.Store
	repo  *eventstore.Repository[tally]
}

func setup(t *testing.T, cfg eventstore.Config) fixture {
	t.Helper()
	pool := testenv.Postgres(t, eventstore.Migration(), outbox.Migration())
	cfg.Pool, cfg.Registry = pool, registry(t)
	store, err := eventstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := eventstore.NewRepository(store, eventstore.RepositoryConfig[tally]{
		AggregateType: "tally", Topic: "tallies.events", Apply: applyTally, SnapshotSchema: "tally/v1",
	})
	if err != nil {
		t.Fatal(err)
	}
	return fixture{pool, store, repo}
}

// add appends amounts to stream id as a command does: load, stage,
// commit in one round trip.
func (f fixture) add(t *testing.T, id uuid.UUID, amounts ...int) eventstore.Aggregate[tally] {
	t.Helper()
	ctx := context.Background()
	agg, err := f.repo.Load(ctx, f.pool, id)
	if errors.Is(err, eventstore.ErrNotFound) {
		agg, err = f.repo.New(id), nil
	}
	if err != nil {
		t.Fatal(err)
	}
	evs := make([]events.Event, len(amounts))
	for i, a := range amounts {
		evs[i] = Added{Amount: a}
	}
	var u eventstore.UnitOfWork
	if _, err := f.repo.Stage(&u, &agg, eventstore.Meta{}, evs...); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Commit(ctx, &u); err != nil {
		t.Fatal(err)
	}
	return agg
}

func TestAppendAndLoad(t *testing.T) {
	f := setup(t, eventstore.Config{})
	ctx := context.Background()
	id := uuid.New()
	f.add(t, id, 1, 2)
	f.add(t, id, 3)

	agg, err := f.repo.Load(ctx, f.pool, id)
	if err != nil {
		t.Fatal(err)
	}
	if agg.Version != 3 || agg.State != (tally{Sum: 6, Events: 3}) {
		t.Errorf("loaded %+v", agg)
	}
	envs, err := f.repo.Events(ctx, f.pool, id)
	if err != nil || len(envs) != 3 {
		t.Fatalf("events: %d, %v", len(envs), err)
	}
	for i, e := range envs {
		if e.AggregateVersion != int64(i+1) || e.AggregateID != id || e.CorrelationID != id || e.CausationID != e.EventID || e.SchemaVersion != 2 {
			t.Errorf("event %d: %+v", i, e)
		}
		if i > 0 && e.OccurredAt.Before(envs[i-1].OccurredAt) {
			t.Errorf("event %d occurred at %v, before %v", i, e.OccurredAt, envs[i-1].OccurredAt)
		}
	}

	// Another aggregate type with the same ID is not this stream.
	other, _ := eventstore.NewRepository(f.store, eventstore.RepositoryConfig[tally]{AggregateType: "other", Topic: "x", Apply: applyTally})
	if _, err := other.Load(ctx, f.pool, id); !errors.Is(err, eventstore.ErrNotFound) {
		t.Errorf("load as another type: %v", err)
	}
	if _, err := f.repo.Load(ctx, f.pool, uuid.New()); !errors.Is(err, eventstore.ErrNotFound) {
		t.Errorf("load unknown: %v", err)
	}
}

// The two ways production writes a unit of work: a command commits it on its
// own (Store.Commit); a consumer sends it within the transaction in which it
// records the delivery (UnitOfWork.Send, as DecideAll does), and commits that.
var writePaths = []struct {
	name  string
	write func(ctx context.Context, f fixture, u *eventstore.UnitOfWork) error
}{
	{"commit", func(ctx context.Context, f fixture, u *eventstore.UnitOfWork) error {
		return f.store.Commit(ctx, u)
	}},
	{"send in a transaction", func(ctx context.Context, f fixture, u *eventstore.UnitOfWork) error {
		return pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error { return u.Send(ctx, tx) })
	}},
}

// Events and their outbox rows commit together, whichever way the unit is
// written: one message per event, keyed by aggregate, carrying the envelope;
// a unit sent in a transaction that rolls back leaves nothing.
func TestAppendWritesOutboxInSameTransaction(t *testing.T) {
	trace := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, wp := range writePaths {
		t.Run(wp.name, func(t *testing.T) {
			f := setup(t, eventstore.Config{})
			ctx := context.Background()
			id := uuid.New()
			agg := f.repo.New(id)
			var u eventstore.UnitOfWork
			if _, err := f.repo.Stage(&u, &agg, eventstore.Meta{TraceParent: trace}, Added{Amount: 5}, Reset{}); err != nil {
				t.Fatal(err)
			}
			if err := wp.write(ctx, f, &u); err != nil {
				t.Fatal(err)
			}
			rows, _ := f.pool.Query(ctx, `SELECT topic, key, value, header_keys, header_values FROM outbox ORDER BY id`)
			type row struct {
				Topic, Key string
				Value      []byte
				HK         []string
				HV         [][]byte
			}
			got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 {
				t.Fatalf("%d outbox rows, want 2", len(got))
			}
			for i, r := range got {
				env, err := events.ParseEnvelope(r.Value)
				if err != nil {
					t.Fatal(err)
				}
				if r.Topic != "tallies.events" || r.Key != id.String() || env.AggregateVersion != int64(i+1) {
					t.Errorf("row %d: %s %s v%d", i, r.Topic, r.Key, env.AggregateVersion)
				}
				hs := map[string]string{}
				for j := range r.HK {
					hs[r.HK[j]] = string(r.HV[j])
				}
				if hs["event_type"] != env.EventType || hs["event_id"] != env.EventID.String() || hs["traceparent"] != trace {
					t.Errorf("row %d headers %v", i, hs)
				}
			}
		})
	}

	t.Run("rolled back", func(t *testing.T) {
		f := setup(t, eventstore.Config{})
		ctx := context.Background()
		rolledBack := uuid.New()
		errBoom := errors.New("boom")
		err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
			agg := f.repo.New(rolledBack)
			var u eventstore.UnitOfWork
			if _, err := f.repo.Stage(&u, &agg, eventstore.Meta{}, Added{Amount: 1}); err != nil {
				return err
			}
			if err := u.Send(ctx, tx); err != nil {
				return err
			}
			return errBoom // the handler fails after the unit was sent
		})
		if !errors.Is(err, errBoom) {
			t.Fatal(err)
		}
		var n int
		_ = f.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events WHERE aggregate_id = $1) + (SELECT count(*) FROM outbox WHERE key = $2)`, rolledBack, rolledBack.String()).Scan(&n)
		if n != 0 {
			t.Errorf("rolled-back append left %d rows", n)
		}
	})
}

// Writers that all read version 1 append version 2 at once, half as commands
// (Commit, grouped with one another) and half as consumers (Send in their own
// transactions): exactly one wins, and every other gets a conflict.
func TestConcurrentAppendsAtSameVersionExactlyOneWins(t *testing.T) {
	f := setup(t, eventstore.Config{})
	ctx := context.Background()
	id := uuid.New()
	f.add(t, id, 1)

	const writers = 16
	start := make(chan struct{})
	results := make(chan error, writers)
	var loaded sync.WaitGroup
	loaded.Add(writers)
	// appendAfterStart loads the stream with q, waits until every writer
	// has read version 1, and stages the append into u.
	appendAfterStart := func(q eventstore.Querier, u *eventstore.UnitOfWork, amount int) error {
		agg, err := f.repo.Load(ctx, q, id)
		loaded.Done()
		if err != nil {
			return err
		}
		<-start
		_, err = f.repo.Stage(u, &agg, eventstore.Meta{}, Added{Amount: amount})
		return err
	}
	for i := range writers {
		go func() {
			var u eventstore.UnitOfWork
			if i%2 == 0 { // a command: load, then commit
				if err := appendAfterStart(f.pool, &u, 100+i); err != nil {
					results <- err
					return
				}
				results <- f.store.Commit(ctx, &u)
				return
			}
			// a consumer: load and send within its transaction
			results <- pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
				if err := appendAfterStart(tx, &u, 100+i); err != nil {
					return err
				}
				return u.Send(ctx, tx)
			})
		}()
	}
	loaded.Wait()
	close(start)
	wins, conflicts := 0, 0
	for range writers {
		switch err := <-results; {
		case err == nil:
			wins++
		case errors.Is(err, eventstore.ErrConflict):
			var ce *eventstore.ConflictError
			if !errors.As(err, &ce) || ce.AggregateID != id || ce.Expected != 1 {
				t.Errorf("conflict error %v", err)
			}
			conflicts++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if wins != 1 || conflicts != writers-1 {
		t.Errorf("%d wins, %d conflicts; want 1 and %d", wins, conflicts, writers-1)
	}
	agg, err := f.repo.Load(ctx, f.pool, id)
	if err != nil || agg.Version != 2 {
		t.Errorf("after the race: %+v, %v", agg, err)
	}
}

func TestAppendBeyondCurrentVersionConflicts(t *testing.T) {
	f := setup(t, eventstore.Config{})
	ctx := context.Background()
	for _, wp := range writePaths {
		t.Run(wp.name, func(t *testing.T) {
			id := uuid.New()
			f.add(t, id, 1)
			agg := eventstore.Aggregate[tally]{ID: id, Version: 5}
			var u eventstore.UnitOfWork
			if _, err := f.repo.Stage(&u, &agg, eventstore.Meta{}, Added{Amount: 1}); err != nil {
				t.Fatal(err)
			}
			if err := wp.write(ctx, f, &u); !errors.Is(err, eventstore.ErrConflict) {
				t.Errorf("append at version 5 of a stream at 1: %v", err)
			}
			agg = f.repo.New(id) // version 0, but the stream exists
			u = eventstore.UnitOfWork{}
			if _, err := f.repo.Stage(&u, &agg, eventstore.Meta{}, Added{Amount: 1}); err != nil {
				t.Fatal(err)
			}
			if err := wp.write(ctx, f, &u); !errors.Is(err, eventstore.ErrConflict) {
				t.Errorf("create over an existing stream: %v", err)
			}
		})
	}
}

func TestRetryRedecidesAfterConflict(t *testing.T) {
	f := setup(t, eventstore.Config{})
	id := uuid.New()
	f.add(t, id, 1)
	attempts := 0
	err := eventstore.Retry(context.Background(), 3, func(ctx context.Context) error {
		attempts++
		agg, err := f.repo.Load(ctx, f.pool, id)
		if err != nil {
			return err
		}
		if attempts == 1 {
			f.add(t, id, 10) // another writer gets in first
		}
		var u eventstore.UnitOfWork
		if _, err := f.repo.Stage(&u, &agg, eventstore.Meta{}, Added{Amount: 100}); err != nil {
			return err
		}
		return f.store.Commit(ctx, &u)
	})
	if err != nil || attempts != 2 {
		t.Fatalf("Retry: %v after %d attempts", err, attempts)
	}
	agg, _ := f.repo.Load(context.Background(), f.pool, id)
	if agg.State.Sum != 111 || agg.Version != 3 {
		t.Errorf("state %+v", agg)
	}
}

// A unit commits all of its statements or none: when a statement after the
// append fails, neither the events nor their outbox rows remain, and the
// staged aggregate keeps its old version. The same holds when the append
// itself conflicts.
func TestUnitOfWorkIsAtomic(t *testing.T) {
	f := setup(t, eventstore.Config{})
	ctx := context.Background()
	if _, err := f.pool.Exec(ctx, `CREATE TABLE claims (key text PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, `INSERT INTO claims VALUES ('taken')`); err != nil {
		t.Fatal(err)
	}
	rowsFor := func(id uuid.UUID) int {
		var n int
		_ = f.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events WHERE aggregate_id = $1) + (SELECT count(*) FROM outbox WHERE key = $2)`, id, id.String()).Scan(&n)
		return n
	}

	fresh := f.repo.New(uuid.New())
	var u eventstore.UnitOfWork
	if _, err := f.repo.Stage(&u, &fresh, eventstore.Meta{}, Added{Amount: 1}); err != nil {
		t.Fatal(err)
	}
	u.Exec(`INSERT INTO claims VALUES ('taken')`)
	err := f.store.Commit(ctx, &u)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		t.Fatalf("commit with a failing statement: %v", err)
	}
	if n := rowsFor(fresh.ID); n != 0 || fresh.Version != 0 {
		t.Errorf("after the failed unit: %d rows, aggregate at version %d", n, fresh.Version)
	}

	// Staged against version 5 of a stream at version 1: a conflict, and the
	// claim queued after it is not committed either.
	id := uuid.New()
	f.add(t, id, 1)
	stale := eventstore.Aggregate[tally]{ID: id, Version: 5}
	u = eventstore.UnitOfWork{}
	if _, err := f.repo.Stage(&u, &stale, eventstore.Meta{}, Added{Amount: 1}); err != nil {
		t.Fatal(err)
	}
	u.Exec(`INSERT INTO claims VALUES ('free')`)
	if err := f.store.Commit(ctx, &u); !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("commit at a version the stream never had: %v", err)
	}
	var claims int
	_ = f.pool.QueryRow(ctx, `SELECT count(*) FROM claims`).Scan(&claims)
	if n := rowsFor(id); n != 2 || claims != 1 || stale.Version != 5 {
		t.Errorf("after the conflict: %d rows (want the first event and its outbox row), %d claims, version %d", n, claims, stale.Version)
	}
}

// A 10,000-event stream loads from its snapshot plus the tail, and the state
// equals a full replay.
func TestLongStreamLoadsFromSnapshotPlusTail(t *testing.T) {
	f := setup(t, eventstore.Config{SnapshotEvery: 1000})
	ctx := context.Background()
	id := uuid.New()
	const total, per = 10_050, 50
	for i := 0; i < total; i += per {
		amounts := make([]int, per)
		for j := range amounts {
			amounts[j] = (i+j)%7 + 1
		}
		f.add(t, id, amounts...)
	}

	var snapVersion int64
	if err := f.pool.QueryRow(ctx, `SELECT version FROM snapshots WHERE aggregate_id = $1`, id).Scan(&snapVersion); err != nil {
		t.Fatal(err)
	}
	if snapVersion != 10_000 {
		t.Fatalf("snapshot at version %d, want 10000", snapVersion)
	}

	loaded, err := f.repo.Load(ctx, f.pool, id)
	if err != nil {
		t.Fatal(err)
	}
	replayed, err := f.repo.Replay(ctx, f.pool, id)
	if err != nil {
		t.Fatal(err)
	}
	if loaded != replayed || loaded.Version != total || loaded.State.Events != total {
		t.Fatalf("snapshot+tail %+v != replay %+v", loaded, replayed)
	}

	// Prove Load read the snapshot rather than every event: mark the
	// snapshot, and the mark must show through while Replay ignores it.
	if _, err := f.pool.Exec(ctx, `UPDATE snapshots SET state = jsonb_set(state, '{sum}', '-1000000') WHERE aggregate_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	marked, _ := f.repo.Load(ctx, f.pool, id)
	tail := 0
	for i := 10_000; i < total; i++ {
		tail += i%7 + 1
	}
	if marked.State.Sum != -1_000_000+tail {
		t.Errorf("Load did not start from the snapshot: sum %d", marked.State.Sum)
	}
	if again, _ := f.repo.Replay(ctx, f.pool, id); again != replayed {
		t.Errorf("Replay changed: %+v", again)
	}
	// Loading many streams at once reads the snapshot too, and each stream
	// gets its own events.
	short, missing := f.add(t, uuid.New(), 5, 6), uuid.New()
	many, err := f.repo.LoadMany(ctx, f.pool, []uuid.UUID{short.ID, missing, id})
	if err != nil {
		t.Fatal(err)
	}
	if len(many) != 2 || many[id] != marked || many[short.ID] != short {
		t.Errorf("LoadMany = %+v; want %+v and %+v", many, marked, short)
	}

	// Below the snapshot, loading replays from the start.
	at5000, err := f.repo.LoadVersion(ctx, f.pool, id, 5000)
	if err != nil || at5000.Version != 5000 || at5000.State.Events != 5000 {
		t.Errorf("LoadVersion(5000) = %+v, %v", at5000, err)
	}
}

// A snapshot of another schema (the state type changed shape) is ignored.
func TestSnapshotOfOtherSchemaIgnored(t *testing.T) {
	f := setup(t, eventstore.Config{SnapshotEvery: 2})
	ctx := context.Background()
	id := uuid.New()
	f.add(t, id, 1, 2, 3)
	if _, err := f.pool.Exec(ctx, `UPDATE snapshots SET schema = 'tally/v0', state = '{"sum": 999}' WHERE aggregate_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	agg, err := f.repo.Load(ctx, f.pool, id)
	if err != nil || agg.State != (tally{Sum: 6, Events: 3}) {
		t.Errorf("load with a foreign snapshot: %+v, %v", agg, err)
	}
}

// An event stored at schema version 1 is read as version 2 through the
// upcaster; the stored row is left as it was.
func TestStoredV1EventIsUpcastOnRead(t *testing.T) {
	f := setup(t, eventstore.Config{})
	ctx := context.Background()
	id := uuid.New()
	_, err := f.pool.Exec(ctx, `
INSERT INTO events (aggregate_id, version, aggregate_type, event_id, event_type, schema_version, occurred_at, correlation_id, causation_id, data)
VALUES ($1, 1, 'tally', $2, 'Added', 1, now(), $1, $2, '{"n": 41}')`, id, uuid.New())
	if err != nil {
		t.Fatal(err)
	}
	f.add(t, id, 1) // a v2 event after it

	agg, err := f.repo.Load(ctx, f.pool, id)
	if err != nil {
		t.Fatal(err)
	}
	if agg.State.Sum != 42 || agg.Version != 2 {
		t.Errorf("state %+v", agg)
	}
	envs, _ := f.repo.Events(ctx, f.pool, id)
	if envs[0].SchemaVersion != 1 || string(envs[0].Data) != `{"n": 41}` {
		t.Errorf("stored event rewritten: v%d %s", envs[0].SchemaVersion, envs[0].Data)
	}
	ev, err := f.store.Registry().Decode(envs[0])
	if err != nil || ev != (Added{Amount: 41}) {
		t.Errorf("decode v1: %+v, %v", ev, err)
	}
}

func TestLoadAsOfTime(t *testing.T) {
	clock := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	f := setup(t, eventstore.Config{Now: func() time.Time { return clock }})
	ctx := context.Background()
	id := uuid.New()
	f.add(t, id, 1) // 12:00
	clock = clock.Add(time.Hour)
	f.add(t, id, 10) // 13:00
	clock = clock.Add(time.Hour)
	f.add(t, id, 100) // 14:00

	tests := []struct {
		at      time.Time
		version int64
		sum     int
	}{
		{clock.Add(-2*time.Hour - time.Second), 0, 0},
		{clock.Add(-2 * time.Hour), 1, 1},
		{clock.Add(-90 * time.Minute), 1, 1},
		{clock.Add(-time.Hour), 2, 11},
		{clock.Add(time.Hour), 3, 111},
	}
	for _, tt := range tests {
		agg, err := f.repo.LoadAsOf(ctx, f.pool, id, tt.at)
		if tt.version == 0 {
			if !errors.Is(err, eventstore.ErrNotFound) {
				t.Errorf("as of %v: %v, want not found", tt.at, err)
			}
			continue
		}
		if err != nil || agg.Version != tt.version || agg.State.Sum != tt.sum {
			t.Errorf("as of %v: %+v, %v; want v%d sum %d", tt.at, agg, err, tt.version, tt.sum)
		}
	}
	if _, err := f.repo.LoadVersion(ctx, f.pool, id, 4); !errors.Is(err, eventstore.ErrNotFound) {
		t.Errorf("LoadVersion past the end: %v", err)
	}

	// A writer whose clock is behind still moves time forward.
	clock = clock.Add(-10 * time.Hour)
	agg := f.add(t, id, 1000)
	if !agg.UpdatedAt.After(time.Date(2026, 1, 1, 14, 0, 0, 0, time.UTC)) {
		t.Errorf("occurred_at went backwards: %v", agg.UpdatedAt)
	}
}

// decideAdd is a decision that adds one more than the sum so far, so that
// each decision shows which state it was made on.
func decideAdd(id uuid.UUID, corr uuid.UUID) eventstore.Decision[tally] {
	return eventstore.Decision[tally]{
		ID: id, Meta: eventstore.Meta{CorrelationID: corr},
		Decide: func(s tally, _ int64) ([]events.Event, error) { return []events.Event{Added{Amount: s.Sum + 1}}, nil },
	}
}

func (f fixture) decide(t *testing.T, cache *eventstore.Cache[tally], commit bool, ds ...eventstore.Decision[tally]) error {
	t.Helper()
	ctx := context.Background()
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	committed, err := f.repo.DecideAll(ctx, tx, ds, cache)
	if err != nil {
		return err
	}
	if !commit {
		return nil
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	committed()
	return nil
}

// Decisions are made in order, each on the state the ones before it left,
// for aggregates that exist and that do not; each event keeps the metadata
// of its own decision.
func TestDecideAllInOrder(t *testing.T) {
	f := setup(t, eventstore.Config{})
	ctx := context.Background()
	a, b := uuid.New(), uuid.New()
	f.add(t, a, 10)
	c1, c2, c3 := uuid.New(), uuid.New(), uuid.New()
	if err := f.decide(t, nil, true, decideAdd(a, c1), decideAdd(b, c2), decideAdd(a, c3)); err != nil {
		t.Fatal(err)
	}
	aggA, _ := f.repo.Load(ctx, f.pool, a)
	aggB, _ := f.repo.Load(ctx, f.pool, b)
	// a: 10, then +11 (sum 21), then +22 (sum 43); b: +1.
	if aggA.State.Sum != 43 || aggA.Version != 3 || aggB.State.Sum != 1 || aggB.Version != 1 {
		t.Errorf("a %+v, b %+v", aggA, aggB)
	}
	envs, _ := f.repo.Events(ctx, f.pool, a)
	if envs[1].CorrelationID != c1 || envs[2].CorrelationID != c3 {
		t.Errorf("correlations %s, %s; want %s, %s", envs[1].CorrelationID, envs[2].CorrelationID, c1, c3)
	}
	many, err := f.repo.LoadMany(ctx, f.pool, []uuid.UUID{a, b, uuid.New()})
	if err != nil || len(many) != 2 || many[a] != aggA || many[b] != aggB {
		t.Errorf("LoadMany = %v, %v", many, err)
	}
}

// A cached state is only a starting point: events another writer appended
// are read and folded; a decision rolled back leaves the cache as it was.
func TestDecideAllCacheCannotMakeADecisionWrong(t *testing.T) {
	f := setup(t, eventstore.Config{})
	ctx := context.Background()
	cache := eventstore.NewCache[tally](10)
	a := uuid.New()
	f.add(t, a, 1)
	if err := f.decide(t, cache, true, decideAdd(a, uuid.Nil)); err != nil { // sum 1+2=3, cached at v2
		t.Fatal(err)
	}
	f.add(t, a, 100) // another writer: sum 103, v3, not in the cache
	if err := f.decide(t, cache, true, decideAdd(a, uuid.Nil)); err != nil {
		t.Fatal(err)
	}
	if agg, _ := f.repo.Load(ctx, f.pool, a); agg.State.Sum != 103+104 || agg.Version != 4 {
		t.Fatalf("after another writer: %+v", agg)
	}

	// Decided, then rolled back: the next decision is made on v4.
	if err := f.decide(t, cache, false, decideAdd(a, uuid.Nil)); err != nil {
		t.Fatal(err)
	}
	if err := f.decide(t, cache, true, decideAdd(a, uuid.Nil)); err != nil {
		t.Fatal(err)
	}
	agg, _ := f.repo.Load(ctx, f.pool, a)
	if want := 207 + 208; agg.State.Sum != want || agg.Version != 5 {
		t.Errorf("after the rollback: %+v, want sum %d at v5", agg, want)
	}
}

// Many commits at once go in groups; a unit that conflicts fails alone,
// and every other unit of its group commits.
func TestGroupCommitFailsOnlyTheFaultyUnit(t *testing.T) {
	f := setup(t, eventstore.Config{})
	ctx := context.Background()
	taken := make([]uuid.UUID, 10)
	for i := range taken {
		taken[i] = uuid.New()
		f.add(t, taken[i], 1)
	}
	const n = 100
	errs := make([]error, n)
	ids := make([]uuid.UUID, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		ids[i] = uuid.New()
		if i%10 == 0 {
			ids[i] = taken[i/10] // creating a stream that exists: a conflict
		}
		wg.Go(func() {
			<-start
			agg := f.repo.New(ids[i])
			var u eventstore.UnitOfWork
			if _, err := f.repo.Stage(&u, &agg, eventstore.Meta{}, Added{Amount: i}); err != nil {
				errs[i] = err
				return
			}
			errs[i] = f.store.Commit(ctx, &u)
			if errs[i] == nil && agg.Version != 1 {
				errs[i] = fmt.Errorf("aggregate at version %d after commit", agg.Version)
			}
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		switch {
		case i%10 == 0 && !errors.Is(err, eventstore.ErrConflict):
			t.Errorf("unit %d over an existing stream: %v, want a conflict", i, err)
		case i%10 != 0 && err != nil:
			t.Errorf("unit %d: %v", i, err)
		}
	}
	var streams int
	_ = f.pool.QueryRow(ctx, `SELECT count(DISTINCT aggregate_id) FROM events`).Scan(&streams)
	if streams != 10+90 {
		t.Errorf("%d streams, want 100 (10 taken before, 90 new)", streams)
	}
}

// A unit that appends to many streams writes them in one statement; when one
// of them has moved, the conflict names that stream, at the version the unit
// expected, and none of the unit's events is written.
func TestUnitOfManyStreamsNamesTheOneThatMoved(t *testing.T) {
	f := setup(t, eventstore.Config{})
	ctx := context.Background()
	eventRows := func() int {
		var n int
		_ = f.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM outbox)`).Scan(&n)
		return n
	}
	for _, tc := range []struct {
		name          string
		stored, stale int64 // the moved stream's version, and the one staged against
	}{
		{"overtaken", 3, 2},      // the next version exists: the primary key refuses it
		{"never there", 1, 4},    // the expected version does not exist: the guard refuses it
		{"exists already", 1, 0}, // created over an existing stream
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, c := f.add(t, uuid.New(), 1), uuid.New(), f.add(t, uuid.New(), 1, 2)
			amounts := make([]int, tc.stored)
			for i := range amounts {
				amounts[i] = i + 1
			}
			f.add(t, b, amounts...)
			before := eventRows()

			moved := eventstore.Aggregate[tally]{ID: b, Version: tc.stale}
			fresh := f.repo.New(uuid.New())
			var u eventstore.UnitOfWork
			for _, agg := range []*eventstore.Aggregate[tally]{&a, &fresh, &moved, &c} {
				if _, err := f.repo.Stage(&u, agg, eventstore.Meta{}, Added{Amount: 10}, Added{Amount: 20}); err != nil {
					t.Fatal(err)
				}
			}
			err := f.store.Commit(ctx, &u)
			var ce *eventstore.ConflictError
			if !errors.As(err, &ce) || ce.AggregateID != b || ce.Expected != tc.stale {
				t.Fatalf("commit: %v; want a conflict on %s at %d", err, b, tc.stale)
			}
			if after := eventRows(); after != before {
				t.Errorf("%d event and outbox rows written by a failed unit", after-before)
			}
			if a.Version != 1 || c.Version != 2 || fresh.Version != 0 || moved.Version != tc.stale {
				t.Errorf("aggregates moved by a failed unit: %d %d %d %d", a.Version, c.Version, fresh.Version, moved.Version)
			}
		})
	}
}

// An event too large to publish is refused when it is staged, with the
// events staged beside it: a unit never holds events without all of their
// outbox rows, and committing it writes nothing.
func TestStageRefusesEventTooLargeToPublish(t *testing.T) {
	f := setup(t, eventstore.Config{})
	ctx := context.Background()
	agg := f.repo.New(uuid.New())
	var u eventstore.UnitOfWork
	huge := eventstore.Meta{TraceParent: strings.Repeat("0", outbox.MaxMessageBytes)} // carried as a record header
	ps := []eventstore.Pending{{Event: Added{Amount: 1}}, {Meta: huge, Event: Added{Amount: 2}}}
	if _, err := f.repo.StageAll(&u, &agg, ps); !errors.Is(err, outbox.ErrMessageTooLarge) {
		t.Fatalf("staging an event too large to publish: %v", err)
	}
	if err := f.store.Commit(ctx, &u); err != nil {
		t.Fatal(err)
	}
	var n int
	_ = f.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM outbox)`).Scan(&n)
	if n != 0 || agg.Version != 0 {
		t.Errorf("after the refusal: %d rows, aggregate at version %d", n, agg.Version)
	}
}

// A database migrated before 004 had eventstore_expect_version, which
// nothing calls any more; migrating it drops the function and keeps the one
// appends use. A new database never has it.
func TestMigrationDropsUnusedExpectVersion(t *testing.T) {
	ctx := context.Background()
	m := eventstore.Migration()
	exists := func(pool *pgxpool.Pool, fn string) bool {
		t.Helper()
		var ok bool
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = $1)`, fn).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}

	old := fstest.MapFS{}
	for _, name := range []string{"001_events.sql", "002_expect_version.sql", "003_expect_versions.sql"} {
		b, err := fs.ReadFile(m.FS, path.Join(m.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		old[path.Join(m.Dir, name)] = &fstest.MapFile{Data: b}
	}
	pool := testenv.Postgres(t)
	if err := pgmigrate.Apply(ctx, pool, pgmigrate.Migration{VersionTable: m.VersionTable, FS: old, Dir: m.Dir}); err != nil {
		t.Fatal(err)
	}
	if !exists(pool, "eventstore_expect_version") {
		t.Fatal("migrations 001-003 did not create eventstore_expect_version")
	}
	if err := pgmigrate.Apply(ctx, pool, m); err != nil {
		t.Fatal(err)
	}
	if exists(pool, "eventstore_expect_version") || !exists(pool, "eventstore_expect_versions") {
		t.Errorf("after migrating: eventstore_expect_version %v, eventstore_expect_versions %v; want false, true",
			exists(pool, "eventstore_expect_version"), exists(pool, "eventstore_expect_versions"))
	}

	if fresh := setup(t, eventstore.Config{}).pool; exists(fresh, "eventstore_expect_version") {
		t.Error("a new database has eventstore_expect_version")
	}
}

// TestGuardKeepsOnePlanThatProbesTheKey: the append guard's query is
// planned once per session, not once per call (planned per call, the guard
// cost three times the insert it guards), and the plan it keeps probes the
// primary key even when made on a nearly empty table, as a new service's
// is: a plan kept as the table grows must not scan it.
func TestGuardKeepsOnePlanThatProbesTheKey(t *testing.T) {
	ctx := context.Background()
	f := setup(t, eventstore.Config{})
	id := uuid.New()
	f.add(t, id, 1)

	var config []string
	if err := f.pool.QueryRow(ctx,
		`SELECT coalesce(proconfig, '{}') FROM pg_proc WHERE proname = 'eventstore_expect_versions'`).Scan(&config); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(config, "plan_cache_mode=force_generic_plan") {
		t.Errorf("eventstore_expect_versions has settings %q; want plan_cache_mode=force_generic_plan", config)
	}

	// auto_explain sends the plans of the function's statements to the
	// client as LOG messages.
	cfg := f.pool.Config().ConnConfig.Copy()
	var plans testenv.Buffer
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { fmt.Fprintln(&plans, n.Message) }
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, sql := range []string{"LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
		"SET auto_explain.log_nested_statements = on", "SET client_min_messages = log"} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	for range 3 {
		if _, err := conn.Exec(ctx, `SELECT eventstore_expect_versions($1, $2)`, []uuid.UUID{id}, []int64{1}); err != nil {
			t.Fatal(err)
		}
	}
	got := plans.String()
	if !strings.Contains(got, "using events_pkey on events") || strings.Contains(got, "Seq Scan on events") {
		t.Errorf("the guard's plan does not probe the primary key:\n%s", got)
	}
}

// decideAtLeast is an idempotent decision, as a credit reservation is: it
// raises the sum to at least n, and decides nothing when it is there.
func decideAtLeast(id uuid.UUID, n int) eventstore.Decision[tally] {
	return eventstore.Decision[tally]{
		ID: id,
		Decide: func(s tally, _ int64) ([]events.Event, error) {
			if s.Sum >= n {
				return nil, nil
			}
			return []events.Event{Added{Amount: n - s.Sum}}, nil
		},
	}
}

// decideCommitFails decides within a transaction whose COMMIT then fails
// after every statement succeeded: its backend is terminated in between, as
// a failover or a reset connection would.
func (f fixture) decideCommitFails(t *testing.T, cache *eventstore.Cache[tally], ds ...eventstore.Decision[tally]) {
	t.Helper()
	ctx := context.Background()
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var pid int
	if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := f.repo.DecideAll(ctx, tx, ds, cache); err != nil { // committed is not run: COMMIT fails
		t.Fatal(err)
	}
	var gone bool
	if err := f.pool.QueryRow(ctx, "SELECT pg_terminate_backend($1, 10000)", pid).Scan(&gone); err != nil || !gone {
		t.Fatalf("terminate backend %d: %v, %v", pid, gone, err)
	}
	if err := tx.Commit(ctx); err == nil {
		t.Fatal("COMMIT on a terminated backend succeeded")
	}
}

// No cache holds a state that did not commit. A consumer whose COMMIT
// fails is given the same event again; deciding it on the uncommitted state
// would decide nothing (the reservation is "already there") and the saga
// would never go on; or, once another writer has taken the uncommitted
// version number, it would pass the version guard on a state that never was.
func TestDecideAllCachesOnlyWhatCommitted(t *testing.T) {
	ctx := context.Background()
	f := setup(t, eventstore.Config{})

	t.Run("redelivered after a failed COMMIT", func(t *testing.T) {
		cache := eventstore.NewCache[tally](10)
		a := uuid.New()
		f.add(t, a, 1)
		f.decideCommitFails(t, cache, decideAtLeast(a, 10))
		if err := f.decide(t, cache, true, decideAtLeast(a, 10)); err != nil {
			t.Fatal(err)
		}
		if agg, _ := f.repo.Load(ctx, f.pool, a); agg.State.Sum != 10 || agg.Version != 2 {
			t.Errorf("after the redelivery: sum %d at v%d, want 10 at v2", agg.State.Sum, agg.Version)
		}
	})

	t.Run("version taken by another writer", func(t *testing.T) {
		cache := eventstore.NewCache[tally](10)
		a := uuid.New()
		f.add(t, a, 1)
		f.decideCommitFails(t, cache, decideAdd(a, uuid.Nil)) // would be sum 3 at v2
		f.add(t, a, 100)                                      // sum 101 at v2, committed
		if err := f.decide(t, cache, true, decideAdd(a, uuid.Nil)); err != nil {
			t.Fatal(err)
		}
		if agg, _ := f.repo.Load(ctx, f.pool, a); agg.State.Sum != 101+102 || agg.Version != 3 {
			t.Errorf("sum %d at v%d, want %d at v3", agg.State.Sum, agg.Version, 101+102)
		}
	})
}

// Two transactions deciding on the same aggregate take turns: the second
// waits for the first to end, then decides on what it committed. Without
// DecideAll's lock the second would decide on the version both loaded and
// lose at the version guard, and a consumer would redo its whole batch.
func TestDecideAllTakesTurnsOnAnAggregate(t *testing.T) {
	ctx := context.Background()
	f := setup(t, eventstore.Config{})
	a, b := uuid.New(), uuid.New()
	f.add(t, a, 1)

	first, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Rollback(ctx)
	if _, err := f.repo.DecideAll(ctx, first, []eventstore.Decision[tally]{decideAdd(a, uuid.Nil)}, nil); err != nil { // sum 3 at v2
		t.Fatal(err)
	}

	second, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := second.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		second.Rollback(ctx)
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var wg sync.WaitGroup
	defer func() { // however the test ends: the second transaction is done with before it is rolled back
		first.Rollback(ctx)
		wg.Wait()
		second.Rollback(ctx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		// b is not in the first transaction: it must not be what waits.
		ds := []eventstore.Decision[tally]{decideAdd(b, uuid.Nil), decideAdd(a, uuid.Nil)}
		if _, err := f.repo.DecideAll(ctx, second, ds, nil); err != nil {
			done <- err
			return
		}
		done <- second.Commit(ctx)
	}()

	// The second transaction waits on a lock before the first commits.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting bool
		err := f.pool.QueryRow(ctx, "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the second transaction did not wait for the first: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the second transaction never waited")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the second transaction, after the first committed: %v", err)
	}
	if agg, _ := f.repo.Load(ctx, f.pool, a); agg.State.Sum != 3+4 || agg.Version != 3 {
		t.Errorf("sum %d at v%d, want 7 at v3", agg.State.Sum, agg.Version)
	}
}
