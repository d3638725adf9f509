package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eventsaga/eventsaga/internal/testenv"
	"github.com/eventsaga/eventsaga/pkg/events"
)

// Fault injection at every boundary of the saga, two ways each: an error,
// and a lost connection. Each case arms one fault that fires once, runs the
// same four sagas through it (an order refused for credit, one approved, one
// for a customer never registered, one approved then cancelled), lets the
// system go on, and checks the end state (checkSagas): every order in the
// status it must end in, exactly one credit decision and one decision per
// order on the topics (counted by event ID, so republished records count
// once), no order created twice, each customer's reserved credit the sum of
// its APPROVED orders, the read model equal to the write model, no dead
// letters. It also checks that the fault did fire: a case whose fault never
// happened proves nothing.
//
// The faults come from outside the services' code: triggers in their
// databases (an error, a backend that terminates itself, a NOTICE that
// marks a transaction), a proxy between the services and Postgres that loses
// the answer to a COMMIT the NOTICE marked (pgproxy_test.go), and kfake's
// control of the Kafka requests. The refused order comes first, so that the
// faults that strike the first transaction strike a refusal: unlike a
// reservation still held, a refusal is not idempotent in the domain, and
// applied twice it records a second decision; only the guard under test
// stands in the way.

// TestFaultInCommandUnitOfWork fails POST /orders inside its unit of work.
//
//   - error: the unit's last statement (the Idempotency-Key's row) fails
//     after the order's event, outbox row and deadline row were written; the
//     POST answers 500 and the client retries with the same key. Guard:
//     unit-of-work atomicity: the unit is one implicit transaction, so
//     nothing of the failed attempt is left to publish, and the retry
//     places the order once.
//   - lost connection: the unit commits, and the answer is lost on its way
//     back: the POST answers 503 (its outcome unknown) for an order that
//     exists. Guard: the
//     Idempotency-Key, stored in the same unit as the order's first event:
//     the retry is answered with the order that committed, not a second one.
func TestFaultInCommandUnitOfWork(t *testing.T) {
	runFaults(t, []faultCase{{
		name:  "error",
		guard: "unit-of-work atomicity: a failed unit leaves no event, outbox row or key behind",
		arm: func(r *faultRun) {
			r.trigger(r.s.orderPool, raise, `AFTER INSERT ON idempotency_keys FOR EACH ROW`)
		},
		fired: func(r *faultRun) { r.mustHaveFired(r.s.orderPool); r.mustHaveRetriedPOSTs(500) },
	}, {
		name:  "lost connection",
		guard: "the Idempotency-Key, committed with the order, answers the retry with that order",
		arm: func(r *faultRun) {
			r.trigger(r.s.orderPool, notice, `AFTER INSERT ON events FOR EACH ROW WHEN (NEW.event_type = 'OrderCreated')`)
		},
		fired: func(r *faultRun) { r.mustHaveLost(1); r.mustHaveRetriedPOSTs(503) },
	}})
}

// TestFaultInRelayBetweenPublishAndDelete fails the order service's relay
// after Kafka acknowledged a batch (the first, with the refused order's
// OrderCreated) and before its rows are deleted.
//
//   - error: the DELETE of the published rows fails.
//   - lost connection: the relay's backend is terminated in the DELETE
//     (pg_terminate_backend, as a failover or an operator would), which
//     rolls it back and ends the session and its advisory lock.
//
// Guard, both: the outbox row is deleted only after Kafka acknowledged it,
// so the rows stay and the next session publishes them again; the customer
// service's inbox absorbs the duplicates (without it the refused order
// would be refused twice).
func TestFaultInRelayBetweenPublishAndDelete(t *testing.T) {
	const guard = "rows deleted only after the ack are republished; the consumer's inbox makes the duplicate a no-op"
	runFaults(t, []faultCase{{
		name:  "error",
		guard: guard,
		arm: func(r *faultRun) {
			r.trigger(r.s.orderPool, raise, `BEFORE DELETE ON outbox FOR EACH STATEMENT`)
		},
		fired: func(r *faultRun) { r.mustHaveFired(r.s.orderPool); r.mustHaveRepublished() },
	}, {
		name:  "lost connection",
		guard: guard,
		arm: func(r *faultRun) {
			r.trigger(r.s.orderPool, terminate, `BEFORE DELETE ON outbox FOR EACH STATEMENT`)
		},
		fired: func(r *faultRun) { r.mustHaveFired(r.s.orderPool); r.mustHaveRepublished() },
	}})
}

