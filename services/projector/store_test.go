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
