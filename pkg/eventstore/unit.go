package eventstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/outbox"
)

// UnitOfWork collects the writes of one command (appends, and any other
// statements that must commit with them, such as an idempotency record) and
// sends them to Postgres in one round trip. Postgres runs a pipelined batch as
// one implicit transaction, so they all commit or none does.
//
// However many aggregates it appends to, a unit writes all of its events in
// one statement and all of their outbox rows in another: Postgres spends more
// on each statement than on each row, so this is what makes a batch of
// decisions, or a group of commits, cheap. The appends go first, then the
// other statements in the order they were queued.
//
// A command decides on state it loaded before, outside any transaction;
// optimistic concurrency catches a stream that moved in between, and the
// command starts over (see Retry). That keeps a command to two round trips
// (load, commit) and holds no locks while it decides.
type UnitOfWork struct {
	appends []*staged
	stmts   []statement
	applied []func() // run after a successful commit
}

// staged is one append: a stream's next events, expected to follow version
// expected, with their outbox messages and perhaps a snapshot.
type staged struct {
	expected int64
	envs     []events.Envelope
	msgs     []outbox.Message
	snap     *snapshot
}

// statement is a statement of the unit and what to make of its result.
type statement struct {
	sql      string
	args     []any
	onResult func(pgconn.CommandTag, error) error
}

// Staged returns the envelopes of the events staged in the unit so far,
// stream by stream in the order they were staged.
func (u *UnitOfWork) Staged() []events.Envelope {
	var envs []events.Envelope
	for _, a := range u.appends {
		envs = append(envs, a.envs...)
	}
	return envs
}

// Exec adds a statement to the unit. Its error, if any, is what Commit
// returns.
func (u *UnitOfWork) Exec(sql string, args ...any) {
	u.stmts = append(u.stmts, statement{sql, args, func(_ pgconn.CommandTag, err error) error { return err }})
}

// merge adds the writes of other to u, after u's own.
func (u *UnitOfWork) merge(other *UnitOfWork) {
	u.appends = append(u.appends, other.appends...)
	u.stmts = append(u.stmts, other.stmts...)
}

// batchSender is a pool, connection or transaction.
type batchSender interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// send runs the unit on s and returns the first statement's error (the
// statements after a failed one fail too, for no reason of their own).
func (u *UnitOfWork) send(ctx context.Context, s batchSender) error {
	var b pgx.Batch
	read, err := u.queue(&b)
	if err != nil || b.Len() == 0 {
		return err
	}
	res := s.SendBatch(ctx, &b)
	first := read(res)
	if err := res.Close(); err != nil && first == nil {
		first = err
	}
	return first
}

// queue queues the unit's statements into b and returns the function that
// reads their results once b is sent: the first statement's error.
func (u *UnitOfWork) queue(b *pgx.Batch) (read func(pgx.BatchResults) error, err error) {
	stmts, err := u.statements()
	if err != nil {
		return nil, err
	}
	for _, st := range stmts {
		b.Queue(st.sql, st.args...)
	}
	return func(res pgx.BatchResults) error {
		var first error
		for _, st := range stmts {
			tag, err := res.Exec()
			if err := st.onResult(tag, err); err != nil && first == nil {
				first = err
			}
		}
		return first
	}, nil
}

// Queue queues the unit's statements into b, for a caller that sends them
// in a batch of its own within a transaction (a consumer that pipelines a
// whole transaction in two round trips), and returns the function that
// reads their results once b is sent. As with Send, the aggregates staged
// in the unit move to their new versions when the statements succeed.
func (u *UnitOfWork) Queue(b *pgx.Batch) (read func(pgx.BatchResults) error, err error) {
	r, err := u.queue(b)
	if err != nil {
		return nil, err
	}
	return func(res pgx.BatchResults) error {
		if err := r(res); err != nil {
			return err
		}
		u.settle()
		return nil
	}, nil
}

// settle moves the aggregates staged in the unit to their new versions, once
// it has committed.
func (u *UnitOfWork) settle() {
	for _, f := range u.applied {
		f()
	}
}

// Send runs the unit's statements within tx, for a caller that has a
// transaction already (a consumer's handler): they commit with tx. If a
// stream has moved, it fails with a ConflictError; tx is then unusable and
// the caller starts over. The aggregates staged in it move to their new
// versions when the statements succeed, before tx commits: if tx rolls back,
// they are ahead of the store and must be loaded again, not reused.
func (u *UnitOfWork) Send(ctx context.Context, tx pgx.Tx) error {
	if err := u.send(ctx, tx); err != nil {
		return err
	}
	u.settle()
	return nil
}

// Commit sends the unit as one transaction and wakes the relay. On success
// the aggregates staged in it move to their new versions; on failure they
// are left as they were.
//
// Commits group themselves: while others are being sent, units that arrive
// wait and go together, as one transaction, like Postgres' own group
// commit but before the round trip. Under load this turns many small
// transactions contending for the same index pages into few; alone, a unit
// goes at once. If a group fails, each of its units is sent again on its
// own, so a unit fails only for its own reasons.
//
// Commit returns when ctx ends, whatever the database does: a stalled
// database must not hang the request waiting for it. A unit not sent yet
// is then never sent; one already sent may still commit, so the error says
// its outcome is unknown. Either error matches context.DeadlineExceeded (or
// context.Canceled). A group gives up after the store's CommitTimeout
// however long its callers would wait.
func (s *Store) Commit(ctx context.Context, u *UnitOfWork) error {
	req := &commitRequest{u: u, done: make(chan error, 1), caller: trace.SpanFromContext(ctx)}
	g := &s.group
	g.mu.Lock()
	g.queue = append(g.queue, req)
	lead := g.active < maxCommitters
	if lead {
		g.active++
	}
	g.mu.Unlock()
	if lead {
		// Apart from the caller, which must be free to give up: the group
		// may hold other callers' units.
		go s.drainCommits(context.WithoutCancel(ctx))
	}
	var err error
	select {
	case err = <-req.done:
	case <-ctx.Done():
		switch {
		case req.state.CompareAndSwap(queued, abandoned):
			return fmt.Errorf("commit not sent: %w", ctx.Err())
		case req.state.CompareAndSwap(sending, abandoned):
			return fmt.Errorf("commit sent, outcome unknown (it may yet commit): %w", ctx.Err())
		}
		err = <-req.done // answered as ctx ended: the result is on its way
	}
	if err == nil && s.notifier != nil {
		s.notifier.Notify()
	}
	return err
}