// TestFaultInConsumerBeforeCommit fails the customer service's consumer
// between its statements (inbox claim, decisions) and its COMMIT.
//
//   - error: the COMMIT of the transaction that reserves credit (the
//     approved order's) fails after every statement succeeded. Guard: what
//     a failed COMMIT wrote is gone, inbox rows included, and is tried
//     again: the offset is marked only after the transaction committed, and
//     the customer cache takes a decided state only once it committed
//     (outbox.OnCommit); decided on the uncommitted state, the retry would
//     find the credit "already reserved" and the order would never be
//     decided.
//   - lost connection: the COMMIT of the transaction that refuses credit
//     takes effect, and its answer is lost: the consumer cannot know, and
//     applies the batch again. Guard: the inbox, committed with the
//     decisions, makes the second application a no-op (without it the
//     order would be refused twice).
func TestFaultInConsumerBeforeCommit(t *testing.T) {
	runFaults(t, []faultCase{{
		name:  "error",
		guard: "a failed COMMIT is retried from the committed state: offsets marked and the cache filled only after COMMIT",
		arm: func(r *faultRun) {
			r.trigger(r.s.customerPool, raise, `AFTER INSERT ON events DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.event_type = 'CreditReserved')`)
		},
		fired: func(r *faultRun) { r.mustHaveFired(r.s.customerPool) },
	}, {
		name:  "lost connection",
		guard: "the inbox, committed with the decisions, makes the retry of a committed batch a no-op",
		arm: func(r *faultRun) {
			r.trigger(r.s.customerPool, notice, `AFTER INSERT ON events FOR EACH ROW WHEN (NEW.event_type = 'CreditReservationFailed')`)
		},
		fired: func(r *faultRun) {
			r.mustHaveLost(1)
			if n := r.s.customer.svc.ConsumerStats().Duplicates; n < 1 {
				r.t.Errorf("the customer consumer skipped %d duplicates: the batch whose answer was lost was not tried again", n)
			}
		},
	}})
}

// TestFaultInConsumerBeforeOffsetCommit fails the customer service's
// consumer after its transactions committed and before Kafka has their
// offsets: every OffsetCommit of its group fails, then the service stops
// (as a crash would, its last commit failing too) and starts again, and
// gets every record of orders.events again.
//
//   - error: Kafka answers each OffsetCommit with REQUEST_TIMED_OUT.
//   - lost connection: Kafka closes the connection of each OffsetCommit.
//
// Guard, both: offsets are committed only after the transaction, so a
// crash costs a redelivery, never a record; the inbox makes the
// redelivered records no-ops (without it the refusals would be made
// twice, and the cancelled order's credit reserved again).
func TestFaultInConsumerBeforeOffsetCommit(t *testing.T) {
	var cases []faultCase
	for _, lose := range []bool{false, true} {
		cases = append(cases, faultCase{
			name:  map[bool]string{false: "error", true: "lost connection"}[lose],
			guard: "offsets committed after the transaction; the inbox makes every redelivered record a no-op",
			kfake: true,
			arm:   func(r *faultRun) { r.failOffsetCommits(r.s.group("customer-service"), lose) },
			after: func(r *faultRun) { r.restartCustomerAfterFailedCommits() },
			fired: func(r *faultRun) {
				if r.commitsFailed.Load() == 0 {
					r.t.Error("no OffsetCommit of the customer service's group was failed")
				}
				// Everything the first instance applied came again, and
				// was skipped.
				if st := r.s.customer.svc.ConsumerStats(); st.Applied != 0 || st.Duplicates != int64(r.redelivered) || st.Duplicates < 4 {
					r.t.Errorf("restarted customer consumer: %+v; want all %d records of orders.events redelivered and skipped", st, r.redelivered)
				}
			},
		})
	}
	runFaults(t, cases)
}

