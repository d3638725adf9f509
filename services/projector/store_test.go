package projector

import (
	"context"
	"sync"
	"testing"

	"github.com/eventsaga/eventsaga/internal/testenv"
)

// Instances of the projector that start together on a new database all make
// generation 1 current: none may fail on the race.
func TestInstancesStartTogetherOnANewDatabase(t *testing.T) {
	for round := range 5 {
		s := store{pool: testenv.Postgres(t, Migration())}
		var wg sync.WaitGroup
		errs := make([]error, 4)
		start := make(chan struct{})
		for i := range errs {
			wg.Go(func() {
				<-start
				g, err := s.current(context.Background())
				if err == nil && g != 1 {
					t.Errorf("round %d: generation %d, want 1", round, g)
				}
				errs[i] = err
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d, instance %d: %v", round, i, err)
			}
		}
	}
}

// A rebuild that did not finish leaves its generation's number taken: the
// next rebuild gets a new one, and with it a consumer group that has no
// offsets committed, so it projects from the start of the topics.
func TestAnAbandonedGenerationsNumberIsNotTakenAgain(t *testing.T) {
	ctx := context.Background()
	s := store{pool: testenv.Postgres(t, Migration())}
	first, err := s.startBulk(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.abandon(ctx, first)
	next, err := s.startBulk(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if next == first {
		t.Errorf("the rebuild after abandoned generation %d got generation %d again (and its consumer group's offsets)", first, next)
	}
	var state string
	if err := s.pool.QueryRow(ctx, `SELECT state FROM rm_generations WHERE generation = $1`, int(first)).Scan(&state); err != nil || state != "abandoned" {
		t.Errorf("abandoned generation %d: state %q, %v; want abandoned", first, state, err)
	}
}
