package e2e

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

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
	osvc, err := order.New(context.Background(), s.base(s.orderDB, "order-service"), testenv.Logger(t))
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