// TestFaultInProjectorBatch fails the projector's transaction.
//
//   - error: the COMMIT of the batch that approves an order fails after
//     every statement succeeded. Guard: the batch's rows and the customers'
//     order counts are written in the one transaction the consumer gives
//     it, so the failed batch leaves nothing and its retry counts once.
//   - lost connection: the COMMIT of the batch that reserves credit takes
//     effect and its answer is lost; the projector applies the batch again.
//     Guard: the version guard: an event whose version is not above its
//     row's changes nothing (the projector has no inbox).
func TestFaultInProjectorBatch(t *testing.T) {
	runFaults(t, []faultCase{{
		name:  "error",
		guard: "rows and counts commit in one transaction: a failed batch leaves nothing, its retry counts once",
		arm: func(r *faultRun) {
			r.trigger(r.readPool, raise, `AFTER INSERT OR UPDATE ON rm_orders_g1 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.status = 'APPROVED')`)
		},
		fired: func(r *faultRun) { r.mustHaveFired(r.readPool) },
	}, {
		name:  "lost connection",
		guard: "the projector's version guard makes the retry of a committed batch a no-op",
		arm: func(r *faultRun) {
			r.trigger(r.readPool, notice, `AFTER UPDATE ON rm_customers_g1 FOR EACH ROW WHEN (NEW.reserved <> OLD.reserved)`)
		},
		fired: func(r *faultRun) { r.mustHaveLost(1) },
	}})
}

// faultCase is one fault at one boundary.
type faultCase struct {
	name  string // "error" or "lost connection"
	guard string // what keeps the saga right through the fault
	kfake bool   // the fault is kfake's to make
	// arm installs the fault, before the orders are placed.
	arm func(*faultRun)
	// after, if set, runs once the sagas are decided, before the checks.
	after func(*faultRun)
	// fired fails the test unless the fault happened.
	fired func(*faultRun)
}

// faultRun is a system with its faults.
type faultRun struct {
	t        *testing.T
	s        *system
	proxy    *pgProxy
	cluster  *kfake.Cluster // nil unless the case needs kfake
	readPool *pgxpool.Pool
	// retriedPOSTs are the statuses of the POST /orders answers that made
	// the client send the request again.
	retriedPOSTs []int
	// commitsFailed counts OffsetCommits failed; failCommits turns that on.
	commitsFailed atomic.Int32
	failCommits   atomic.Bool
	// redelivered is how many records the restarted consumer was to get
	// again (restartCustomerAfterFailedCommits).
	redelivered int
}

func runFaults(t *testing.T, cases []faultCase) {
	for _, fc := range cases {
		t.Run(fc.name, func(t *testing.T) {
			t.Logf("guard: %s", fc.guard)
			r := startFaultRun(t, fc.kfake)
			orders, customers := r.sagas(fc)
			if t.Failed() {
				return
			}
			r.checkSagas(orders, customers)
			fc.fired(r)
			if t.Failed() {
				t.Logf("the guard that failed: %s", fc.guard)
			}
		})
	}
}

func startFaultRun(t *testing.T, needsKfake bool) *faultRun {
	r := &faultRun{t: t}
	r.proxy = newPGProxy(t, testenv.ServerURL(t))
	opts := []option{func(s *system) { s.dbURL = r.proxy.url }}
	if needsKfake {
		testenv.NeedsKfake(t, "Kafka's answers to OffsetCommit are failed on purpose")
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		r.cluster = c
		opts = append(opts, func(s *system) { s.kafka = &testenv.Kafka{Brokers: c.ListenAddrs()} })
	}
	r.s = startSystem(t, opts...)
	r.readPool = pool(t, r.s.readDB)
	return r
}

// expected is an order of the sagas and how it must end.
type expected struct {
	id       uuid.UUID
	customer uuid.UUID
	status   string
	reason   string
	version  int64
}

