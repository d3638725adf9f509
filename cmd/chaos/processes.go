package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/eventsaga/eventsaga/internal/procs"
	"github.com/eventsaga/eventsaga/internal/sagacheck"
)

// pgPort is where the scenario's own Postgres listens: not make run's 5432.
const pgPort = 15432

// fault is one thing done to the stack, and when.
type fault struct {
	what       string
	at, until  time.Time // until: when it was over (the same as at for a kill)
	isKill     bool
	killedName string
}

// faults is the log of what was done, shared by the goroutines doing it.
type faults struct {
	mu  sync.Mutex
	all []fault
}

func (f *faults) add(x fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.all = append(f.all, x)
	fmt.Printf("%s %s\n", x.at.Format("15:04:05.000"), x.what)
}

// runProcesses is scenario processes: two instances of each service, one of
// them killed every few seconds, the broker frozen once, Postgres restarted
// in immediate mode once.
func runProcesses(ctx context.Context, cfg config, tmp string) error {
	if err := portsFree(8080, 8081, 8082, 8083, 8084, 8085, 9092, pgPort); err != nil {
		return err
	}
	pg, err := startPostgres(ctx, tmp, 1)
	if err != nil {
		return err
	}
	defer func() { pg.stop(syscall.SIGTERM, time.Minute) }()
	server := fmt.Sprintf("postgres://postgres:postgres@127.0.0.1:%d/postgres?sslmode=disable", pgPort)

	fmt.Println("== starting the stack: two instances of each service, the dev broker (bin/devstack -instances 2 -restart 2s)")
	stack, err := startProcess(filepath.Join(tmp, "stack.log"), []string{"DATABASE_URL=" + server},
		"bin/devstack", "-bin", "bin", "-data", filepath.Join(tmp, "broker"), "-instances", "2", "-restart", "2s")
	if err != nil {
		return err
	}
	defer stack.stop(syscall.SIGINT, time.Minute)
	ep := endpoints(2, []string{"127.0.0.1:9092"})
	if err := awaitReady(ctx, stack, ep); err != nil {
		return err
	}

	decisions, err := sagacheck.WatchDecisions(ctx, ep.Brokers)
	if err != nil {
		return err
	}
	defer decisions.Stop()
	groups := []string{"order-service", "customer-service", "projector.g1"}
	lag, err := sagacheck.WatchLag(ctx, ep.Brokers, groups, time.Second)
	if err != nil {
		return err
	}
	defer lag.Stop()
	fmt.Printf("== registering %d customers (every %d-th short of credit)\n", cfg.load.Customers, cfg.load.Short)
	custs, err := sagacheck.Register(ctx, ep, cfg.load)
	if err != nil {
		return err
	}
	freezeAt, restartAt := cfg.load.Duration/3, 2*cfg.load.Duration/3
	fmt.Printf("== placing %d orders/s for %v (every %d-th cancelled); a service instance killed every %v, the broker frozen at %v for 10 s, Postgres restarted at %v\n",
		cfg.load.Rate, cfg.load.Duration, cfg.load.Cancel, cfg.every, freezeAt, restartAt)
	placedCh := make(chan *sagacheck.Placed, 1)
	go func() { placedCh <- sagacheck.Place(ctx, ep, cfg.load, custs) }()
	start := time.Now()

	// The faults, each on its own schedule, until the load ends.
	var log faults
	fctx, stopFaults := context.WithDeadline(ctx, start.Add(cfg.load.Duration))
	defer stopFaults()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Go(func() { errs <- killInstances(fctx, stack, cfg.every, &log) })
	wg.Go(func() { errs <- freezeBroker(fctx, stack, start.Add(freezeAt), 10*time.Second, &log) })
	wg.Go(func() {
		var err error
		pg, err = restartPostgres(fctx, tmp, pg, start.Add(restartAt), &log)
		errs <- err
	})
	placed := <-placedCh
	stopFaults()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}

	report, err := check(ctx, cfg, ep, stack, placed)
	if err != nil {
		return err
	}
	all := decisions.Latency(placed.Orders, time.Time{}, time.Time{})
	kills, pause := killPause(decisions, placed.Orders, log.all, cfg.every)
	fmt.Printf("faults: %d instances killed (SIGKILL), the broker frozen once, Postgres restarted once in immediate mode\n", kills)
	fmt.Printf("POST -> decision, all %d decided orders: p50 %v  p99 %v  max %v\n", all.Orders, all.P50, all.P99, all.Max)
	fmt.Printf("failover pause: the longest POST -> decision of orders placed from 2 s before a kill to the next fault, "+
		"away from the broker's freeze and Postgres's restart: %v (limit %v)\n", pause, cfg.maxPause)
	fmt.Println("by time of POST (cancelled orders are not decided):")
	decisions.Timeline(os.Stdout, placed.Orders, placed.Start, 10*time.Second)
	fmt.Println("consumer groups, by time since the first order: the largest lag (records not yet committed) and the fewest members seen")
	lag.Print(os.Stdout, groups, placed.Start, 10*time.Second)
	if pause > cfg.maxPause {
		report.Problems = append(report.Problems, fmt.Sprintf("a saga waited %v after an instance was killed (limit %v)", pause, cfg.maxPause))
	}
	return verdict(report, stack)
}

