package e2e

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/kafkaacl"
	"github.com/eventsaga/eventsaga/internal/kafkaconn"
	"github.com/eventsaga/eventsaga/internal/testenv"
)

// withSecureKafka runs the services on k, each as a principal of its own
// with the grants of package kafkaacl (applied by the admin before they
// start), over TLS with SCRAM-SHA-512. It returns each service's connection
// by its group's plain name, filled once the system starts.
func withSecureKafka(k *testenv.SecureKafka) (option, map[string]kafkaconn.Config) {
	conns := map[string]kafkaconn.Config{}
	return func(s *system) {
		s.kafka = k.Kafka
		s.beforeServices = append(s.beforeServices, func() {
			n := kafkaacl.Names{
				OrdersTopic: s.ordersTopic, CustomersTopic: s.customersTopic,
				OrderGroup: s.group("order-service"), CustomerGroup: s.group("customer-service"), ProjectorGroup: s.group("projector"),
			}
			u := kafkaacl.Users{Order: k.Topic("order"), Customer: k.Topic("customer"), Projector: k.Topic("projector")}
			pw := map[string]string{u.Order: rand.Text(), u.Customer: rand.Text(), u.Projector: rand.Text()}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := kafkaacl.Apply(ctx, k.Client(s.t), n, pw, kafkaacl.Grants(n, u)); err != nil {
				s.t.Fatalf("kafka grants: %v", err)
			}
			s.t.Cleanup(func() {
				if err := kafkaacl.Forget(context.Background(), k.Client(s.t), u); err != nil {
					s.t.Logf("forget the test's principals: %v", err)
				}
			})
			conns["order-service"] = k.User(u.Order, pw[u.Order])
			conns["customer-service"] = k.User(u.Customer, pw[u.Customer])
			conns["projector"] = k.User(u.Projector, pw[u.Projector])
			s.kafkaConn = func(group string) kafkaconn.Config {
				c, ok := conns[group]
				if !ok {
					s.t.Fatalf("no Kafka principal for %s", group)
				}
				return c
			}
		})
	}, conns
}

// TestSagaOnASecuredKafka runs sagas end to end on a cluster that takes TLS
// and SASL only and authorizes with ACLs (kfake's, or make kafka-secure's
// with TEST_KAFKA_SECURE), each service as its own principal; then shows
// that the customer service's principal cannot write orders.events, nor the
// order service's customers.events.
func TestSagaOnASecuredKafka(t *testing.T) {
	k := testenv.NewSecureKafka(t)
	opt, conns := withSecureKafka(k)
	s := startSystem(t, opt)

	approved := s.register("Ada", "100.00")
	o1 := s.place(approved, 3, "10.00")
	s.awaitStatus(o1, "APPROVED")
	s.awaitSaga(o1, []string{"OrderCreated", "OrderApproved"}, []string{"CreditReserved", "CreditSettled"})
	o2 := s.place(approved, 1, "80.00")
	s.awaitStatus(o2, "REJECTED")
	s.awaitSaga(o2, []string{"OrderCreated", "OrderRejected"}, []string{"CreditReservationFailed"})
	var v orderView
	mustCall(t, http.StatusOK, &v, http.MethodPost, s.order.url+"/orders/"+o1.String()+"/cancel", "")
	s.awaitSaga(o1, []string{"OrderCreated", "OrderApproved", "OrderCancelled"}, []string{"CreditReserved", "CreditSettled", "CreditReleased"})
	// The projector read both topics as its principal.
	mustCall(t, http.StatusOK, nil, http.MethodGet, s.projector.url+"/orders/"+o1.String()+"?min_version=3", "")
	mustCall(t, http.StatusOK, nil, http.MethodGet, s.projector.url+"/orders/"+o2.String()+"?min_version=2", "")

	forged := []byte(`{"event_id":"` + uuid.NewString() + `","event_type":"OrderApproved"}`)
	for _, c := range []struct {
		who, topic string
	}{
		{"customer-service", s.ordersTopic},
		{"order-service", s.customersTopic},
		{"projector", s.ordersTopic},
	} {
		t.Run(c.who+" may not write "+c.topic, func(t *testing.T) {
			conn, err := conns[c.who].Opts()
			if err != nil {
				t.Fatal(err)
			}
			cl, err := kgo.NewClient(append(conn, kgo.SeedBrokers(k.Brokers...), kgo.RecordDeliveryTimeout(10*time.Second))...)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			err = cl.ProduceSync(ctx, &kgo.Record{Topic: c.topic, Key: []byte(o1.String()), Value: forged}).FirstErr()
			if !errors.Is(err, kerr.TopicAuthorizationFailed) {
				t.Fatalf("produce: %v; want TOPIC_AUTHORIZATION_FAILED", err)
			}
		})
	}
	// Nothing forged landed: the topics hold the sagas' events only (the
	// harness's record check at cleanup reads them all), and o1's saga is
	// as it was.
	s.awaitSaga(o1, []string{"OrderCreated", "OrderApproved", "OrderCancelled"}, []string{"CreditReserved", "CreditSettled", "CreditReleased"})
}
