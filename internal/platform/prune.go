package platform

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Pruner deletes rows of one table that outlived their retention: the
// inbox's, the order service's idempotency keys. Tables that only grow make
// every index and every vacuum of them slower for ever.
type Pruner struct {
	// What names the rows, for the logs.
	What string
	// Retention is how long a row is kept.
	Retention time.Duration
	// Prune deletes up to limit rows older than retention, oldest first,
	// and returns how many it deleted. It must be safe to run in several
	// instances at once (claim rows with SKIP LOCKED).
	Prune func(ctx context.Context, pool *pgxpool.Pool, retention time.Duration, limit int) (int64, error)
}

// pruning is how pruners run: every so often, a batch at a time with a
// pause between batches, so that pruning a large backlog (the first run on
// a table that has grown for months) never holds locks or the disk long
// enough to slow the saga down.
type pruning struct {
	every time.Duration // between rounds, jittered by ±50% so instances drift apart
	pause time.Duration // between batches of one round
	batch int
}

var defaultPruning = pruning{every: time.Minute, pause: 100 * time.Millisecond, batch: 1000}

// run prunes until ctx is done, the first round after a random part of
// every: instances started together do not start pruning together, nor
// while they start up.
func (p pruning) run(ctx context.Context, log *slog.Logger, pool *pgxpool.Pool, ps []Pruner) {
	wait := rand.N(p.every)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		for _, pr := range ps {
			p.round(ctx, log, pool, pr)
		}
		wait = p.every/2 + rand.N(p.every)
	}
}

// round deletes what pr's retention allows, a batch at a time, and logs
// how much. A failure ends the round; the next one tries again.
func (p pruning) round(ctx context.Context, log *slog.Logger, pool *pgxpool.Pool, pr Pruner) (deleted int64) {
	defer func() {
		if deleted > 0 {
			log.Info("pruned rows past their retention", "rows", deleted, "what", pr.What, "retention", pr.Retention)
		}
	}()
	for ctx.Err() == nil {
		n, err := pr.Prune(ctx, pool, pr.Retention, p.batch)
		deleted += n
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("pruning failed; trying again in the next round", "what", pr.What, "err", err)
			}
			return deleted
		}
		if n < int64(p.batch) {
			return deleted
		}
		select {
		case <-ctx.Done():
		case <-time.After(p.pause):
		}
	}
	return deleted
}