// sagas registers two customers, arms the fault and runs the four sagas
// until each order is decided (and the last one cancelled).
func (r *faultRun) sagas(fc faultCase) ([]expected, []uuid.UUID) {
	s := r.s
	rich, poor, stranger := s.register("Rich", "100.00"), s.register("Poor", "10.00"), uuid.New()
	fc.arm(r)
	orders := []expected{
		{id: r.place("refused", poor, 1, "50.00"), customer: poor, status: "REJECTED", reason: "INSUFFICIENT_CREDIT", version: 2},
		{id: r.place("approved", rich, 3, "10.00"), customer: rich, status: "APPROVED", version: 2},
		{id: r.place("unknown", stranger, 1, "5.00"), customer: stranger, status: "REJECTED", reason: "UNKNOWN_CUSTOMER", version: 2},
		{id: r.place("cancelled", rich, 2, "10.00"), customer: rich, status: "CANCELLED", version: 3},
	}
	cancelled := orders[3].id
	s.awaitStatus(cancelled, "APPROVED")
	mustCall(r.t, 200, nil, "POST", s.order.url+"/orders/"+cancelled.String()+"/cancel", "")
	for _, o := range orders {
		s.awaitStatus(o.id, o.status)
	}
	if fc.after != nil {
		fc.after(r)
	}
	return orders, []uuid.UUID{rich, poor}
}

// place places an order with an Idempotency-Key, sending the request again
// while it fails for the service's reasons, as a client should.
func (r *faultRun) place(key string, customer uuid.UUID, quantity int, price string) uuid.UUID {
	r.t.Helper()
	body := `{"customer_id": "` + customer.String() + `", "items": [{"product_id": "sku-1", "quantity": ` +
		itoa(quantity) + `, "unit_price": "` + price + `"}]}`
	for attempt := 1; ; attempt++ {
		var out struct {
			OrderID uuid.UUID `json:"order_id"`
		}
		status, b := call(r.t, "POST", r.s.order.url+"/orders", body, "Idempotency-Key", key)
		switch {
		case status == 201:
			if err := json.Unmarshal(b, &out); err != nil {
				r.t.Fatalf("POST /orders: %v in %s", err, b)
			}
			return out.OrderID
		case status >= 500 && attempt < 5:
			r.t.Logf("POST /orders (key %s) answered %d; sending it again", key, status)
			r.retriedPOSTs = append(r.retriedPOSTs, status)
		default:
			r.t.Fatalf("POST /orders (key %s): %d %s", key, status, b)
		}
	}
}

