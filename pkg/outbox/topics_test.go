package outbox

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/testenv"
)

func kfakeClient(t *testing.T, brokers int) (*kgo.Client, *kadm.Client) {
	t.Helper()
	testenv.NeedsKfake(t, "clusters of 1, 3 and 4 brokers made on the spot")
	c, err := kfake.NewCluster(kfake.NumBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl, kadm.NewClient(cl)
}

// topicConfig is a topic's setting as the cluster reports it.
func topicConfig(t *testing.T, adm *kadm.Client, topic, key string) string {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rc.Configs {
		if c.Key == key {
			return c.MaybeValue()
		}
	}
	return ""
}

// Missing topics are created with the system's partition count, a
// replication factor of min(3, brokers), min.insync.replicas 2 on three
// replicas, and every event kept; a second call changes nothing.
func TestEnsureTopicsCreatesThemAsARealClusterNeedsThem(t *testing.T) {
	for _, tt := range []struct {
		brokers    int
		rf         int
		minInsync  string
		minDefault bool
	}{
		{brokers: 1, rf: 1, minDefault: true},
		{brokers: 3, rf: 3, minInsync: "2"},
		{brokers: 4, rf: 3, minInsync: "2"},
	} {
		cl, adm := kfakeClient(t, tt.brokers)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for range 2 {
			if err := EnsureTopics(ctx, cl, "orders.events", "customers.events"); err != nil {
				t.Fatalf("%d brokers: %v", tt.brokers, err)
			}
		}
		listed, err := adm.ListTopics(ctx, "orders.events", "customers.events")
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"orders.events", "customers.events"} {
			d := listed[name]
			if len(d.Partitions) != Partitions {
				t.Errorf("%d brokers: %s has %d partitions, want %d", tt.brokers, name, len(d.Partitions), Partitions)
			}
			if rf := d.Partitions.NumReplicas(); rf != tt.rf {
				t.Errorf("%d brokers: %s has replication factor %d, want %d", tt.brokers, name, rf, tt.rf)
			}
			if got := topicConfig(t, adm, name, "retention.ms"); got != "-1" {
				t.Errorf("%d brokers: %s retention.ms = %q, want -1", tt.brokers, name, got)
			}
			got := topicConfig(t, adm, name, "min.insync.replicas")
			if !tt.minDefault && got != tt.minInsync {
				t.Errorf("%d brokers: %s min.insync.replicas = %q, want %s", tt.brokers, name, got, tt.minInsync)
			}
			if tt.minDefault && got == "2" {
				t.Errorf("%d brokers: %s min.insync.replicas = 2 on one replica: no write could succeed", tt.brokers, name)
			}
		}
	}
}

// A topic with another partition count would put an aggregate's new events
// on another partition than its old ones: no service may start on it.
func TestEnsureTopicsRefusesAnotherPartitionCount(t *testing.T) {
	cl, adm := kfakeClient(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, "orders.events"); err != nil {
		t.Fatal(err)
	}
	err := EnsureTopics(ctx, cl, "customers.events", "orders.events")
	if err == nil || !strings.Contains(err.Error(), "orders.events has 3 partitions") || !strings.Contains(err.Error(), "needs 12") {
		t.Fatalf("EnsureTopics on a topic of 3 partitions: %v", err)
	}
}
