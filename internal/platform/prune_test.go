package platform

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// A round deletes batch after batch while batches come back full, pausing
// between them, and stops at the first short one; a failure ends the round
// and the next round tries again; every pruner gets its rounds.
func TestPruningRunsRoundsOfBatches(t *testing.T) {
	var mu sync.Mutex
	calls := map[string][]int{}
	backlog := map[string]int64{"inbox": 2500, "keys": 40}
	failOnce := true
	prune := func(what string) func(context.Context, *pgxpool.Pool, time.Duration, int) (int64, error) {
		return func(_ context.Context, _ *pgxpool.Pool, retention time.Duration, limit int) (int64, error) {
			mu.Lock()
			defer mu.Unlock()
			if retention != time.Hour {
				t.Errorf("%s: retention %s", what, retention)
			}
			calls[what] = append(calls[what], limit)
			if what == "keys" && failOnce {
				failOnce = false
				return 0, errors.New("database gone for a moment")
			}
			n := min(backlog[what], int64(limit))
			backlog[what] -= n
			return n, nil
		}
	}
	p := pruning{every: 20 * time.Millisecond, pause: time.Millisecond, batch: 1000}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.run(ctx, slog.New(slog.DiscardHandler), nil, []Pruner{
			{What: "inbox", Retention: time.Hour, Prune: prune("inbox")},
			{What: "keys", Retention: time.Hour, Prune: prune("keys")},
		})
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		finished := backlog["inbox"] == 0 && backlog["keys"] == 0 && len(calls["keys"]) >= 3
		mu.Unlock()
		if finished || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done

	mu.Lock()
	defer mu.Unlock()
	if backlog["inbox"] != 0 || backlog["keys"] != 0 {
		t.Fatalf("left %v", backlog)
	}
	// The inbox's first round: 1000, 1000, 500 (short: the round ends).
	if len(calls["inbox"]) < 3 || calls["inbox"][0] != 1000 {
		t.Errorf("inbox batches: %v", calls["inbox"])
	}
	// The keys: a failure, then the next round deletes them.
	if len(calls["keys"]) < 2 {
		t.Errorf("keys batches: %v; want another round after the failure", calls["keys"])
	}

	// A round stops with its context, even with a backlog left.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	endless := Pruner{What: "endless", Retention: time.Hour, Prune: func(context.Context, *pgxpool.Pool, time.Duration, int) (int64, error) {
		return 1000, nil
	}}
	if n := p.round(ctx, slog.New(slog.DiscardHandler), nil, endless); n != 0 {
		t.Errorf("a cancelled round deleted %d", n)
	}
}