const (
	// maxCommitters is how many groups are sent at once.
	maxCommitters = 4
	// maxGroup bounds the units of one group.
	maxGroup = 64
	// DefaultCommitTimeout is how long a group of commits waits for the
	// database unless Config says otherwise.
	DefaultCommitTimeout = 5 * time.Second
)

// groupCommit holds the units waiting to be committed.
type groupCommit struct {
	mu     sync.Mutex
	queue  []*commitRequest
	active int
}

// commitRequest is a unit waiting for its group, and the caller waiting
// for its result.
type commitRequest struct {
	u     *UnitOfWork
	state atomic.Int32
	done  chan error
	// caller is the span of the caller, with tracing on.
	caller trace.Span
}

// The states of a commitRequest. The caller and the group each move it out
// of queued or sending at most once, so that a unit its caller gave up on
// is not sent, and its aggregates do not change after Commit returned.
const (
	queued int32 = iota
	sending
	answered
	abandoned
)

// finish gives the caller its result; on success the unit's aggregates move
// to their new versions, unless the caller stopped waiting.
func (r *commitRequest) finish(err error) {
	if r.state.CompareAndSwap(sending, answered) && err == nil {
		r.u.settle()
	}
	r.done <- err
}

// drainCommits sends groups of waiting units until none is left.
func (s *Store) drainCommits(ctx context.Context) {
	g := &s.group
	for {
		g.mu.Lock()
		n := min(len(g.queue), maxGroup)
		if n == 0 {
			g.active--
			g.mu.Unlock()
			return
		}
		taken := g.queue[:n:n]
		g.queue = g.queue[n:]
		g.mu.Unlock()
		group := make([]*commitRequest, 0, n)
		for _, r := range taken {
			if r.state.CompareAndSwap(queued, sending) { // else its caller gave up
				group = append(group, r)
			}
		}
		if len(group) > 0 {
			s.commitGroup(ctx, group)
		}
	}
}

// commitGroup sends a group as one transaction, or its units one by one if
// that fails for a reason other than the database not answering in time.
func (s *Store) commitGroup(ctx context.Context, group []*commitRequest) {
	if s.tracer != nil {
		var span trace.Span
		ctx, span = s.traceGroup(ctx, group)
		defer span.End()
	}
	if len(group) == 1 {
		group[0].finish(s.sendWithin(ctx, group[0].u))
		return
	}
	var all UnitOfWork
	for _, r := range group {
		all.merge(r.u)
	}
	err := s.sendWithin(ctx, &all)
	if errors.Is(err, context.DeadlineExceeded) {
		// Alone, each unit would wait as long again.
		for _, r := range group {
			r.finish(err)
		}
		return
	}
	if err != nil {
		for _, r := range group {
			switch {
			case r.state.Load() == abandoned: // nothing committed, and no one waits
				r.finish(err)
			case errors.Is(err, context.DeadlineExceeded): // the database stalled since
				r.finish(err)
			default:
				err = s.sendWithin(ctx, r.u)
				r.finish(err)
			}
		}
		return
	}
	for _, r := range group {
		r.finish(nil)
	}
}

// sendWithin sends u as a transaction of its own, giving up after the
// store's CommitTimeout.
func (s *Store) sendWithin(ctx context.Context, u *UnitOfWork) error {
	ctx, cancel := context.WithTimeout(ctx, s.commitTimeout)
	defer cancel()
	err := u.send(ctx, s.pool)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("commit: the database did not answer within %v (%v): %w", s.commitTimeout, err, context.DeadlineExceeded)
	}
	return err
}

// Retry runs fn again, up to attempts times in all, while it fails with
// ErrConflict. fn must load what it decides on, so that each attempt decides
// afresh.
func Retry(ctx context.Context, attempts int, fn func(ctx context.Context) error) error {
	var err error
	for range max(attempts, 1) {
		if err = fn(ctx); !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return err
}

// traceGroup returns the context to send group in: its one caller's span,
// or a span of the group's own, in a trace of its own linked to every
// caller's. ctx is the first caller's (drainCommits), whose span must not
// get the statements of the others.
func (s *Store) traceGroup(ctx context.Context, group []*commitRequest) (context.Context, trace.Span) {
	if len(group) == 1 {
		return trace.ContextWithSpan(ctx, group[0].caller), trace.SpanFromContext(context.Background()) // a no-op span: the caller's is not ours to end
	}
	links := make([]trace.Link, 0, len(group))
	for _, r := range group {
		if sc := r.caller.SpanContext(); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	return s.tracer.Start(ctx, "commit group", trace.WithNewRoot(), trace.WithLinks(links...),
		trace.WithAttributes(attribute.Int("eventsaga.units", len(group))))
}
