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
// -instances N runs N instances of each service, on the same databases and
// consumer groups, the second one 3 ports above the first (order 8080, 8083,
// …; customer 8081, 8084, …; projector 8082, 8085, …; -http-port moves them). -restart D restarts
// a service instance that exits D after it did, instead of stopping the
// stack: the chaos check kills instances and lets devstack bring them back.
//
// KAFKA_ENV_DIR names a folder of Kafka settings per service, as make
// kafka-secure writes them (.kafka/secure): each service gets the KAFKA_*
// variables of <dir>/<service>.env and connects as its own principal, and
// the cluster is the files' KAFKA_BROKERS unless KAFKA_BROKERS is set.
//
// Its children never outlive it: each gets SIGTERM when devstack dies, even
// by SIGKILL, so no orphan keeps holding the ports.
//
// It runs the binaries in -bin (make run builds them there).
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventsaga/eventsaga/internal/kafkaconn"
	"github.com/eventsaga/eventsaga/internal/pgdb"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "devstack")
	if err := run(log); err != nil {
		log.Error("devstack failed", "err", err)
		os.Exit(1)
	}
}

// service is one process of the stack, started again if it is restarted.
type service struct {
	name    string
	db      string // its database (the services), for its DATABASE_URL
	addr    string // host:port it serves on
	env     []string
	ready   string        // URL that answers 200 when it is up; "" for the broker
	wait    time.Duration // how long it may take to come up; 60 s if 0
	path    string
	args    []string
	restart time.Duration // > 0: restart it this long after it exits

	mu       sync.Mutex
	p        *proc
	stopping bool
}

// proc is one run of a service's process.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once it has exited; err is set then
	err    error
}

func (s *service) current() *proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p
}

