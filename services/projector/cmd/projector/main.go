// Command projector runs the query side: it projects orders.events and
// customers.events into read models and serves queries from them.
//
//	projector           serve (configured by DATABASE_URL, KAFKA_BROKERS, HTTP_ADDR)
//	projector rebuild   build the read models afresh from the start of the topics
//	                    beside the running projector, and switch to them when caught up
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/eventsaga/eventsaga/internal/platform"
	"github.com/eventsaga/eventsaga/internal/tracing"
	"github.com/eventsaga/eventsaga/services/projector"
)

func main() {
	log, err := platform.Logger(os.Getenv, os.Stderr) // LOG_FORMAT, LOG_LEVEL
	log = log.With("service", "projector")
	if err == nil {
		err = run(log)
	}
	if err != nil {
		log.Error("projector failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := projector.LoadConfig(os.Getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	tp, stopTracing, err := tracing.Start(ctx, "projector", os.Getenv, log) // OTEL_EXPORTER_OTLP_ENDPOINT and the other OTEL_* variables
	if err != nil {
		return err
	}
	defer stopTracing()
	cfg.TracerProvider = tp
	switch args := os.Args[1:]; {
	case len(args) == 1 && args[0] == "rebuild":
		_, err := projector.Rebuild(ctx, cfg, log, projector.RebuildOptions{Progress: os.Stdout})
		return err
	case len(args) > 0:
		return fmt.Errorf("unknown arguments %q; usage: projector [rebuild]", args)
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return err
	}
	svc, err := projector.New(ctx, cfg, log)
	if err != nil {
		ln.Close()
		return err
	}
	return svc.Serve(ctx, ln)
}
