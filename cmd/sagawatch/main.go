// Command sagawatch prints the events on the topics as they arrive, decoded,
// one line each, tagged with their saga (correlation_id); and when a saga is
// decided (approved, rejected, cancelled), the saga's story on one line. It
// is how to watch the system work without a Kafka CLI.
//
//	sagawatch                 # from now on
//	sagawatch -from-start     # everything on the topics
//	sagawatch -stories        # only the sagas' stories
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/kafkaconn"
	"github.com/eventsaga/eventsaga/internal/sagalog"
	"github.com/eventsaga/eventsaga/pkg/events"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sagawatch:", err)
		os.Exit(1)
	}
}

func run() error {
	brokers := flag.String("brokers", env("KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka seed brokers, comma-separated")
	topics := flag.String("topics", "orders.events,customers.events", "topics to watch")
	fromStart := flag.Bool("from-start", false, "print what is on the topics already, from their start")
	stories := flag.Bool("stories", false, "print only the sagas' stories, not every event")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := kgo.NewOffset().AtEnd()
	if *fromStart {
		start = kgo.NewOffset().AtStart()
	}
	conn, err := kafkaconn.FromEnv(os.Getenv) // a secured cluster's KAFKA_SASL_*, KAFKA_TLS*
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(append(conn, kgo.SeedBrokers(strings.Split(*brokers, ",")...),
		kgo.ConsumeTopics(strings.Split(*topics, ",")...), kgo.ConsumeResetOffset(start))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	sagas := sagalog.NewSagas(os.Stdout)
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fs.EachError(func(t string, p int32, err error) { fmt.Fprintf(os.Stderr, "%s/%d: %v\n", t, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			env, err := events.ParseEnvelope(r.Value)
			if err != nil {
				fmt.Printf("%s/%d@%d: not an event: %v\n", r.Topic, r.Partition, r.Offset, err)
				return
			}
			if !*stories {
				fmt.Println(sagalog.Line(r.Topic, env))
			}
			sagas.Add(env)
		})
	}
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
