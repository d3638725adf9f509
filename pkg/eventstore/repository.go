package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eventsaga/eventsaga/pkg/events"
)

// Aggregate is an aggregate's state as of Version, the number of events
// applied to it. Version 0 is an aggregate that does not exist yet.
type Aggregate[S any] struct {
	ID      uuid.UUID
	Version int64
	State   S
	// UpdatedAt is when the last applied event occurred.
	UpdatedAt time.Time
}

// RepositoryConfig describes one aggregate type.
type RepositoryConfig[S any] struct {
	// AggregateType names the aggregate in envelopes ("order").
	AggregateType string
	// Topic is where its events are published ("orders.events").
	Topic string
	// Apply returns the state after e. It must be a pure function of its
	// arguments that leaves state as it was (copy a map before changing it):
	// it runs on every load, and on staged events that may never commit.
	Apply func(state S, e events.Event) S
	// SnapshotSchema names the JSON shape of S in snapshots. Change it
	// whenever S changes shape; snapshots of another schema are ignored and
	// replaced as streams grow. Empty turns snapshots off for this type.
	SnapshotSchema string
}

// Repository loads and appends the aggregates of one type.
type Repository[S any] struct {
	store *Store
	cfg   RepositoryConfig[S]
}

// NewRepository returns the repository of one aggregate type.
func NewRepository[S any](s *Store, cfg RepositoryConfig[S]) (*Repository[S], error) {
	if cfg.AggregateType == "" || cfg.Topic == "" || cfg.Apply == nil {
		return nil, errors.New("eventstore: repository needs an aggregate type, a topic and Apply")
	}
	return &Repository[S]{store: s, cfg: cfg}, nil
}

// New returns the empty aggregate id, to append its first events to.
func (r *Repository[S]) New(id uuid.UUID) Aggregate[S] {
	return Aggregate[S]{ID: id}
}

// Load returns the aggregate's current state. ErrNotFound if it has no
// events.
func (r *Repository[S]) Load(ctx context.Context, q Querier, id uuid.UUID) (Aggregate[S], error) {
	return r.load(ctx, q, id, math.MaxInt64, r.cfg.SnapshotSchema)
}

// LoadVersion returns the state as it was at version v. ErrNotFound if the
// stream never reached v.
func (r *Repository[S]) LoadVersion(ctx context.Context, q Querier, id uuid.UUID, v int64) (Aggregate[S], error) {
	if v < 1 {
		return Aggregate[S]{}, fmt.Errorf("%s %s at version %d: %w", r.cfg.AggregateType, id, v, ErrNotFound)
	}
	agg, err := r.load(ctx, q, id, v, r.cfg.SnapshotSchema)
	if err == nil && agg.Version != v {
		err = fmt.Errorf("%s %s at version %d (it is at %d): %w", r.cfg.AggregateType, id, v, agg.Version, ErrNotFound)
	}
	return agg, err
}

// LoadAsOf returns the state as it was at time t: after every event that
// occurred at or before t. ErrNotFound if the aggregate did not exist yet.
func (r *Repository[S]) LoadAsOf(ctx context.Context, q Querier, id uuid.UUID, t time.Time) (Aggregate[S], error) {
	v, err := r.store.versionAt(ctx, q, r.cfg.AggregateType, id, t)
	if err != nil {
		return Aggregate[S]{}, err
	}
	if v == 0 {
		return Aggregate[S]{}, fmt.Errorf("%s %s as of %s: %w", r.cfg.AggregateType, id, t.UTC().Format(time.RFC3339Nano), ErrNotFound)
	}
	return r.load(ctx, q, id, v, r.cfg.SnapshotSchema)
}

// Replay rebuilds the aggregate from all of its events, ignoring snapshots.
// It is what Load must always agree with.
func (r *Repository[S]) Replay(ctx context.Context, q Querier, id uuid.UUID) (Aggregate[S], error) {
	return r.load(ctx, q, id, math.MaxInt64, "")
}

func (r *Repository[S]) load(ctx context.Context, q Querier, id uuid.UUID, upTo int64, schema string) (Aggregate[S], error) {
	rows, err := r.store.load(ctx, q, r.cfg.AggregateType, id, schema, upTo)
	if err != nil {
		return Aggregate[S]{}, err
	}
	return r.fold(id, rows)
}

