// Package devbroker runs franz-go's kfake as a Kafka broker for development
// and tests on machines without Kafka: one broker on a fixed port, its data
// kept in a directory so that it survives restarts, and the system's topics
// created.
package devbroker

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Config configures the broker.
type Config struct {
	// Port is the port on 127.0.0.1 to listen on; 0 picks a free one.
	Port int
	// DataDir keeps the broker's topics, records and group offsets; empty
	// keeps them in memory only.
	DataDir string
	// Topics are created, with Partitions partitions, unless they exist.
	Topics     []string
	Partitions int32
	Logger     *slog.Logger
}

// Start starts the broker. Close the cluster to stop it; with a DataDir,
// Close writes what is still in memory to disk.
func Start(cfg Config) (*kfake.Cluster, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(cfg.Port),
		kfake.ClusterID("eventsaga-dev"),
		kfake.AllowAutoTopicCreation(),
		kfake.WithLogger(logger{cfg.Logger}),
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("dev broker: %w", err)
	}
	// Seeding applies only to a new data directory; creating each topic
	// also covers a directory from an earlier run that lacks one.
	// Every event kept, as on a real cluster: a rebuild replays from the start.
	keepAll := map[string]string{"retention.ms": "-1"}
	for _, t := range cfg.Topics {
		if err := c.CreateTopic(t, cfg.Partitions, keepAll); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			c.Close()
			return nil, fmt.Errorf("dev broker: create %s: %w", t, err)
		}
	}
	return c, nil
}

// logger passes kfake's warnings and errors to slog.
type logger struct{ log *slog.Logger }

func (l logger) Logf(level kfake.LogLevel, msg string, args ...any) {
	switch level {
	case kfake.LogLevelError:
		l.log.Error(fmt.Sprintf(msg, args...), "component", "kfake")
	case kfake.LogLevelWarn:
		l.log.Warn(fmt.Sprintf(msg, args...), "component", "kfake")
	}
}
