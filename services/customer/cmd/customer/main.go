// Command customer runs the customer service. Configuration comes from the
// environment: DATABASE_URL, KAFKA_BROKERS, HTTP_ADDR (see customer.Config).
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
	"github.com/eventsaga/eventsaga/services/customer"
)

func main() {
	log, err := platform.Logger(os.Getenv, os.Stderr) // LOG_FORMAT, LOG_LEVEL
	log = log.With("service", "customer")
	if err == nil {
		err = run(log)
	}
	if err != nil {
		log.Error("customer service failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := customer.LoadConfig(os.Getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	tp, stopTracing, err := tracing.Start(ctx, "customer", os.Getenv, log) // OTEL_EXPORTER_OTLP_ENDPOINT and the other OTEL_* variables
	if err != nil {
		return err
	}
	defer stopTracing()
	cfg.TracerProvider = tp
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return err
	}
	svc, err := customer.New(ctx, cfg, log)
	if err != nil {
		ln.Close()
		return err
	}
	return svc.Serve(ctx, ln)
}