// killInstances kills a random service instance of the stack every every.
func killInstances(ctx context.Context, stack *process, every time.Duration, log *faults) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		var live []procs.Proc
		for _, c := range procs.Children(stack.cmd.Process.Pid) {
			if c.Comm == "order" || c.Comm == "customer" || c.Comm == "projector" {
				live = append(live, c)
			}
		}
		if len(live) == 0 {
			continue
		}
		c := live[rand.IntN(len(live))]
		if err := syscall.Kill(c.Pid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill %s (pid %d): %w", c.Name(), c.Pid, err)
		}
		now := time.Now()
		log.add(fault{what: fmt.Sprintf("killed %s (pid %d, SIGKILL)", c.Name(), c.Pid), at: now, until: now, isKill: true, killedName: c.Name()})
	}
}

// freezeBroker stops the dev broker (SIGSTOP) at at, and lets it go on
// (SIGCONT) d later: a broker that neither answers nor closes connections.
func freezeBroker(ctx context.Context, stack *process, at time.Time, d time.Duration, log *faults) error {
	if !sleepUntil(ctx, at) {
		return nil
	}
	var broker *procs.Proc
	for _, c := range procs.Children(stack.cmd.Process.Pid) {
		if c.Comm == "devbroker" {
			broker = &c
		}
	}
	if broker == nil {
		return fmt.Errorf("no devbroker among the stack's processes")
	}
	if err := syscall.Kill(broker.Pid, syscall.SIGSTOP); err != nil {
		return err
	}
	stopped := time.Now()
	fmt.Printf("%s froze the broker (pid %d, SIGSTOP)\n", stopped.Format("15:04:05.000"), broker.Pid)
	time.Sleep(d) // not cut short: the broker must go on whatever happens
	if err := syscall.Kill(broker.Pid, syscall.SIGCONT); err != nil {
		return err
	}
	log.add(fault{what: fmt.Sprintf("let the broker go on (SIGCONT) after %v", d), at: stopped, until: time.Now()})
	return nil
}

// startPostgres starts the scenario's own embedded Postgres (bin/devpostgres,
// data in tmp/pg) and returns once it accepts connections. n numbers its log.
func startPostgres(ctx context.Context, tmp string, n int) (*process, error) {
	if n == 1 {
		fmt.Printf("== starting an embedded PostgreSQL on 127.0.0.1:%d (bin/devpostgres)\n", pgPort)
	}
	pg, err := startProcess(filepath.Join(tmp, fmt.Sprintf("postgres-%d.log", n)), nil,
		"bin/devpostgres", "-port", strconv.Itoa(pgPort), "-dir", ".postgres", "-home", filepath.Join(tmp, "pg"))
	if err != nil {
		return nil, err
	}
	if _, err := pg.awaitLine(ctx, "PostgreSQL ", 5*time.Minute); err != nil {
		pg.stop(syscall.SIGTERM, time.Minute)
		return nil, err
	}
	return pg, nil
}

// restartPostgres restarts Postgres in immediate mode at at: SIGQUIT to the
// postmaster (every backend exits at once, nothing is checkpointed; the next
// start runs crash recovery), then a new start on the same data.
func restartPostgres(ctx context.Context, tmp string, pg *process, at time.Time, log *faults) (*process, error) {
	if !sleepUntil(ctx, at) {
		return pg, nil
	}
	b, err := os.ReadFile(filepath.Join(tmp, "pg", "data", "postmaster.pid"))
	if err != nil {
		return pg, err
	}
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if err != nil {
		return pg, fmt.Errorf("postmaster.pid: %w", err)
	}
	began := time.Now()
	if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil {
		return pg, fmt.Errorf("SIGQUIT to the postmaster (pid %d): %w", pid, err)
	}
	fmt.Printf("%s Postgres: immediate shutdown (SIGQUIT to the postmaster, pid %d)\n", began.Format("15:04:05.000"), pid)
	for syscall.Kill(pid, 0) == nil && time.Since(began) < time.Minute {
		time.Sleep(50 * time.Millisecond)
	}
	pg.stop(syscall.SIGTERM, time.Minute) // its supervisor, whose server is gone
	pg, err = startPostgres(context.WithoutCancel(ctx), tmp, 2)
	if err != nil {
		return nil, fmt.Errorf("postgres did not start again: %w", err)
	}
	log.add(fault{what: fmt.Sprintf("Postgres accepts connections again, %v after its immediate shutdown", time.Since(began).Round(10*time.Millisecond)),
		at: began, until: time.Now()})
	return pg, nil
}

// sleepUntil waits until at; false if ctx ended first.
func sleepUntil(ctx context.Context, at time.Time) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Until(at)):
		return true
	}
}

// killPause is the longest POST → decision of the orders placed from 2 s
// before a kill until every (the next kill), leaving out orders placed from
// 15 s before another fault (the broker's freeze, Postgres's restart) until
// 5 s after it ended: those wait for that fault, not for the kill. It also
// returns how many kills there were.
func killPause(d *sagacheck.Decisions, orders []sagacheck.Order, all []fault, every time.Duration) (int, time.Duration) {
	kills := 0
	var pause time.Duration
	for _, k := range all {
		if !k.isKill {
			continue
		}
		kills++
		from, to := k.at.Add(-2*time.Second), k.at.Add(every)
		var window []sagacheck.Order
	orders:
		for _, o := range orders {
			if o.Begun.Before(from) || !o.Begun.Before(to) {
				continue
			}
			for _, f := range all {
				if !f.isKill && !o.Begun.Before(f.at.Add(-15*time.Second)) && o.Begun.Before(f.until.Add(5*time.Second)) {
					continue orders
				}
			}
			window = append(window, o)
		}
		if l := d.Latency(window, time.Time{}, time.Time{}); l.Max > pause {
			pause = l.Max
		}
	}
	return kills, pause
}
