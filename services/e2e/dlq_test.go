package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eventsaga/eventsaga/internal/testenv"
	"github.com/eventsaga/eventsaga/pkg/outbox"
)

// poison → dead letter → fix → replay → applied, with the services: the
// customer service cannot write one customer's decisions (a trigger in its
// database refuses them, as a bad migration or constraint might), so the
// OrderCreated of that customer's order is retried, dead-lettered, and the
// partition moves on. Once the trigger is gone, the dead letter is replayed
// by the functions bin/dlq runs: the credit is reserved and the order
// approved. Replayed again, it changes nothing.
func TestDeadLetterReplayedAfterTheFixCompletesTheSaga(t *testing.T) {
	// No deadline may reject the poisoned order before the replay decides
	// it, however slow a loaded machine makes the retries.
	s := startSystem(t, withOrderDeadline(time.Hour))
	ok, poisoned := s.register("Ok", "100.00"), s.register("Poisoned", "100.00")
	_, err := s.customerPool.Exec(context.Background(), fmt.Sprintf(`
CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'customer %% cannot be written', NEW.aggregate_id; END $$;
CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW
WHEN (NEW.aggregate_id = '%s') EXECUTE FUNCTION poison();`, poisoned))
	if err != nil {
		t.Fatal(err)
	}

	stuck := s.place(poisoned, 1, "30.00")
	fine := s.place(ok, 1, "30.00")
	s.awaitStatus(fine, "APPROVED")
	testenv.WaitFor(t, 30*time.Second, "the poisoned order's OrderCreated to be dead-lettered", func() bool {
		return s.customer.svc.ConsumerStats().DeadLettered == 1
	})
	if v := s.orderView(stuck); v.Status != "PENDING" {
		t.Fatalf("the poisoned order is %s, want PENDING", v.Status)
	}

	dlq := "dlq." + s.group("customer-service")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	letters, err := outbox.ReadDeadLetters(ctx, s.kafka.Brokers, dlq)
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 1 || letters[0].Envelope.EventType != "OrderCreated" || letters[0].Envelope.AggregateID != stuck ||
		!strings.Contains(letters[0].Error, "cannot be written") || letters[0].Source.Topic != s.ordersTopic {
		t.Fatalf("dead letters of %s: %+v", dlq, letters)
	}

	// The fix, then the replay.
	if _, err := s.customerPool.Exec(context.Background(), "DROP TRIGGER poison ON events"); err != nil {
		t.Fatal(err)
	}
	if _, err := outbox.ReplayDeadLetters(ctx, s.kafka.Brokers, letters); err != nil {
		t.Fatal(err)
	}
	s.awaitStatus(stuck, "APPROVED")
	if v := s.readOrderAt(stuck, 2); v.Status != "APPROVED" {
		t.Errorf("read model: %+v", v)
	}
	after := s.customerView(poisoned)
	if after.Reserved != "30.00" {
		t.Errorf("customer after the replay: %+v", after)
	}

	// Again: the customer service skips it.
	dups := s.customer.svc.ConsumerStats().Duplicates
	if _, err := outbox.ReplayDeadLetters(ctx, s.kafka.Brokers, letters); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "the second replay to be skipped", func() bool {
		return s.customer.svc.ConsumerStats().Duplicates > dups
	})
	if again := s.customerView(poisoned); again != after {
		t.Errorf("customer after a second replay: %+v, want %+v", again, after)
	}
	testenv.WaitFor(t, 20*time.Second, "the saga's events on the topics", func() bool {
		_, onCustomers := s.saga(stuck)
		return len(onCustomers) > 1
	})
	time.Sleep(500 * time.Millisecond) // time enough for a second decision to show
	if _, onCustomers := s.saga(stuck); !slices.Equal(onCustomers, []string{"CreditReserved", "CreditSettled"}) {
		t.Errorf("the customer's events on the order: %v, want one CreditReserved, settled on approval", onCustomers)
	}
	if st := s.customer.svc.ConsumerStats(); st.DeadLettered != 1 {
		t.Errorf("customer consumer: %+v, want 1 dead letter", st)
	}
}
