package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Partitions is how many partitions the system's topics have. A record's
// partition is murmur2(key) modulo this count, so it is fixed for the life of
// a topic: a topic with another count would put an aggregate's new events on
// another partition than its old ones.
const Partitions = 12

// ErrPartitionCount is the error of a topic that exists with another
// partition count than Partitions: no retry can mend it.
var ErrPartitionCount = errors.New("topic has another partition count than this system's")

// EnsureTopics makes sure topics exist as a real cluster needs them,
// creating those that are missing: Partitions partitions; replication factor
// min(3, brokers), with min.insync.replicas 2 where it is 3, so that an
// acknowledged event survives the loss of a broker; and every event kept
// (retention.ms -1): a projector's rebuild replays the topics from the start.
// A topic that exists with another partition count is an error: no service
// may run on it. Settings of topics that exist are left as they are.
func EnsureTopics(ctx context.Context, cl *kgo.Client, topics ...string) error {
	adm := kadm.NewClient(cl)
	brokers, err := adm.ListBrokers(ctx)
	if err != nil {
		return fmt.Errorf("list brokers: %w", err)
	}
	rf := int16(min(3, len(brokers)))
	configs := map[string]*string{"retention.ms": ptr("-1")}
	if rf == 3 {
		configs["min.insync.replicas"] = ptr("2")
	}

	created := false
	for attempt := 0; ; attempt++ {
		counts, err := partitionCounts(ctx, cl, topics)
		if err != nil {
			return err
		}
		var missing []string
		for _, t := range topics {
			n, ok := counts[t]
			if !ok {
				missing = append(missing, t)
				continue
			}
			if n != Partitions {
				return fmt.Errorf("%w: topic %s has %d partitions; this system needs %d (a key's partition depends on the count, "+
					"so an aggregate's events would be split across partitions and lose their order): "+
					"use another topic name, or recreate the topic with %d partitions", ErrPartitionCount, t, n, Partitions, Partitions)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if created {
			// Another service created it at the same time; a broker may not
			// know it yet.
			if attempt > 50 {
				return fmt.Errorf("topics %v still missing 10 s after another client created them", missing)
			}
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		created = true
		resp, err := adm.CreateTopics(ctx, Partitions, rf, configs, missing...)
		if err != nil {
			return fmt.Errorf("create topics %v: %w", missing, err)
		}
		var raced []string
		for _, c := range resp {
			switch {
			case errors.Is(c.Err, kerr.TopicAlreadyExists):
				raced = append(raced, c.Topic) // check what the other client made
			case c.Err != nil:
				return fmt.Errorf("create topic %s (%d partitions, replication factor %d): %w", c.Topic, Partitions, rf, c.Err)
			}
		}
		if len(raced) == 0 {
			return nil
		}
		topics = raced
	}
}

// AwaitTopics is EnsureTopics until it succeeds: while Kafka does not
// answer it logs why (the error names the broker's address) and tries again,
// every few seconds, so that a service started before its brokers waits for
// them instead of failing. It gives up only when ctx ends, or on a topic of
// another partition count (ErrPartitionCount).
func AwaitTopics(ctx context.Context, cl *kgo.Client, log *slog.Logger, topics ...string) error {
	backoff := time.Second
	for {
		err := EnsureTopics(ctx, cl, topics...)
		if err == nil || errors.Is(err, ErrPartitionCount) || ctx.Err() != nil {
			return err
		}
		log.Warn("kafka topics not ready; trying again", "topics", topics, "in", backoff, "err", err)
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// partitionCounts asks a broker how many partitions each topic has, leaving
// out the topics it does not know. It bypasses the client's metadata cache,
// which would go on saying for seconds that a topic just made is missing.
func partitionCounts(ctx context.Context, cl *kgo.Client, topics []string) (map[string]int, error) {
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("topic metadata: %w", err)
	}
	counts := make(map[string]int, len(topics))
	for _, t := range resp.Topics {
		err := kerr.ErrorForCode(t.ErrorCode)
		switch {
		case t.Topic == nil || errors.Is(err, kerr.UnknownTopicOrPartition):
		case err != nil:
			return nil, fmt.Errorf("topic %s: %w", *t.Topic, err)
		default:
			counts[*t.Topic] = len(t.Partitions)
		}
	}
	return counts, nil
}

func ptr(s string) *string { return &s }
