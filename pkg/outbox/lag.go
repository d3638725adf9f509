package outbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Lag is, per topic and partition, how many records a consumer group has
// not committed yet.
type Lag map[string]map[int32]int64

// Total is the sum of the lag of every partition.
func (l Lag) Total() int64 {
	var n int64
	for _, ps := range l {
		for _, v := range ps {
			n += v
		}
	}
	return n
}

// GroupLag measures group's lag on topics: end offsets minus committed
// offsets, counting a partition the group never committed from its start.
// Unlike kadm's Lag it needs no live group member, so it also measures a
// group that has not joined yet.
func GroupLag(ctx context.Context, cl *kgo.Client, group string, topics ...string) (Lag, error) {
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("end offsets: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("start offsets: %w", err)
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = committed.Error()
	}
	if errors.Is(err, kerr.GroupIDNotFound) {
		// A group that never committed, as kfake answers for it: all
		// its partitions are to be read from their start.
		committed, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("committed offsets of %s: %w", group, err)
	}
	lag := Lag{}
	ends.Each(func(end kadm.ListedOffset) {
		at := int64(0)
		if s, ok := starts.Lookup(end.Topic, end.Partition); ok {
			at = s.Offset
		}
		if c, ok := committed.Lookup(end.Topic, end.Partition); ok && c.At >= 0 {
			at = c.At
		}
		if lag[end.Topic] == nil {
			lag[end.Topic] = map[int32]int64{}
		}
		lag[end.Topic][end.Partition] = max(end.Offset-at, 0)
	})
	return lag, nil
}
