package outbox

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/eventsaga/eventsaga/pkg/events"
)

// kcat (librdkafka) is a client that shares no code with ours. It reads back
// what the relay published, with the right key and value; and a record that
// kcat itself produces with the same key, partitioned by librdkafka's murmur2
// (the Java client's partitioner), lands in the same partition as the
// relay's. CI sets REQUIRE_KCAT=1 so that a missing kcat fails there.
func TestKcatReadsWhatRelayPublished(t *testing.T) {
	if _, err := exec.LookPath("kcat"); err != nil {
		if os.Getenv("REQUIRE_KCAT") != "" {
			t.Fatal("kcat is not installed (apt-get install kcat)")
		}
		t.Skip("kcat is not installed")
	}
	e := newEnv(t, 12)
	const keys = 40
	for i := range keys {
		e.commit(t, e.message(t, keyOf(i), 1))
	}
	e.startRelay(t, RelayConfig{PollInterval: 20 * time.Millisecond})
	waitFor(t, 10*time.Second, "the outbox to drain", func() bool { return e.outboxRows(t) == 0 })

	broker := e.kafka.Brokers[0]
	relayed := map[string]string{} // key → partition, as kcat reads them
	out := kcat(t, "-b", broker, "-C", "-t", e.topic, "-o", "beginning", "-e", "-q", "-f", "%k\t%p\t%s\n")
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		key, rest, _ := strings.Cut(line, "\t")
		partition, value, _ := strings.Cut(rest, "\t")
		env, err := events.ParseEnvelope([]byte(value))
		if err != nil || env.AggregateID.String() != key {
			t.Fatalf("kcat read key %s with value %s (%v)", key, value, err)
		}
		relayed[key] = partition
	}
	if len(relayed) != keys {
		t.Fatalf("kcat read %d keys, want %d:\n%s", len(relayed), keys, out)
	}

	// kcat produces the same keys to a second 12-partition topic.
	check := e.kafka.Topic("partitioner.check")
	e.kafka.CreateTopics(t, 12, check)
	var in bytes.Buffer
	for key := range relayed {
		fmt.Fprintf(&in, "%s\tx\n", key)
	}
	kcatIn(t, &in, "-b", broker, "-P", "-t", check, "-K", "\t", "-X", "partitioner=murmur2_random")
	out = kcat(t, "-b", broker, "-C", "-t", check, "-o", "beginning", "-e", "-q", "-f", "%k\t%p\n")
	partitions := map[string]bool{}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		key, partition, _ := strings.Cut(line, "\t")
		if relayed[key] != partition {
			t.Errorf("key %s: relay put it in partition %s, librdkafka's murmur2 in %s", key, relayed[key], partition)
		}
		partitions[partition] = true
		n++
	}
	if n != keys || len(partitions) < 6 {
		t.Errorf("kcat produced %d records over %d partitions; the check needs all %d keys spread out", n, len(partitions), keys)
	}
}

func kcat(t *testing.T, args ...string) string {
	t.Helper()
	return kcatIn(t, nil, args...)
}

func kcatIn(t *testing.T, stdin *bytes.Buffer, args ...string) string {
	t.Helper()
	cmd := exec.Command("kcat", args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("kcat %v: %v\n%s", args, err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("kcat %v did not finish\n%s", args, stderr.String())
	}
	return stdout.String()
}