// checkSagas checks the end state of the sagas of orders, once the system
// has settled.
func (r *faultRun) checkSagas(orders []expected, customers []uuid.UUID) {
	t, s := r.t, r.s
	r.settle()

	// Each order ended as it must, on the write side.
	approved := map[uuid.UUID]events.Money{} // customer → Σ APPROVED
	ids := make([]uuid.UUID, len(orders))
	for i, o := range orders {
		ids[i] = o.id
		v := s.orderView(o.id)
		reason := ""
		if v.RejectionReason != nil {
			reason = *v.RejectionReason
		}
		if v.Status != o.status || reason != o.reason || v.Version != o.version || v.CustomerID != o.customer {
			t.Errorf("order %s: %s %q v%d of %s; want %s %q v%d of %s", o.id, v.Status, reason, v.Version, v.CustomerID, o.status, o.reason, o.version, o.customer)
		}
		if v.Status == "APPROVED" {
			approved[o.customer] += money(t, v.Total)
		}
	}

	// On the topics, by event ID: each order created once, one credit
	// decision and one decision per order, credit released at most once.
	created := map[uuid.UUID]bool{}
	byOrder := map[uuid.UUID]map[string]map[uuid.UUID]bool{} // order → event type → event IDs
	records, distinct := 0, map[uuid.UUID]bool{}
	for _, e := range seenOn(t, s.topics) {
		records++
		distinct[e.Env.EventID] = true
		if e.Env.EventType == "OrderCreated" {
			created[e.Env.AggregateID] = true
		}
		o := e.Env.CorrelationID // a saga is correlated by its order
		if byOrder[o] == nil {
			byOrder[o] = map[string]map[uuid.UUID]bool{}
		}
		if byOrder[o][e.Env.EventType] == nil {
			byOrder[o][e.Env.EventType] = map[uuid.UUID]bool{}
		}
		byOrder[o][e.Env.EventType][e.Env.EventID] = true
	}
	t.Logf("%d records on the topics, %d events: %d published more than once", records, len(distinct), records-len(distinct))
	placed := map[uuid.UUID]bool{}
	for _, o := range orders {
		placed[o.id] = true
	}
	for id := range created {
		if !placed[id] {
			t.Errorf("order %s was created, but no POST /orders answered with it: a request sent again placed a second order", id)
		}
	}
	for _, o := range orders {
		evs := byOrder[o.id]
		if !created[o.id] {
			t.Errorf("order %s: no OrderCreated on %s", o.id, s.ordersTopic)
		}
		if n := len(evs["CreditReserved"]) + len(evs["CreditReservationFailed"]); n != 1 {
			t.Errorf("order %s: %d credit decisions (CreditReserved %d, CreditReservationFailed %d), want 1",
				o.id, n, len(evs["CreditReserved"]), len(evs["CreditReservationFailed"]))
		}
		if n := len(evs["OrderApproved"]) + len(evs["OrderRejected"]); n != 1 {
			t.Errorf("order %s: %d decisions (OrderApproved %d, OrderRejected %d), want 1",
				o.id, n, len(evs["OrderApproved"]), len(evs["OrderRejected"]))
		}
		if n := len(evs["CreditReleased"]); n > 1 {
			t.Errorf("order %s: credit released %d times", o.id, n)
		}
	}

	// Reserved credit is what the APPROVED orders hold, nothing twice.
	for _, c := range customers {
		if got := money(t, s.customerView(c).Reserved); got != approved[c] {
			t.Errorf("customer %s: reserved %s, but its APPROVED orders total %s", c, got, approved[c])
		}
	}

	// The read model is the write model.
	s.compareReadModel(ids, customers)

	// Nothing was given up.
	for _, group := range []string{s.group("order-service"), s.group("customer-service"), s.group("projector") + ".g1"} {
		if n := s.kafka.Count(t, "dlq."+group); n != 0 {
			t.Errorf("dlq.%s holds %d dead letters", group, n)
		}
	}
}

// settle waits until nothing is left to do: both outboxes empty, both
// saga consumers and the projector caught up with the topics, and the
// test's collector holding every record.
func (r *faultRun) settle() {
	t, s := r.t, r.s
	ctx := context.Background()
	adm := kadm.NewClient(s.kafka.Client(t))
	groups := []string{s.group("order-service"), s.group("customer-service")}
	testenv.WaitFor(t, 30*time.Second, "the system to settle", func() bool {
		if count(t, s.orderPool, "outbox")+count(t, s.customerPool, "outbox") > 0 {
			return false
		}
		lags, err := adm.Lag(ctx, append([]string(nil), groups...)...)
		if err != nil {
			return false
		}
		for _, g := range groups {
			if l, ok := lags[g]; !ok || l.Error() != nil || l.Lag.Total() != 0 {
				return false
			}
		}
		var st struct {
			TotalLag *int64 `json:"total_lag"`
		}
		mustCall(t, 200, &st, "GET", s.projector.url+"/status", "")
		if st.TotalLag == nil || *st.TotalLag != 0 {
			return false
		}
		return int64(len(s.topics.Records())) == s.kafka.Count(t, s.ordersTopic)+s.kafka.Count(t, s.customersTopic)
	})
}

// The actions of a fault trigger. Each fires once: the first time its event
// happens. A sequence counts the shots, since it is not rolled back with
// the transaction the fault fails.
const (
	raise     = `RAISE EXCEPTION 'fault injection: % on %', TG_OP, TG_TABLE_NAME;`
	notice    = `RAISE NOTICE '` + loseTheAnswer + `';`
	terminate = `PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(10);`
)

// trigger installs, in the database of p, a trigger that does action the
// first time the event of when happens (when is what CREATE TRIGGER takes
// between the trigger's name and EXECUTE; with DEFERRABLE it is a
// constraint trigger, run at COMMIT).
func (r *faultRun) trigger(p *pgxpool.Pool, action, when string) {
	r.t.Helper()
	kind := "TRIGGER"
	if strings.Contains(when, "DEFERRABLE") {
		kind = "CONSTRAINT TRIGGER"
	}
	_, err := p.Exec(context.Background(), `
CREATE SEQUENCE fault_shots;
CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF nextval('fault_shots') = 1 THEN
		`+action+`
	END IF;
	RETURN NULL;
END $$;
CREATE `+kind+` fault `+when+` EXECUTE FUNCTION fault();`)
	if err != nil {
		r.t.Fatalf("install the fault: %v", err)
	}
}

