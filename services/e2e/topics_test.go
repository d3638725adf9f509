package e2e

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/eventsaga/eventsaga/internal/testenv"
	"github.com/eventsaga/eventsaga/services/order"
	"github.com/eventsaga/eventsaga/services/projector"
)

// A service refuses to run on a topic whose partition count is not the
// system's: its keys would land on other partitions than the events already
// there. (pkg/outbox's tests show how missing topics are created.)
func TestServicesRefuseATopicOfAnotherPartitionCount(t *testing.T) {
	s := &system{t: t, kafka: testenv.NewKafka(t)}
	s.ordersTopic, s.customersTopic = s.kafka.Topic("orders.events"), s.kafka.Topic("customers.events")
	s.kafka.CreateTopics(t, 3, s.customersTopic) // made by hand, wrongly
	s.orderDB, s.readDB = testenv.Database(t), testenv.Database(t)

	serveOnce := func(name string, run func(context.Context, net.Listener) error) error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = run(ctx, ln)
		if ctx.Err() != nil {
			t.Fatalf("%s ran on a topic of 3 partitions until the test gave up", name)
		}
		return err
	}
	osvc, err := order.New(context.Background(), order.Config{Config: s.base(s.orderDB, "order-service")}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	psvc, err := projector.New(context.Background(), s.base(s.readDB, "projector"), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	for name, run := range map[string]func(context.Context, net.Listener) error{"order": osvc.Serve, "projector": psvc.Serve} {
		err := serveOnce(name, run)
		if err == nil || !strings.Contains(err.Error(), s.customersTopic+" has 3 partitions") {
			t.Errorf("%s on a topic of 3 partitions: %v", name, err)
		}
	}
}

// A service started before its brokers does not fail: /readyz says what
// is missing, and once a broker answers the service creates its topics and
// becomes ready, by itself.
func TestServiceWaitsForKafka(t *testing.T) {
	testenv.NeedsKfake(t, "a broker started on a port chosen in advance")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	s := &system{t: t, kafka: &testenv.Kafka{Brokers: []string{addr}}}
	s.ordersTopic, s.customersTopic = "orders.events", "customers.events"
	s.orderDB = testenv.Database(t)
	s.startOrder()

	for range 3 { // a few seconds: the consumer retries meanwhile
		status, body, _ := send(t, "GET", s.order.url+"/readyz", "")
		if status != 503 || !strings.Contains(string(body), addr) {
			t.Fatalf("/readyz with no broker: %d %s; want 503 naming %s", status, body, addr)
		}
		time.Sleep(time.Second)
	}

	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	testenv.WaitFor(t, 30*time.Second, "the service to be ready once the broker answers", func() bool {
		status, _ := tryCall(t, s.order.url+"/readyz")
		return status == 200
	})
	for _, topic := range []string{"orders.events", "customers.events"} {
		if n := s.kafka.Partitions(t, topic); n != 12 {
			t.Errorf("%s: %d partitions, want 12 (created by the service)", topic, n)
		}
	}
}
