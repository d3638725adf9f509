// Command devbroker runs a one-broker Kafka (franz-go's kfake) on
// 127.0.0.1 for development, with its data kept in a directory so that topics,
// records and consumer offsets survive a restart. It creates the system's
// topics, orders.events and customers.events, with 12 partitions each.
//
// It speaks the Kafka protocol, so kcat and any other client work against it;
// it is not a replacement for a real cluster (deploy/compose.yml runs one).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/eventsaga/eventsaga/internal/devbroker"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("devbroker failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	port := flag.Int("port", 9092, "port to listen on, on 127.0.0.1")
	dataDir := flag.String("data", ".devbroker", "directory that keeps the broker's data across restarts")
	topics := flag.String("topics", "orders.events,customers.events", "comma-separated topics to create if missing")
	partitions := flag.Int("partitions", 12, "partitions of each created topic")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	c, err := devbroker.Start(devbroker.Config{
		Port: *port, DataDir: *dataDir, Topics: strings.Split(*topics, ","),
		Partitions: int32(*partitions), Logger: log,
	})
	if err != nil {
		return err
	}
	fmt.Printf("dev broker listening on %s (data in %s)\n", strings.Join(c.ListenAddrs(), ","), *dataDir)
	<-ctx.Done()
	log.Info("dev broker stopping; saving data")
	c.Close()
	return nil
}