func run(log *slog.Logger) error {
	bin := flag.String("bin", "bin", "directory holding the devbroker, order, customer and projector binaries")
	data := flag.String("data", ".devbroker", "the broker's data directory")
	kafkaPort := flag.Int("kafka-port", 9092, "port of the dev broker on 127.0.0.1")
	httpPort := flag.Int("http-port", 8080, "the first instance's order service port; customer and projector take the next two")
	pprofPort := flag.Int("pprof-port", 6060, "the first order instance's profiling port (customer and projector: the next two); 0: none")
	dbPrefix := flag.String("db-prefix", "", "prefix of the services' database names (orders, customers, readmodel)")
	instances := flag.Int("instances", 1, "instances of each service (ports 3 apart)")
	restart := flag.Duration("restart", 0, "restart a service instance this long after it exits; 0 stops the stack instead")
	pgData := flag.String("pgdata", ".postgres", "folder of the embedded Postgres started when DATABASE_URL is unset and none answers on 127.0.0.1:5432")
	flag.Parse()
	// KAFKA_BROKERS names a cluster to use (make kafka, or any other);
	// without it the stack runs its own dev broker.
	brokers := os.Getenv("KAFKA_BROKERS")
	kafkaEnv, envBrokers, err := kafkaEnvOf(os.Getenv("KAFKA_ENV_DIR"), "order", "customer", "projector")
	if err != nil {
		return err
	}
	if brokers == "" {
		brokers = envBrokers
	}
	var broker *service
	if brokers == "" {
		brokers = "127.0.0.1:" + strconv.Itoa(*kafkaPort)
		broker = &service{name: "devbroker", addr: brokers, path: filepath.Join(*bin, "devbroker")}
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

	// The services export their traces to the Jaeger of make jaeger when
	// it runs (its OTLP/HTTP port answers), unless the OTEL_* variables say
	// where, or that there is to be no tracing.
	traces := "off  (make jaeger before make run exports them to Jaeger)"
	var traceEnv []string
	if endpoint := otelEndpoint(); endpoint != "" {
		traces = endpoint + "  (OTEL_EXPORTER_OTLP_ENDPOINT)"
	} else if os.Getenv("OTEL_SDK_DISABLED") == "" && os.Getenv("OTEL_TRACES_EXPORTER") == "" {
		if c, err := net.DialTimeout("tcp", jaegerOTLP, time.Second); err == nil {
			c.Close()
			traceEnv = []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + jaegerOTLP}
			traces = "http://" + jaegerOTLP + "  (Jaeger: a trace at " + jaegerQuery + "/api/traces/<trace id>)"
		}
	}

	if *instances < 1 || *instances > 9 {
		return fmt.Errorf("-instances %d: want 1 to 9", *instances)
	}
	var svcs []*service
	kinds := []struct {
		name, db string
		offset   int // from -http-port and -pprof-port
	}{{"customer", "customers", 1}, {"order", "orders", 0}, {"projector", "readmodel", 2}}
	for i := range *instances {
		for _, k := range kinds {
			name := k.name
			if *instances > 1 {
				name = fmt.Sprintf("%s-%d", k.name, i+1)
			}
			port := *httpPort + k.offset + 3*i
			s := &service{
				name: name, db: *dbPrefix + k.db, addr: fmt.Sprintf("127.0.0.1:%d", port), ready: fmt.Sprintf("http://127.0.0.1:%d/readyz", port),
				path: filepath.Join(*bin, k.name), restart: *restart,
				// Static members of their groups: a restarted instance
				// takes its partitions back without a rebalance.
				env: append(append([]string{"CONSUMER_INSTANCE_ID=" + name}, traceEnv...), kafkaEnv[k.name]...),
			}
			if os.Getenv("OTEL_RESOURCE_ATTRIBUTES") == "" {
				s.env = append(s.env, "OTEL_RESOURCE_ATTRIBUTES=service.instance.id="+name) // its spans tell the instances apart
			}
			if *pprofPort > 0 {
				s.env = append(s.env, fmt.Sprintf("PPROF_ADDR=127.0.0.1:%d", *pprofPort+k.offset+3*i))
			}
			svcs = append(svcs, s)
		}
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
	if _, set := os.LookupEnv("WRITE_RATE_LIMIT"); !set {
		// The load generator and the benchmarks write thousands a second
		// from one address: the services' per-caller limit (50/s) is
		// lifted here unless the environment sets it.
		for _, s := range svcs {
			s.env = append(s.env, "WRITE_RATE_LIMIT=off")
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
		pg := &service{name: "postgres", addr: "127.0.0.1:5432", wait: 5 * time.Minute,
			path: filepath.Join(*bin, "devpostgres"), args: []string{"-port", "5432", "-dir", *pgData}}
		log.Info("DATABASE_URL is unset and nothing answers on 127.0.0.1:5432: starting an embedded PostgreSQL (the first start fetches it)", "folder", *pgData)
		if err := pg.start(); err != nil {
			return err
		}
		defer stopAll(log, pg) // last: the services and the broker stop first
		if err := waitPostgres(ctx, pg, server); err != nil {
			return err
		}
		embedded = fmt.Sprintf("  (embedded, data in %s; psql '%s')", filepath.Join(*pgData, "data"), server)
	}
	kafka := fmt.Sprintf("%s  (KAFKA_BROKERS)", brokers)
	if kafkaEnv != nil {
		kafka = fmt.Sprintf("%s  (each service as its principal: %s/<service>.env)", brokers, os.Getenv("KAFKA_ENV_DIR"))
	}
	if broker != nil {
		broker.args = []string{"-port", strconv.Itoa(*kafkaPort), "-data", *data}
		if err := broker.start(); err != nil {
			return err
		}
		defer stopAll(log, broker)
		if err := waitTCP(ctx, broker); err != nil {
			return err
		}
		kafka = fmt.Sprintf("%s  (dev broker, data in %s)", brokers, *data)
	}
	dbURLs, err := databases(ctx, server, os.Getenv("DATABASE_URL") == "", svcs)
	if err != nil {
		return err
	}
	for _, s := range svcs {
		s.env = append(s.env, "DATABASE_URL="+dbURLs[s.db], "KAFKA_BROKERS="+brokers, "HTTP_ADDR="+s.addr)
		if err := s.start(); err != nil {
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
	fmt.Printf("  traces     %s\n", traces)
	for _, s := range svcs {
		fmt.Printf("  %-10s http://%s\n", s.name, s.addr)
	}
	fmt.Println()

	select {
	case <-ctx.Done():
		log.Info("stopping the stack")
		return nil
	case err := <-watch(ctx, log, procs):
		return err
	}
}

// Where make jaeger's Jaeger listens: OTLP over HTTP, and its query API.
const (
	jaegerOTLP  = "127.0.0.1:4318"
	jaegerQuery = "http://127.0.0.1:16686"
)

// kafkaEnvOf reads <dir>/<service>.env for each service and keeps the
// client settings of kafkaconn.Vars; it also returns the first file's
// KAFKA_BROKERS. Nil and "" when dir is "".
func kafkaEnvOf(dir string, services ...string) (map[string][]string, string, error) {
	if dir == "" {
		return nil, "", nil
	}
	out, brokers := map[string][]string{}, ""
	for _, svc := range services {
		getenv, err := kafkaconn.EnvFile(filepath.Join(dir, svc+".env"))
		if err != nil {
			return nil, "", fmt.Errorf("KAFKA_ENV_DIR: %w", err)
		}
		for _, k := range kafkaconn.Vars {
			if v := getenv(k); v != "" {
				out[svc] = append(out[svc], k+"="+v)
			}
		}
		if brokers == "" {
			brokers = getenv("KAFKA_BROKERS")
		}
	}
	return out, brokers, nil
}

// otelEndpoint is where the environment says traces go, if it does.
func otelEndpoint() string {
	if e := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); e != "" {
		return e
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
}

// start starts the service's process.
func (s *service) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.start0()
}

// start0 is start with s.mu held.
func (s *service) start0() error {
	cmd := exec.Command(s.path, s.args...)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: Ctrl-C reaches devstack alone, which stops
		// the children in order.
		Setpgid: true,
		// And if devstack dies without stopping them (SIGKILL), the kernel
		// sends them SIGTERM: they stop as on Ctrl-C instead of holding
		// the ports as orphans.
		Pdeathsig: syscall.SIGTERM,
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	// Pdeathsig is sent when the thread that started the child exits, not
	// the process: this goroutine keeps its thread while starting it, and
	// Go does not end threads that no goroutine locked.
	runtime.LockOSThread()
	err = cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		return fmt.Errorf("start %s (did make build it?): %w", s.name, err)
	}
	go prefix(s.name, out)
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	s.p = p
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

// stopAll sends SIGTERM and waits; after 30s it kills. The service is not
// restarted afterwards.
func stopAll(log *slog.Logger, s *service) {
	s.mu.Lock()
	s.stopping = true
	p := s.p
	s.mu.Unlock()
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.err != nil {
			log.Warn("stopped with an error", "process", s.name, "err", p.err)
		}
	case <-time.After(30 * time.Second):
		log.Warn("did not stop in 30s; killing", "process", s.name)
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// watch reports the first child to exit on its own, or to fail to restart:
// a service with a restart delay is started again instead.
func watch(ctx context.Context, log *slog.Logger, svcs []*service) <-chan error {
	out := make(chan error, len(svcs))
	for _, s := range svcs {
		go func() {
			for {
				p := s.current()
				select {
				case <-ctx.Done():
					return
				case <-p.exited:
				}
				s.mu.Lock()
				stopping := s.stopping
				s.mu.Unlock()
				if stopping {
					return
				}
				if s.restart <= 0 {
					out <- fmt.Errorf("%s exited: %v", s.name, p.err)
					return
				}
				log.Warn("exited; restarting it", "process", s.name, "err", p.err, "in", s.restart)
				select {
				case <-ctx.Done():
					return
				case <-time.After(s.restart):
				}
				s.mu.Lock()
				var err error
				if !s.stopping {
					err = s.start0()
				}
				s.mu.Unlock()
				if err != nil {
					out <- err
					return
				}
			}
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
		case <-s.current().exited:
			return fmt.Errorf("%s exited while starting: %v", s.name, s.current().err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not come up within %s", s.name, wait)
		}
	}
	return nil
}

// databases returns the DATABASE_URL of each service's database. On the
// server devstack chose itself (DATABASE_URL unset: its own embedded one, or
// the one on 127.0.0.1:5432, as its superuser), each database gets a role
// of its own that owns it and nothing else, with a new password each start
// (pgdb.Provision): a service cannot read another's database, as in a real
// deployment. A server given in DATABASE_URL is used as given.
func databases(ctx context.Context, server string, provision bool, svcs []*service) (map[string]string, error) {
	urls := map[string]string{}
	for _, s := range svcs {
		if _, done := urls[s.db]; done {
			continue
		}
		if !provision {
			urls[s.db] = pgdb.WithDatabase(server, s.db)
			continue
		}
		secret := make([]byte, 18)
		if _, err := rand.Read(secret); err != nil {
			return nil, err
		}
		u, err := pgdb.Provision(ctx, server, s.db, s.db, hex.EncodeToString(secret))
		if err != nil {
			return nil, fmt.Errorf("a role of its own for database %s: %w", s.db, err)
		}
		urls[s.db] = u
	}
	return urls, nil
}
