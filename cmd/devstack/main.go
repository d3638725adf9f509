// Command devstack runs the whole system on one machine without Docker: the
// dev Kafka broker (unless KAFKA_BROKERS names a cluster to use) and each
// service as processes of their own, each service
// with its own database on the Postgres of DATABASE_URL (created if missing).
// With no DATABASE_URL it uses the Postgres that answers on 127.0.0.1:5432,
// and when none does it starts one (devpostgres: an embedded PostgreSQL with
// its data in -pgdata). It prints where everything listens and, on Ctrl-C,
// stops the services first (they drain and commit), then the broker (it saves
// its data), then the Postgres it started.
//
// It runs the binaries in -bin (make run builds them there).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventsaga/eventsaga/internal/pgdb"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "devstack")
	if err := run(log); err != nil {
		log.Error("devstack failed", "err", err)
		os.Exit(1)
	}
}

// service is one process of the stack.
type service struct {
	name  string
	addr  string // host:port it serves on
	env   []string
	ready string        // URL that answers 200 when it is up; "" for the broker
	wait  time.Duration // how long it may take to come up; 60 s if 0
	cmd   *exec.Cmd
	done  chan error
}

func run(log *slog.Logger) error {
	bin := flag.String("bin", "bin", "directory holding the devbroker, order, customer and projector binaries")
	data := flag.String("data", ".devbroker", "the broker's data directory")
	kafkaPort := flag.Int("kafka-port", 9092, "port of the dev broker on 127.0.0.1")
	dbPrefix := flag.String("db-prefix", "", "prefix of the services' database names (orders, customers, readmodel)")
	pgData := flag.String("pgdata", ".postgres", "folder of the embedded Postgres started when DATABASE_URL is unset and none answers on 127.0.0.1:5432")
	flag.Parse()
	// KAFKA_BROKERS names a cluster to use (make kafka, or any other);
	// without it the stack runs its own dev broker.
	brokers := os.Getenv("KAFKA_BROKERS")
	var broker *service
	if brokers == "" {
		brokers = "127.0.0.1:" + strconv.Itoa(*kafkaPort)
		broker = &service{name: "devbroker", addr: brokers}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	server, startPostgres := os.Getenv("DATABASE_URL"), false
	if server == "" {
		server = pgdb.Local
		if c, err := net.DialTimeout("tcp", "127.0.0.1:5432", time.Second); err == nil {
			c.Close()
			log.Info("DATABASE_URL is unset: using the Postgres on 127.0.0.1:5432", "url", pgdb.Redact(server))
		} else {
			startPostgres = true
		}
	}

	svcs := []*service{
		{name: "customer", addr: "127.0.0.1:8081", ready: "http://127.0.0.1:8081/readyz",
			env: []string{"DATABASE_URL=" + pgdb.WithDatabase(server, *dbPrefix+"customers"), "PPROF_ADDR=127.0.0.1:6061"}},
		{name: "order", addr: "127.0.0.1:8080", ready: "http://127.0.0.1:8080/readyz",
			env: []string{"DATABASE_URL=" + pgdb.WithDatabase(server, *dbPrefix+"orders"), "PPROF_ADDR=127.0.0.1:6060"}},
		{name: "projector", addr: "127.0.0.1:8082", ready: "http://127.0.0.1:8082/readyz",
			env: []string{"DATABASE_URL=" + pgdb.WithDatabase(server, *dbPrefix+"readmodel"), "PPROF_ADDR=127.0.0.1:6062"}},
	}
	procs := svcs // the Go processes devstack starts
	if broker != nil {
		procs = append([]*service{broker}, svcs...)
	}
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		// Four Go processes share this machine's cores with Postgres. Each
		// running as many threads as there are cores spins them looking for
		// work between the many small wake-ups of a message pipeline: at
		// 250 sagas/s that took the machine from about half busy to nearly
		// saturated, and doubled the saga latency. None of them needs more
		// than one core here; the kernel spreads the processes.
		for _, s := range procs {
			s.env = append(s.env, "GOMAXPROCS=1")
		}
	}
	for _, s := range procs {
		if c, err := net.DialTimeout("tcp", s.addr, 200*time.Millisecond); err == nil {
			c.Close()
			return fmt.Errorf("%s: %s is already taken; is the stack already running?", s.name, s.addr)
		}
	}

	embedded := ""
	if startPostgres {
		pg := &service{name: "postgres", addr: "127.0.0.1:5432", wait: 5 * time.Minute}
		log.Info("DATABASE_URL is unset and nothing answers on 127.0.0.1:5432: starting an embedded PostgreSQL (the first start fetches it)", "folder", *pgData)
		if err := start(pg, filepath.Join(*bin, "devpostgres"), "-port", "5432", "-dir", *pgData); err != nil {
			return err
		}
		defer stopAll(log, pg) // last: the services and the broker stop first
		if err := waitPostgres(ctx, pg, server); err != nil {
			return err
		}
		embedded = fmt.Sprintf("  (embedded, data in %s; psql '%s')", filepath.Join(*pgData, "data"), server)
	}
	kafka := fmt.Sprintf("%s  (KAFKA_BROKERS)", brokers)
	if broker != nil {
		if err := start(broker, filepath.Join(*bin, "devbroker"), "-port", strconv.Itoa(*kafkaPort), "-data", *data); err != nil {
			return err
		}
		defer stopAll(log, broker)
		if err := waitTCP(ctx, broker); err != nil {
			return err
		}
		kafka = fmt.Sprintf("%s  (dev broker, data in %s)", brokers, *data)
	}
	for _, s := range svcs {
		s.env = append(s.env, "KAFKA_BROKERS="+brokers, "HTTP_ADDR="+s.addr)
		if err := start(s, filepath.Join(*bin, s.name)); err != nil {
			return err
		}
		defer stopAll(log, s)
	}
	for _, s := range svcs {
		if err := waitReady(ctx, s); err != nil {
			return err
		}
	}
	fmt.Printf("\nThe stack is running (Ctrl-C stops it):\n")
	fmt.Printf("  kafka      %s\n", kafka)
	fmt.Printf("  postgres   %s%s\n", pgdb.Redact(server), embedded)
	for _, s := range svcs {
		fmt.Printf("  %-10s http://%s\n", s.name, s.addr)
	}
	fmt.Println()

	select {
	case <-ctx.Done():
		log.Info("stopping the stack")
		return nil
	case err := <-exited(procs):
		return err
	}
}