// LoadMany returns the current state of each of ids that exists, reading
// them all in one statement: for a handler that decides on many aggregates
// at once.
func (r *Repository[S]) LoadMany(ctx context.Context, q Querier, ids []uuid.UUID) (map[uuid.UUID]Aggregate[S], error) {
	streams, err := r.store.loadStreams(ctx, q, r.cfg.AggregateType, ids, make([]int64, len(ids)), r.cfg.SnapshotSchema)
	if err != nil {
		return nil, err
	}
	out := make(map[uuid.UUID]Aggregate[S], len(ids))
	for i, id := range ids {
		agg, err := r.fold(id, streams[i])
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[id] = agg
	}
	return out, nil
}

// fold rebuilds an aggregate from its stream's rows.
func (r *Repository[S]) fold(id uuid.UUID, rows []streamRow) (Aggregate[S], error) {
	return r.foldOnto(Aggregate[S]{ID: id}, rows)
}

// foldOnto applies a stream's rows (a snapshot first, if any) to agg.
func (r *Repository[S]) foldOnto(agg Aggregate[S], rows []streamRow) (Aggregate[S], error) {
	id := agg.ID
	for _, row := range rows {
		if row.isSnapshot {
			if err := json.Unmarshal(row.env.Data, &agg.State); err != nil {
				return Aggregate[S]{}, fmt.Errorf("%s %s: snapshot at %d: %w", r.cfg.AggregateType, id, row.env.AggregateVersion, err)
			}
		} else {
			e, err := r.store.reg.Decode(row.env)
			if err != nil {
				return Aggregate[S]{}, fmt.Errorf("%s %s: event %d: %w", r.cfg.AggregateType, id, row.env.AggregateVersion, err)
			}
			agg.State = r.cfg.Apply(agg.State, e)
		}
		agg.Version, agg.UpdatedAt = row.env.AggregateVersion, row.env.OccurredAt
	}
	if agg.Version == 0 {
		return agg, fmt.Errorf("%s %s: %w", r.cfg.AggregateType, id, ErrNotFound)
	}
	return agg, nil
}

// Events returns the aggregate's events, oldest first, as they were stored
// (at their own schema versions). ErrNotFound if there are none.
func (r *Repository[S]) Events(ctx context.Context, q Querier, id uuid.UUID) ([]events.Envelope, error) {
	rows, err := r.store.load(ctx, q, r.cfg.AggregateType, id, "", math.MaxInt64)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%s %s: %w", r.cfg.AggregateType, id, ErrNotFound)
	}
	out := make([]events.Envelope, len(rows))
	for i, row := range rows {
		out[i] = row.env
	}
	return out, nil
}

// Stage adds evs, as the next events of agg, with their outbox rows, to u.
// When u commits, agg moves to its new state and version; if the stream has
// moved past agg.Version since agg was loaded, the commit fails with a
// ConflictError and agg is left as it was.
func (r *Repository[S]) Stage(u *UnitOfWork, agg *Aggregate[S], meta Meta, evs ...events.Event) ([]events.Envelope, error) {
	ps := make([]Pending, len(evs))
	for i, e := range evs {
		ps[i] = Pending{Meta: meta, Event: e}
	}
	return r.StageAll(u, agg, ps)
}

// Pending is an event to append, with why it happened.
type Pending struct {
	Meta  Meta
	Event events.Event
}

