package outbox

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/internal/testenv"
)

const week = 7 * 24 * time.Hour

// ageInbox inserts n inbox rows of group processed age ago, dead-lettered
// if deadLetter is set.
func ageInbox(t *testing.T, e env, group string, n int, age time.Duration, deadLetter string) {
	t.Helper()
	_, err := e.pool.Exec(context.Background(), `
INSERT INTO inbox (consumer_group, event_id, processed_at, dead_letter)
SELECT $1, gen_random_uuid(), now() - $3::bigint * interval '1 microsecond', NULLIF($4, '')
FROM generate_series(1, $2)`, group, n, age.Microseconds(), deadLetter)
	if err != nil {
		t.Fatal(err)
	}
}

// Rows of events applied longer ago than the retention go, in batches of
// the limit, whichever group applied them; younger rows and dead-lettered
// rows of any age stay. Pruners running at once delete each row once and
// never fail for each other.
func TestPruneInboxDeletesOnlyWhatOutlivedTheRetention(t *testing.T) {
	ctx := context.Background()
	e := env{pool: testenv.Postgres(t, Migration())}
	ageInbox(t, e, "a", 2500, week+time.Hour, "")
	ageInbox(t, e, "b", 700, 30*24*time.Hour, "")
	ageInbox(t, e, "a", 10, week-time.Hour, "")          // inside the window
	ageInbox(t, e, "a", 5, 0, "")                        // just applied
	ageInbox(t, e, "a", 3, 30*24*time.Hour, "dlq.a/0@7") // waiting for a replay
	ageInbox(t, e, "b", 2, week+time.Hour, "dlq.b/0@1")

	// One batch at a time: the limit bounds each statement.
	if n, err := PruneInbox(ctx, e.pool, week, 1000); err != nil || n != 1000 {
		t.Fatalf("first batch: %d, %v; want 1000", n, err)
	}

	// The rest, by four pruners at once.
	var mu sync.Mutex
	var deleted int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				n, err := PruneInbox(ctx, e.pool, week, 100)
				if err != nil {
					t.Errorf("concurrent prune: %v", err)
					return
				}
				mu.Lock()
				deleted += n
				mu.Unlock()
				if n < 100 {
					return
				}
			}
		})
	}
	wg.Wait()
	if deleted != 2200 {
		t.Errorf("concurrent pruners deleted %d rows, want the 2,200 left", deleted)
	}
	if n, err := PruneInbox(ctx, e.pool, week, 1000); err != nil || n != 0 {
		t.Errorf("after the end: %d, %v; want nothing to delete", n, err)
	}

	var kept, young, deadLetters int
	err := e.pool.QueryRow(ctx, `
SELECT count(*), count(*) FILTER (WHERE processed_at > now() - interval '7 days'), count(dead_letter)
FROM inbox`).Scan(&kept, &young, &deadLetters)
	if err != nil {
		t.Fatal(err)
	}
	if kept != 20 || young != 15 || deadLetters != 5 {
		t.Errorf("kept %d rows (%d young, %d dead letters); want 20 (15 young, 5 dead letters)", kept, young, deadLetters)
	}

	if _, err := PruneInbox(ctx, e.pool, 0, 10); err == nil {
		t.Error("a zero retention was accepted")
	}
}

// End to end through a consumer: after pruning, the redelivery of an event
// applied inside the retention is still skipped; one applied before it is
// applied again, which is what the retention means.
func TestRedeliveryInsideTheInboxRetentionIsSkipped(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 1)
	recent, old := e.record(t, keyOf(1), 1), e.record(t, keyOf(2), 1)
	e.produce(t, recent, old)
	c := e.startCountingConsumer(t, e.kafka.Topic("prune-test"))
	waitFor(t, 20*time.Second, "both events applied", func() bool { return c.consumer.Stats().Applied == 2 })

	id := func(key uuid.UUID) uuid.UUID {
		var id uuid.UUID
		if err := e.pool.QueryRow(ctx, "SELECT event_id FROM effects WHERE key = $1", key.String()).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	for event, age := range map[uuid.UUID]time.Duration{id(keyOf(1)): week - time.Hour, id(keyOf(2)): week + time.Hour} {
		if _, err := e.pool.Exec(ctx, "UPDATE inbox SET processed_at = now() - $2::bigint * interval '1 microsecond' WHERE event_id = $1", event, age.Microseconds()); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := PruneInbox(ctx, e.pool, week, 1000); err != nil || n != 1 {
		t.Fatalf("pruned %d rows, %v; want the old event's only", n, err)
	}

	e.produce(t, copyOf(recent), copyOf(old)) // redelivered, as after a crash before the offsets were committed
	waitFor(t, 20*time.Second, "the redeliveries handled", func() bool {
		s := c.consumer.Stats()
		return s.Applied+s.Duplicates == 4
	})
	if s := c.consumer.Stats(); s.Duplicates != 1 {
		t.Errorf("%d duplicates skipped, want 1 (the recent event): %+v", s.Duplicates, s)
	}
	var recentEffects, oldEffects int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE key = $1), count(*) FILTER (WHERE key = $2) FROM effects`,
		keyOf(1).String(), keyOf(2).String()).Scan(&recentEffects, &oldEffects); err != nil {
		t.Fatal(err)
	}
	if recentEffects != 1 {
		t.Errorf("the event applied inside the retention was applied %d times, want once", recentEffects)
	}
	if oldEffects != 2 {
		t.Errorf("the event applied before the retention was applied %d times; its inbox row was pruned, so want twice", oldEffects)
	}
}