func start(s *service, path string, args ...string) error {
	s.cmd = exec.Command(path, args...)
	s.cmd.Env = append(os.Environ(), s.env...)
	// Its own process group: Ctrl-C reaches devstack alone, which stops
	// the children in order.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	s.cmd.Stderr = s.cmd.Stdout
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start %s (did make build it?): %w", s.name, err)
	}
	go prefix(s.name, out)
	s.done = make(chan error, 1)
	go func() { s.done <- s.cmd.Wait() }()
	return nil
}

// prefix copies a child's output to ours, each line marked with its name.
func prefix(name string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fmt.Printf("%-10s| %s\n", name, sc.Text())
	}
}

// stopAll sends SIGTERM and waits; after 30s it kills.
func stopAll(log *slog.Logger, s *service) {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			log.Warn("stopped with an error", "process", s.name, "err", err)
		}
	case <-time.After(30 * time.Second):
		log.Warn("did not stop in 30s; killing", "process", s.name)
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// exited reports the first child to exit on its own.
func exited(svcs []*service) <-chan error {
	out := make(chan error, 1)
	var once sync.Once
	for _, s := range svcs {
		go func() {
			err := <-s.done
			s.done <- err // for stopAll
			once.Do(func() { out <- fmt.Errorf("%s exited: %v", s.name, err) })
		}()
	}
	return out
}

func waitTCP(ctx context.Context, s *service) error {
	return poll(ctx, s, func() bool {
		c, err := net.DialTimeout("tcp", s.addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func waitPostgres(ctx context.Context, s *service, url string) error {
	return poll(ctx, s, func() bool {
		c, err := pgx.Connect(ctx, url)
		if err == nil {
			c.Close(ctx)
		}
		return err == nil
	})
}

func waitReady(ctx context.Context, s *service) error {
	return poll(ctx, s, func() bool {
		resp, err := http.Get(s.ready)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func poll(ctx context.Context, s *service, up func() bool) error {
	wait := s.wait
	if wait == 0 {
		wait = 60 * time.Second
	}
	deadline := time.Now().Add(wait)
	for !up() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("%s exited while starting: %v", s.name, err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not come up within %s", s.name, wait)
		}
	}
	return nil
}