func (r *faultRun) mustHaveFired(p *pgxpool.Pool) {
	r.t.Helper()
	var fired bool
	if err := p.QueryRow(context.Background(), "SELECT is_called FROM fault_shots").Scan(&fired); err != nil {
		r.t.Fatal(err)
	}
	if !fired {
		r.t.Error("the fault never fired")
	}
}

func (r *faultRun) mustHaveLost(n int) {
	r.t.Helper()
	if got := r.proxy.Lost(); got != n {
		r.t.Errorf("the proxy lost the answers of %d COMMITs, want %d", got, n)
	}
}

// mustHaveRetriedPOSTs fails unless POST /orders was sent again once for
// each of statuses, after an answer with that status.
func (r *faultRun) mustHaveRetriedPOSTs(statuses ...int) {
	r.t.Helper()
	if !slices.Equal(r.retriedPOSTs, statuses) {
		r.t.Errorf("POST /orders sent again after %v, want after %v", r.retriedPOSTs, statuses)
	}
}

// mustHaveRepublished fails unless an event reached orders.events twice and
// the customer service skipped a duplicate.
func (r *faultRun) mustHaveRepublished() {
	r.t.Helper()
	recs := seenOn(r.t, r.s.topics)
	seen := map[uuid.UUID]bool{}
	dups := 0
	for _, e := range recs {
		if e.Topic != r.s.ordersTopic {
			continue
		}
		if seen[e.Env.EventID] {
			dups++
		}
		seen[e.Env.EventID] = true
	}
	if dups == 0 {
		r.t.Error("no event was published twice on orders.events")
	}
	if n := r.s.customer.svc.ConsumerStats().Duplicates; n < 1 {
		r.t.Errorf("the customer consumer skipped %d duplicates", n)
	}
}

// failOffsetCommits makes Kafka fail every OffsetCommit of group, with an
// error or by closing the connection, until restartCustomerAfterFailedCommits.
func (r *faultRun) failOffsetCommits(group string, lose bool) {
	r.failCommits.Store(true)
	c := r.cluster
	c.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		oc := req.(*kmsg.OffsetCommitRequest)
		if !r.failCommits.Load() || oc.Group != group {
			return nil, nil, false
		}
		r.commitsFailed.Add(1)
		if lose {
			return nil, errors.New("fault injection: connection lost"), true
		}
		resp := oc.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range oc.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.RequestTimedOut.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
}

// restartCustomerAfterFailedCommits waits until the customer service has
// applied every record of orders.events, none of whose offsets Kafka has,
// stops it (its last commit fails too, as if it had crashed), lets the
// commits through again and starts it anew.
func (r *faultRun) restartCustomerAfterFailedCommits() {
	s := r.s
	testenv.WaitFor(r.t, 20*time.Second, "the order service to publish every event", func() bool {
		return count(r.t, s.orderPool, "outbox") == 0
	})
	r.redelivered = int(s.kafka.Count(r.t, s.ordersTopic))
	testenv.WaitFor(r.t, 20*time.Second, "the customer service to apply every order event", func() bool {
		st := s.customer.svc.ConsumerStats()
		return int(st.Applied+st.Duplicates+st.DeadLettered) >= r.redelivered
	})
	s.customer.stop()
	r.failCommits.Store(false)
	s.startCustomer()
	testenv.WaitFor(r.t, 20*time.Second, "the restarted customer service to get every order event again", func() bool {
		st := s.customer.svc.ConsumerStats()
		return int(st.Applied+st.Duplicates+st.DeadLettered) >= r.redelivered
	})
}

// money parses an amount of the API ("12.34").
func money(t *testing.T, amount string) events.Money {
	t.Helper()
	m, err := events.ParseMoney(amount)
	if err != nil {
		t.Fatalf("amount %q: %v", amount, err)
	}
	return m
}
