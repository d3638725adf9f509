package devbroker

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Records and committed group offsets survive a restart on the same data
// directory, and the topics have the partitions asked for.
func TestDataSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, Topics: []string{"orders.events", "customers.events"}, Partitions: 12}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders.events", Key: []byte("k"), Value: []byte("before restart")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	offsets := kadm.Offsets{}
	offsets.Add(kadm.Offset{Topic: "customers.events", Partition: 3, At: 0})
	if _, err := adm.CommitOffsets(ctx, "some-group", offsets); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	c.Close()

	c, err = Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err = kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("orders.events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []*kgo.Record
	for len(got) == 0 && ctx.Err() == nil {
		got = append(got, cl.PollFetches(ctx).Records()...)
	}
	if len(got) != 1 || string(got[0].Value) != "before restart" {
		t.Fatalf("after restart read %d records", len(got))
	}

	adm = kadm.NewClient(cl)
	topics, err := adm.ListTopics(ctx, "orders.events", "customers.events")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"orders.events", "customers.events"} {
		if n := len(topics[name].Partitions); n != 12 {
			t.Errorf("%s has %d partitions, want 12", name, n)
		}
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, "orders.events", "customers.events")
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range rcs {
		for _, c := range rc.Configs {
			if c.Key == "retention.ms" && c.MaybeValue() != "-1" {
				t.Errorf("%s retention.ms = %s, want -1 (every event kept)", rc.Name, c.MaybeValue())
			}
		}
	}
	fetched, err := adm.FetchOffsets(ctx, "some-group")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := fetched.Lookup("customers.events", 3); !ok || o.At != 0 {
		t.Errorf("group offset after restart: %+v, %v", o, ok)
	}
}
