// Command chaos breaks a running system on purpose and then checks, from
// outside, that no saga was lost or decided twice (internal/sagacheck).
//
//	chaos -scenario kafka       # make chaos-kafka
//	chaos -scenario processes   # make chaos
//
// Scenario kafka: a three-node Apache Kafka cluster of its own (scripts/kafka.sh
// 3, in a temporary folder), make run's services on it (bin/devstack, on
// fresh databases chaos_* of the Postgres in DATABASE_URL), orders placed at a
// steady rate across customers some of whom are short of credit, some orders
// cancelled; while they flow, the broker leading most partitions of
// orders.events is killed with SIGKILL and restarted 20 s later.
//
// Scenario processes: make run's stack with two instances of each service
// (bin/devstack -instances 2, on the dev broker and an embedded PostgreSQL of
// its own), orders as above; every 10 s one service instance, chosen at
// random, is killed with SIGKILL (devstack restarts it 2 s later); once the
// broker is stopped (SIGSTOP) for 10 s; once Postgres is restarted in
// immediate mode (SIGQUIT: no checkpoint, crash recovery at the start).
//
// Both print the orders, the check's findings and POST → decision latency,
// and exit 1 if any promise was broken.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventsaga/eventsaga/internal/sagacheck"
)

type config struct {
	scenario string
	load     sagacheck.Load
	settle   time.Duration // how long the sagas may take to finish afterwards
	keep     bool

	// kafka
	killAt time.Duration // when, after the first order, the broker is killed
	down   time.Duration // how long it stays dead

	// processes
	every    time.Duration // a service instance is killed this often
	maxPause time.Duration // the longest a saga may wait after an instance's kill
}