// StageAll is Stage for events with metadata of their own: the decisions
// of one aggregate on behalf of several sagas, say.
func (r *Repository[S]) StageAll(u *UnitOfWork, agg *Aggregate[S], ps []Pending) ([]events.Envelope, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	// Occurrence times never go backwards within a stream, whatever the
	// clocks of the writers, so that loading as of a time is well defined.
	at := r.store.now().UTC().Truncate(time.Microsecond)
	if !at.After(agg.UpdatedAt) {
		at = agg.UpdatedAt.Add(time.Microsecond)
	}
	state := agg.State
	envs := make([]events.Envelope, len(ps))
	traces := make([]string, len(ps))
	for i, p := range ps {
		typ, schemaVersion, data, err := r.store.reg.Encode(p.Event)
		if err != nil {
			return nil, err
		}
		id, err := uuid.NewV7() // time-ordered: kinder to indexes than random IDs
		if err != nil {
			return nil, fmt.Errorf("event id: %w", err)
		}
		correlation, causation := p.Meta.CorrelationID, p.Meta.CausationID
		if correlation == uuid.Nil {
			correlation = agg.ID
		}
		if causation == uuid.Nil {
			causation = id
		}
		envs[i] = events.Envelope{
			EventID: id, EventType: typ, SchemaVersion: schemaVersion,
			AggregateType: r.cfg.AggregateType, AggregateID: agg.ID, AggregateVersion: agg.Version + int64(i) + 1,
			OccurredAt: at, CorrelationID: correlation, CausationID: causation, Data: data,
		}
		traces[i] = p.Meta.TraceParent
		state = r.cfg.Apply(state, p.Event)
	}
	newVersion := agg.Version + int64(len(ps))

	var snap *snapshot
	if r.cfg.SnapshotSchema != "" && r.store.snapshotDue(agg.Version, newVersion) {
		b, err := json.Marshal(state)
		if err != nil {
			return nil, fmt.Errorf("%s %s: snapshot: %w", r.cfg.AggregateType, agg.ID, err)
		}
		snap = &snapshot{schema: r.cfg.SnapshotSchema, state: b}
	}
	if err := r.store.stage(u, r.cfg.Topic, agg.Version, envs, snap, traces); err != nil {
		return nil, err
	}
	u.applied = append(u.applied, func() { agg.Version, agg.State, agg.UpdatedAt = newVersion, state, at })
	return envs, nil
}

// NewID returns a new aggregate ID: a UUIDv7, time-ordered, so that new
// streams land at the end of the events index rather than anywhere in it.
func NewID() uuid.UUID {
	id, err := uuid.NewV7()
	if err != nil { // the system's random source failed; a v4 still works
		return uuid.New()
	}
	return id
}

// Decision is a command on one aggregate, made on behalf of one event or
// request: Decide returns the events to record given the aggregate's state
// (its version is 0 if it does not exist yet), and Meta says why.
type Decision[S any] struct {
	ID     uuid.UUID
	Meta   Meta
	Decide func(state S, version int64) ([]events.Event, error)
}

// DecideAll makes decisions in order, each on the state the ones before it
// left, within tx: it loads every aggregate they concern in one round trip,
// and writes all their events in one more. It is how a consumer applies a
// batch of events at the cost of a few statements, not a few per event. A
// decision's error stops them all.
//
// Before loading, it locks the aggregates until tx ends (advisory locks,
// taken in one order, so two such transactions never deadlock). Two
// instances of a consumer that decide on the same aggregates, as the
// customer service's do when orders of one customer arrive on partitions
// that different instances own, then take turns; without the lock both
// decide on the same version, one loses at the version guard and its whole
// batch is done again, which under load happens over and over. Writers that
// do not lock (a command) are still caught by the version guard.
//
// cache, if not nil, keeps the aggregates' states between calls (see
// Cache). The states decided here go into it only through committed, which
// the caller calls once tx has committed, and never if the commit failed
// or its outcome is unknown: a state that did not commit must not be the
// starting point of the next decision.
func (r *Repository[S]) DecideAll(ctx context.Context, tx pgx.Tx, ds []Decision[S], cache *Cache[S]) (committed func(), err error) {
	committed = func() {}
	if len(ds) == 0 {
		return committed, nil
	}
	var b pgx.Batch
	l := r.QueueLoad(&b, DecisionIDs(ds), cache)
	br := tx.SendBatch(ctx, &b)
	err = l.Read(br)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return committed, err
	}
	var u UnitOfWork
	if committed, err = r.DecideOn(l, ds, &u); err != nil {
		return func() {}, err
	}
	if err := u.Send(ctx, tx); err != nil {
		l.Forget()
		return func() {}, err
	}
	return committed, nil
}

// DecisionIDs returns the aggregates ds concern, each once, in order.
func DecisionIDs[S any](ds []Decision[S]) []uuid.UUID {
	var ids []uuid.UUID
	seen := map[uuid.UUID]bool{}
	for _, d := range ds {
		if !seen[d.ID] {
			seen[d.ID] = true
			ids = append(ids, d.ID)
		}
	}
	return ids
}

