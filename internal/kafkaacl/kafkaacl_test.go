package kafkaacl_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/kafkaacl"
	"github.com/eventsaga/eventsaga/internal/kafkaconn"
	"github.com/eventsaga/eventsaga/internal/testenv"
)

// TestEachPrincipalMayDoItsPartOnly applies the grants to a secured cluster
// (kfake's, or make kafka-secure's with TEST_KAFKA_SECURE) and tries, as each
// service's principal, what its part of the saga needs and what it must not
// do.
func TestEachPrincipalMayDoItsPartOnly(t *testing.T) {
	k := testenv.NewSecureKafka(t)
	n := kafkaacl.Names{
		OrdersTopic: k.Topic("orders.events"), CustomersTopic: k.Topic("customers.events"),
		OrderGroup: k.Topic("order-service"), CustomerGroup: k.Topic("customer-service"), ProjectorGroup: k.Topic("projector"),
	}
	u := kafkaacl.Users{Order: k.Topic("order"), Customer: k.Topic("customer"), Projector: k.Topic("projector")}
	conns := apply(t, k, n, u)
	// Something to read on each topic.
	admin := k.Client(t)
	for _, topic := range []string{n.OrdersTopic, n.CustomersTopic} {
		if err := admin.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatalf("admin writes %s: %v", topic, err)
		}
	}
	projectorGen := n.ProjectorGroup + ".g1"

	type try struct {
		what string
		do   func(kafkaconn.Config) error
		ok   bool
	}
	write := func(topic string, ok bool) try {
		return try{"write " + topic, func(c kafkaconn.Config) error { return produce(t, k, c, topic) }, ok}
	}
	read := func(topic, group string, ok bool) try {
		return try{"read " + topic + " as " + group, func(c kafkaconn.Config) error { return consume(t, k, c, topic, group) }, ok}
	}
	create := func(topic string, ok bool) try {
		return try{"create " + topic, func(c kafkaconn.Config) error { return createTopic(t, k, c, topic) }, ok}
	}
	for _, c := range []struct {
		user  string
		tries []try
	}{
		{u.Order, []try{
			write(n.OrdersTopic, true), read(n.CustomersTopic, n.OrderGroup, true), write(kafkaacl.DLQTopic(n.OrderGroup), true),
			write(n.CustomersTopic, false), read(n.OrdersTopic, n.OrderGroup, false), read(n.CustomersTopic, n.CustomerGroup, false),
			create(k.Topic("anything"), false),
		}},
		{u.Customer, []try{
			write(n.CustomersTopic, true), read(n.OrdersTopic, n.CustomerGroup, true), write(kafkaacl.DLQTopic(n.CustomerGroup), true),
			write(n.OrdersTopic, false), read(n.CustomersTopic, n.CustomerGroup, false), read(n.OrdersTopic, n.OrderGroup, false),
			write(kafkaacl.DLQTopic(n.OrderGroup), false),
		}},
		{u.Projector, []try{
			read(n.OrdersTopic, projectorGen, true), read(n.CustomersTopic, projectorGen, true),
			create(kafkaacl.DLQTopic(projectorGen), true), write(kafkaacl.DLQTopic(projectorGen), true),
			write(n.OrdersTopic, false), write(n.CustomersTopic, false), read(n.OrdersTopic, n.OrderGroup, false),
			create(k.Topic("dlq.other"), false),
		}},
	} {
		for _, tr := range c.tries {
			t.Run(c.user+" may "+map[bool]string{true: "", false: "not "}[tr.ok]+tr.what, func(t *testing.T) {
				err := tr.do(conns[c.user])
				switch {
				case tr.ok && err != nil:
					t.Fatalf("refused: %v", err)
				case !tr.ok && err == nil:
					t.Fatal("allowed")
				case !tr.ok && !denied(err):
					t.Fatalf("failed, but not for want of a permission: %v", err)
				}
			})
		}
	}
}

// TestGrants pins the table to what docs/operations.md shows.
func TestGrants(t *testing.T) {
	var lines []string
	for _, g := range kafkaacl.Grants(kafkaacl.DefaultNames(), kafkaacl.Users{Order: "order", Customer: "customer", Projector: "projector"}) {
		lines = append(lines, g.String())
	}
	want := `User:order WRITE topic orders.events
User:order READ topic customers.events
User:order READ group order-service
User:order WRITE topic dlq.order-service
User:customer WRITE topic customers.events
User:customer READ topic orders.events
User:customer READ group customer-service
User:customer WRITE topic dlq.customer-service
User:projector READ topic orders.events
User:projector READ topic customers.events
User:projector READ group projector.*
User:projector CREATE,WRITE topic dlq.projector.*`
	if got := strings.Join(lines, "\n"); got != want {
		t.Fatalf("grants:\n%s\nwant:\n%s", got, want)
	}
}

// apply sets the cluster up for n and u as the admin, with a random
// password for each user, and returns each user's connection.
func apply(t *testing.T, k *testenv.SecureKafka, n kafkaacl.Names, u kafkaacl.Users) map[string]kafkaconn.Config {
	t.Helper()
	passwords := map[string]string{u.Order: rand.Text(), u.Customer: rand.Text(), u.Projector: rand.Text()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := kafkaacl.Apply(ctx, k.Client(t), n, passwords, kafkaacl.Grants(n, u)); err != nil {
		t.Fatalf("apply: %v", err)
	}
	t.Cleanup(func() { kafkaacl.Forget(context.Background(), k.Client(t), u) })
	conns := map[string]kafkaconn.Config{}
	for user, pw := range passwords {
		conns[user] = k.User(user, pw)
	}
	return conns
}

func client(t *testing.T, k *testenv.SecureKafka, c kafkaconn.Config, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	conn, err := c.Opts()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(append(conn, kgo.SeedBrokers(k.Brokers...), kgo.RecordDeliveryTimeout(10*time.Second)), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func produce(t *testing.T, k *testenv.SecureKafka, c kafkaconn.Config, topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return client(t, k, c).ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte("v")}).FirstErr()
}

// consume reads a record of topic and commits its offset as group: what a
// service's consumer does.
func consume(t *testing.T, k *testenv.SecureKafka, c kafkaconn.Config, topic, group string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cl := client(t, k, c, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var rec *kgo.Record
	for rec == nil {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fs.Err(); err != nil {
			return err
		}
		if rs := fs.Records(); len(rs) > 0 {
			rec = rs[0]
		}
	}
	offsets := kadm.Offsets{}
	offsets.AddOffset(rec.Topic, rec.Partition, rec.Offset+1, -1)
	resp, err := kadm.NewClient(cl).CommitOffsets(ctx, group, offsets)
	if err != nil {
		return err
	}
	return resp.Error()
}

func createTopic(t *testing.T, k *testenv.SecureKafka, c kafkaconn.Config, topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(client(t, k, c)).CreateTopics(ctx, 1, 1, nil, topic)
	if err != nil {
		return err
	}
	r, err := resp.On(topic, nil)
	if err != nil {
		return err
	}
	return r.Err
}

func denied(err error) bool {
	return errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.GroupAuthorizationFailed) ||
		errors.Is(err, kerr.ClusterAuthorizationFailed)
}
