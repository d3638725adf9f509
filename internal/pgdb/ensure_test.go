package pgdb_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/eventsaga/eventsaga/internal/pgdb"
	"github.com/eventsaga/eventsaga/internal/testenv"
)

// Instances of a service that start together all call Ensure for the same
// database: each of them must see it made, none fail on the race.
func TestEnsureConcurrently(t *testing.T) {
	server := testenv.ServerURL(t)
	ctx := context.Background()
	for round := range 5 {
		name := fmt.Sprintf("ensure_race_%d", round)
		drop := func() {
			c, err := pgx.Connect(ctx, server)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(ctx)
			if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
				t.Fatal(err)
			}
		}
		drop()
		t.Cleanup(drop)
		var wg sync.WaitGroup
		errs := make([]error, 6)
		start := make(chan struct{})
		for i := range errs {
			wg.Go(func() {
				<-start
				errs[i] = pgdb.Ensure(ctx, server, name)
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d, caller %d: %v", round, i, err)
			}
		}
	}
}