func main() {
	var cfg config
	flag.StringVar(&cfg.scenario, "scenario", "kafka", "what to break: kafka (a broker of a three-node cluster) or processes (service instances, the broker, Postgres)")
	flag.IntVar(&cfg.load.Rate, "rate", 0, "orders per second (kafka: 100, processes: 200)")
	flag.DurationVar(&cfg.load.Duration, "duration", 0, "how long orders are placed (kafka: 45s, processes: 3m)")
	flag.IntVar(&cfg.load.Customers, "customers", 0, "customers the orders are spread over (kafka: 100, processes: 200)")
	flag.IntVar(&cfg.load.Short, "short", 5, "every N-th customer has too little credit for most of its orders")
	flag.IntVar(&cfg.load.Cancel, "cancel", 10, "every N-th order is cancelled right after it is placed")
	flag.DurationVar(&cfg.settle, "settle", 3*time.Minute, "how long the sagas may take to end after the last order")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temporary folder (logs, data) afterwards")
	flag.DurationVar(&cfg.killAt, "kill-at", 10*time.Second, "kafka: when the broker is killed, after the first order")
	flag.DurationVar(&cfg.down, "down", 20*time.Second, "kafka: how long the killed broker stays down")
	flag.DurationVar(&cfg.every, "every", 10*time.Second, "processes: how often a service instance is killed")
	flag.DurationVar(&cfg.maxPause, "max-pause", 15*time.Second, "processes: fail if a saga waits longer than this after an instance's kill")
	flag.Parse()
	defaults := map[string]sagacheck.Load{
		"kafka":     {Rate: 100, Duration: 45 * time.Second, Customers: 100},
		"processes": {Rate: 200, Duration: 3 * time.Minute, Customers: 200},
	}
	def, ok := defaults[cfg.scenario]
	if !ok {
		fmt.Fprintf(os.Stderr, "chaos: unknown scenario %q (known: kafka, processes)\n", cfg.scenario)
		os.Exit(2)
	}
	if cfg.load.Rate <= 0 {
		cfg.load.Rate = def.Rate
	}
	if cfg.load.Duration <= 0 {
		cfg.load.Duration = def.Duration
	}
	if cfg.load.Customers <= 0 {
		cfg.load.Customers = def.Customers
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if cfg.scenario == "kafka" {
		err = withTemp(cfg, func(tmp string) error { return runKafka(ctx, cfg, tmp) })
	} else {
		err = withTemp(cfg, func(tmp string) error { return runProcesses(ctx, cfg, tmp) })
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}

// withTemp runs f with a temporary folder, removed afterwards unless f
// failed or -keep was given.
func withTemp(cfg config, f func(tmp string) error) error {
	tmp, err := os.MkdirTemp("", "chaos-")
	if err != nil {
		return err
	}
	// The embedded Postgres runs as an unprivileged user under root: it must
	// be able to reach its folder inside this one.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	err = f(tmp)
	if cfg.keep || err != nil {
		fmt.Printf("logs and data kept in %s\n", tmp)
	} else {
		os.RemoveAll(tmp)
	}
	return err
}

// The databases of the stack under test: fresh for each run, dropped after.
const dbPrefix = "chaos_"

var dbNames = []string{"orders", "customers", "readmodel"}

func portsFree(ports ...int) error {
	for _, port := range ports {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond); err == nil {
			c.Close()
			return fmt.Errorf("port %d is in use (make run, make kafka-cluster?): stop it first", port)
		}
	}
	return nil
}

// endpoints are the stack's services as devstack -instances n places them.
func endpoints(n int, brokers []string) sagacheck.Endpoints {
	ep := sagacheck.Endpoints{Brokers: brokers}
	for i := range n {
		ep.Order = append(ep.Order, fmt.Sprintf("http://127.0.0.1:%d", 8080+3*i))
		ep.Customer = append(ep.Customer, fmt.Sprintf("http://127.0.0.1:%d", 8081+3*i))
		ep.Projector = append(ep.Projector, fmt.Sprintf("http://127.0.0.1:%d", 8082+3*i))
	}
	return ep
}

// check verifies the run and prints what it found; a broken promise is an
// error.
func check(ctx context.Context, cfg config, ep sagacheck.Endpoints, stack *process, placed *sagacheck.Placed) (*sagacheck.Report, error) {
	fmt.Printf("placed %d orders in %v (%d requests retried, %d orders given up)\n",
		len(placed.Orders), placed.Took.Round(time.Millisecond), placed.Retried, placed.Failed)
	fmt.Printf("== checking (the sagas may take up to %v more)\n", cfg.settle)
	report, err := sagacheck.Verify(ctx, ep, placed, cfg.settle)
	if err != nil {
		stack.tail(40)
		return nil, err
	}
	fmt.Printf("orders %d: %d APPROVED, %d REJECTED (%d INSUFFICIENT_CREDIT, %d DEADLINE_EXCEEDED), %d CANCELLED, %d PENDING; credit decisions published twice (skipped by the consumers): %d\n",
		report.Orders, report.ByStatus["APPROVED"], report.ByStatus["REJECTED"], report.ByReason["INSUFFICIENT_CREDIT"], report.ByReason["DEADLINE_EXCEEDED"],
		report.ByStatus["CANCELLED"], report.ByStatus["PENDING"], report.Duplicates)
	if placed.Failed > 0 {
		report.Problems = append(report.Problems, fmt.Sprintf("%d orders could not be placed", placed.Failed))
	}
	return report, nil
}

// verdict prints the broken promises, if any, and makes them an error.
func verdict(report *sagacheck.Report, stack *process) error {
	if len(report.Problems) > 0 {
		for i, p := range report.Problems {
			if i == 20 {
				fmt.Printf("  … and %d more\n", len(report.Problems)-20)
				break
			}
			fmt.Println("  BROKEN:", p)
		}
		stack.tail(40)
		return fmt.Errorf("%d broken promises", len(report.Problems))
	}
	fmt.Println("every order terminal; one credit decision per order; reserved = Σ APPROVED for every customer; read model = write model; every DLQ empty")
	return nil
}

func awaitReady(ctx context.Context, stack *process, ep sagacheck.Endpoints) error {
	deadline := time.Now().Add(3 * time.Minute)
	for _, u := range slices.Concat(ep.Order, ep.Customer, ep.Projector) {
		for {
			resp, err := http.Get(u + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if stack.exited() || time.Now().After(deadline) || ctx.Err() != nil {
				stack.tail(40)
				return fmt.Errorf("%s did not become ready", u)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

func dropDatabases(ctx context.Context, server string) error {
	c, err := pgx.Connect(ctx, server)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer c.Close(ctx)
	for _, db := range dbNames {
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{dbPrefix + db}.Sanitize()+" WITH (FORCE)"); err != nil {
			return err
		}
	}
	return nil
}

// process is a child whose output goes to a log file.
type process struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startProcess starts a command of this repository with its output in
// logFile. The child gets SIGTERM if chaos dies, even by SIGKILL.
func startProcess(logFile string, env []string, path string, args ...string) (*process, error) {
	f, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	p := &process{cmd: cmd, log: logFile, done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and waits up to wait, then kills its process group.
func (p *process) stop(sig syscall.Signal, wait time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(wait):
		fmt.Printf("%s did not stop in %v: killed\n", p.cmd.Path, wait)
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// awaitLine waits for a line of the log that starts with prefix.
func (p *process) awaitLine(ctx context.Context, prefix string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		if f, err := os.Open(p.log); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), prefix) {
					f.Close()
					return sc.Text(), nil
				}
			}
			f.Close()
		}
		if p.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			p.tail(40)
			return "", fmt.Errorf("%s: no %q in its output", p.cmd.Path, prefix)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// tail prints the last n lines of the log.
func (p *process) tail(n int) {
	f, err := os.Open(p.log)
	if err != nil {
		return
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	fmt.Printf("--- the end of %s:\n%s\n---\n", p.log, strings.Join(lines, "\n"))
}
