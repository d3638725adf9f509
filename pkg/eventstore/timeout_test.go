package eventstore_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsaga/eventsaga/internal/testenv"
	"github.com/eventsaga/eventsaga/pkg/eventstore"
)

// A stalled database (a lock held on the events table) does not hang
// commits. With the most groups the store sends at once stalled, a commit
// queued behind them gives up when its context ends and is never sent: its
// stream is not written, even after the stall. The stalled commits and one
// queued without a deadline go through once it is over.
func TestCommitQueuedBehindAStallGivesUpUnsent(t *testing.T) {
	f := setup(t, eventstore.Config{CommitTimeout: 20 * time.Second})
	ctx := context.Background()
	release := testenv.LockTable(t, f.pool, "events")

	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []error
	commit := func(ctx context.Context) *eventstore.Aggregate[tally] {
		agg := f.repo.New(uuid.New())
		var u eventstore.UnitOfWork
		if _, err := f.repo.Stage(&u, &agg, eventstore.Meta{}, Added{Amount: 1}); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := f.store.Commit(ctx, &u); err != nil {
				mu.Lock()
				failed = append(failed, err)
				mu.Unlock()
			}
		})
		return &agg
	}
	var through []*eventstore.Aggregate[tally]
	for i := range 4 { // one group each, the most sent at once
		through = append(through, commit(ctx))
		awaitLockWaiters(t, f.pool, i+1)
	}

	queued := f.repo.New(uuid.New())
	var u eventstore.UnitOfWork
	if _, err := f.repo.Stage(&u, &queued, eventstore.Meta{}, Added{Amount: 1}); err != nil {
		t.Fatal(err)
	}
	qctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := f.store.Commit(qctx, &u)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the queued commit returned after %v; its context ended after 300ms", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not sent") {
		t.Errorf("queued commit: %v; want it not sent, and a deadline exceeded", err)
	}
	through = append(through, commit(ctx)) // queued behind it, without a deadline

	release()
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("commits failed after the stall: %v", failed)
	}
	for i, agg := range through {
		if agg.Version != 1 {
			t.Errorf("commit %d: aggregate at version %d, want 1", i, agg.Version)
		}
	}
	if queued.Version != 0 {
		t.Errorf("the aggregate of the commit that gave up moved to version %d", queued.Version)
	}
	if _, err := f.repo.Load(ctx, f.pool, queued.ID); !errors.Is(err, eventstore.ErrNotFound) {
		t.Errorf("the stream of the commit that gave up unsent: %v; want ErrNotFound", err)
	}
}

// A commit without a deadline of its own gets an error once its group has
// waited CommitTimeout for a stalled database; its aggregate does not move.
// (Whether it committed after all, when the stall ended, is unknown: the
// statements had been sent.)
func TestCommitGivesUpOnAStalledDatabaseAfterCommitTimeout(t *testing.T) {
	f := setup(t, eventstore.Config{CommitTimeout: 300 * time.Millisecond})
	testenv.LockTable(t, f.pool, "events")
	agg := f.repo.New(uuid.New())
	var u eventstore.UnitOfWork
	if _, err := f.repo.Stage(&u, &agg, eventstore.Meta{}, Added{Amount: 1}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := f.store.Commit(context.Background(), &u)
	if took := time.Since(start); took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("Commit returned after %v; want about the CommitTimeout of 300ms", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "did not answer within 300ms") {
		t.Errorf("Commit: %v; want the database not answering within 300ms", err)
	}
	if agg.Version != 0 {
		t.Errorf("aggregate at version %d after a failed commit", agg.Version)
	}
}

// awaitLockWaiters waits until n sessions of the database wait for a lock.
func awaitLockWaiters(t *testing.T, pool *pgxpool.Pool, n int) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, "sessions waiting for the lock", func() bool {
		var waiting int
		err := pool.QueryRow(context.Background(),
			"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'").Scan(&waiting)
		return err == nil && waiting >= n
	})
}