// Loading is DecideAll's load, queued into a batch of the caller's
// (QueueLoad) so that it can share a round trip with other statements: a
// consumer sends it with the BEGIN and its inbox lookup. Read reads it once
// the batch is sent; DecideOn decides on it.
type Loading[S any] struct {
	r     *Repository[S]
	ids   []uuid.UUID
	base  []Aggregate[S]
	cache *Cache[S]
	read  func(pgx.BatchResults) ([][]streamRow, error)
	aggs  map[uuid.UUID]*Aggregate[S]
}

// QueueLoad queues into b the locking and loading of the aggregates ids
// (see DecideAll), from cache plus their newer events where it has them.
// It must be sent within a transaction, whose end releases the locks.
func (r *Repository[S]) QueueLoad(b *pgx.Batch, ids []uuid.UUID, cache *Cache[S]) *Loading[S] {
	l := &Loading[S]{r: r, ids: ids, base: make([]Aggregate[S], len(ids)), cache: cache}
	after := make([]int64, len(ids))
	for i, id := range ids {
		l.base[i] = Aggregate[S]{ID: id}
		if cache != nil {
			if a, ok := cache.get(id); ok {
				l.base[i], after[i] = a, a.Version
			}
		}
	}
	if len(ids) > 0 {
		l.read = queueLockAndLoad(b, r.cfg.AggregateType, ids, after, r.cfg.SnapshotSchema)
	}
	return l
}

// Read reads the load's results from br, the results of the batch it was
// queued into, in the order the batch was queued.
func (l *Loading[S]) Read(br pgx.BatchResults) error {
	l.aggs = make(map[uuid.UUID]*Aggregate[S], len(l.ids))
	if l.read == nil {
		return nil
	}
	streams, err := l.read(br)
	if err != nil {
		return err
	}
	for i, id := range l.ids {
		agg, err := l.r.foldOnto(l.base[i], streams[i])
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		agg.ID = id
		l.aggs[id] = &agg
	}
	return nil
}

// Aggregate returns aggregate id as Read loaded it (as committed since, once
// a unit that DecideOn staged on it has committed); false if it was not
// among the loaded ones.
func (l *Loading[S]) Aggregate(id uuid.UUID) (Aggregate[S], bool) {
	a, ok := l.aggs[id]
	if !ok {
		return Aggregate[S]{}, false
	}
	return *a, true
}

// Forget drops the loaded aggregates from the cache, for a caller whose
// writes failed: another writer may have moved them.
func (l *Loading[S]) Forget() {
	if l.cache != nil {
		l.cache.forget(l.ids)
	}
}

// DecideOn makes decisions in order, each on the state the ones before it
// left, on the aggregates l loaded (every decision's must be among them),
// and stages their events in u. committed is as DecideAll's: the caller
// calls it once u's transaction has committed.
func (r *Repository[S]) DecideOn(l *Loading[S], ds []Decision[S], u *UnitOfWork) (committed func(), err error) {
	committed = func() {}
	ids := DecisionIDs(ds)
	working := make(map[uuid.UUID]S, len(ids))
	for _, id := range ids {
		agg, ok := l.aggs[id]
		if !ok {
			return committed, fmt.Errorf("decision on %s %s, which was not loaded", r.cfg.AggregateType, id)
		}
		working[id] = agg.State
	}
	pending := make(map[uuid.UUID][]Pending, len(ids))
	for _, d := range ds {
		agg := l.aggs[d.ID]
		evs, err := d.Decide(working[d.ID], agg.Version+int64(len(pending[d.ID])))
		if err != nil {
			return committed, err
		}
		for _, e := range evs {
			working[d.ID] = r.cfg.Apply(working[d.ID], e)
			pending[d.ID] = append(pending[d.ID], Pending{Meta: d.Meta, Event: e})
		}
	}
	for _, id := range ids {
		if _, err := r.StageAll(u, l.aggs[id], pending[id]); err != nil {
			return committed, err
		}
	}
	if l.cache == nil {
		return committed, nil
	}
	return func() {
		// By now the writes moved the aggregates to their new versions; a
		// stream that did not exist before is one now.
		list := make([]*Aggregate[S], 0, len(ids))
		for _, id := range ids {
			if a := l.aggs[id]; a.Version > 0 {
				list = append(list, a)
			}
		}
		l.cache.put(list)
	}, nil
}
