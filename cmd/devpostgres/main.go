// Command devpostgres runs a real PostgreSQL for development on a machine
// that has none (internal/pgembed: the binaries published on Maven Central,
// fetched on first use), on 127.0.0.1, with its data kept in a folder so
// that it survives a restart. make run starts it when DATABASE_URL is unset
// and nothing answers on 127.0.0.1:5432; it runs alone as make devpostgres.
//
// It stops the server on Ctrl-C or SIGTERM, and when it is killed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/eventsaga/eventsaga/internal/pgembed"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("devpostgres failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	port := flag.Int("port", 5432, "port to listen on, on 127.0.0.1")
	dir := flag.String("dir", ".postgres", "folder of the binaries, the data (data/) and the server's logs (data/log/)")
	home := flag.String("home", "", "folder of the data and logs instead of -dir (the binaries stay in -dir)")
	preload := flag.String("preload", "", "shared_preload_libraries of the server (pg_stat_statements for a profile)")
	flag.Parse()
	if *home == "" {
		*home = *dir
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	start, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	began := time.Now()
	s, err := pgembed.Start(start, pgembed.Config{Dir: *dir, Home: *home, Port: *port, Log: os.Stderr, Preload: *preload})
	if err != nil {
		return err
	}
	data, _ := filepath.Abs(filepath.Join(*home, "data"))
	fmt.Printf("PostgreSQL %s (embedded) on 127.0.0.1:%d, ready in %s; data in %s, logs in %s\n",
		pgembed.Version, *port, time.Since(began).Round(10*time.Millisecond), data, filepath.Join(data, "log"))
	fmt.Printf("connect: psql '%s'  (psql: Debian's postgresql-client)\n", s.URL())
	<-ctx.Done()
	log.Info("embedded postgres stopping")
	return s.Stop()
}
