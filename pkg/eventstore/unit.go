package eventstore

import (
	"context"
	"errors"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// UnitOfWork collects the writes of one command (appends, and any other
// statements that must commit with them, such as an idempotency record) and
// sends them to Postgres in one round trip. Postgres runs a pipelined batch as
// one implicit transaction, so they all commit or none does.
//
// A command decides on state it loaded before, outside any transaction;
// optimistic concurrency catches a stream that moved in between, and the
// command starts over (see Retry). That keeps a command to two round trips
// (load, commit) and holds no locks while it decides.
type UnitOfWork struct {
	batch   pgx.Batch
	results []func(pgconn.CommandTag, error) error
	applied []func() // run after a successful commit
}

// Exec adds a statement to the unit. Its error, if any, is what Commit
// returns.
func (u *UnitOfWork) Exec(sql string, args ...any) {
	u.queue(func(_ pgconn.CommandTag, err error) error { return err }, sql, args...)
}

// Len is the number of statements queued.
func (u *UnitOfWork) Len() int { return u.batch.Len() }

func (u *UnitOfWork) queue(onResult func(pgconn.CommandTag, error) error, sql string, args ...any) {
	u.batch.Queue(sql, args...)
	u.results = append(u.results, onResult)
}

// batchSender is a pool, connection or transaction.
type batchSender interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// send runs the unit on s and returns the first statement's error (the
// statements after a failed one fail too, for no reason of their own).
func (u *UnitOfWork) send(ctx context.Context, s batchSender) error {
	if u.batch.Len() == 0 {
		return nil
	}
	res := s.SendBatch(ctx, &u.batch)
	var first error
	for _, onResult := range u.results {
		tag, err := res.Exec()
		if err := onResult(tag, err); err != nil && first == nil {
			first = err
		}
	}
	if err := res.Close(); err != nil && first == nil {
		first = err
	}
	if first != nil {
		return first
	}
	for _, f := range u.applied {
		f()
	}
	return nil
}

// Send runs the unit's statements within tx, for a caller that has a
// transaction already (a consumer's handler): they commit with tx. The
// aggregates staged in it move to their new versions when the statements
// succeed, before tx commits.
func (u *UnitOfWork) Send(ctx context.Context, tx pgx.Tx) error { return u.send(ctx, tx) }

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
func (s *Store) Commit(ctx context.Context, u *UnitOfWork) error {
	req := &commitRequest{u: u, done: make(chan error, 1)}
	g := &s.group
	g.mu.Lock()
	g.queue = append(g.queue, req)
	lead := g.active < maxCommitters
	if lead {
		g.active++
	}
	g.mu.Unlock()
	if lead {
		s.drainCommits(ctx)
	}
	err := <-req.done
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
)

// groupCommit holds the units waiting to be committed.
type groupCommit struct {
	mu     sync.Mutex
	queue  []*commitRequest
	active int
}

type commitRequest struct {
	u    *UnitOfWork
	done chan error
}

// drainCommits sends groups of waiting units until none is left.
func (s *Store) drainCommits(ctx context.Context) {
	// A group may hold other callers' units: it must not end because this
	// caller's context did.
	ctx = context.WithoutCancel(ctx)
	g := &s.group
	for {
		g.mu.Lock()
		n := min(len(g.queue), maxGroup)
		if n == 0 {
			g.active--
			g.mu.Unlock()
			return
		}
		group := g.queue[:n:n]
		g.queue = g.queue[n:]
		g.mu.Unlock()
		s.commitGroup(ctx, group)
	}
}

// commitGroup sends a group as one transaction, or its units one by one if
// that fails.
func (s *Store) commitGroup(ctx context.Context, group []*commitRequest) {
	if len(group) == 1 {
		group[0].done <- group[0].u.send(ctx, s.pool)
		return
	}
	var all UnitOfWork
	for _, r := range group {
		for i, q := range r.u.batch.QueuedQueries {
			all.queue(r.u.results[i], q.SQL, q.Arguments...)
		}
	}
	if err := all.send(ctx, s.pool); err != nil {
		for _, r := range group {
			r.done <- r.u.send(ctx, s.pool)
		}
		return
	}
	for _, r := range group {
		for _, f := range r.u.applied {
			f()
		}
		r.done <- nil
	}
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
