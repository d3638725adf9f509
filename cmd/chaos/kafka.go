package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/sagacheck"
)

// runKafka is scenario kafka: a broker of a three-node cluster dies under load.
func runKafka(ctx context.Context, cfg config, tmp string) error {
	server := os.Getenv("DATABASE_URL")
	if server == "" {
		return errors.New("DATABASE_URL is unset: run it through scripts/with-postgres.sh (make chaos-kafka does)")
	}
	if err := portsFree(8080, 8081, 8082, 19092, 19093, 19094); err != nil {
		return err
	}
	if err := dropDatabases(ctx, server); err != nil { // a run that was killed may have left them
		return err
	}
	defer dropDatabases(context.Background(), server)

	// The cluster.
	fmt.Println("== starting a three-node Kafka cluster (scripts/kafka.sh 3)")
	cluster, err := startProcess(filepath.Join(tmp, "kafka.log"), []string{"KAFKA_DATA_DIR=" + filepath.Join(tmp, "kafka")}, "scripts/kafka.sh", "3")
	if err != nil {
		return err
	}
	defer cluster.stop(syscall.SIGTERM, 2*time.Minute)
	brokersLine, err := cluster.awaitLine(ctx, "KAFKA_BROKERS=", 5*time.Minute)
	if err != nil {
		return err
	}
	brokers := strings.Split(strings.TrimPrefix(brokersLine, "KAFKA_BROKERS="), ",")

	// make run's services on it.
	fmt.Println("== starting the services (bin/devstack) on it")
	stack, err := startProcess(filepath.Join(tmp, "stack.log"),
		[]string{"KAFKA_BROKERS=" + strings.Join(brokers, ","), "DATABASE_URL=" + server},
		"bin/devstack", "-bin", "bin", "-db-prefix", dbPrefix)
	if err != nil {
		return err
	}
	defer stack.stop(syscall.SIGINT, time.Minute)
	ep := endpoints(1, brokers)
	if err := awaitReady(ctx, stack, ep); err != nil {
		return err
	}

	// The load, and the broker's death in the middle of it.
	decisions, err := sagacheck.WatchDecisions(ctx, brokers)
	if err != nil {
		return err
	}
	defer decisions.Stop()
	fmt.Printf("== registering %d customers (every %d-th short of credit)\n", cfg.load.Customers, cfg.load.Short)
	custs, err := sagacheck.Register(ctx, ep, cfg.load)
	if err != nil {
		return err
	}
	fmt.Printf("== placing %d orders/s for %v (every %d-th cancelled); the broker leading most of orders.events dies after %v, for %v\n",
		cfg.load.Rate, cfg.load.Duration, cfg.load.Cancel, cfg.killAt, cfg.down)
	placedCh := make(chan *sagacheck.Placed, 1)
	go func() { placedCh <- sagacheck.Place(ctx, ep, cfg.load, custs) }()
	start := time.Now()
	killed, restarted, err := killLeader(ctx, cluster, filepath.Join(tmp, "kafka"), brokers, start.Add(cfg.killAt), cfg.down)
	if err != nil {
		return err
	}
	placed := <-placedCh

	report, err := check(ctx, cfg, ep, stack, placed)
	if err != nil {
		return err
	}
	all := decisions.Latency(placed.Orders, time.Time{}, time.Time{})
	before := decisions.Latency(placed.Orders, placed.Start, killed)
	failover := decisions.Latency(placed.Orders, killed, restarted)
	fmt.Printf("POST -> decision, all %d decided orders: p50 %v  p99 %v  max %v\n", all.Orders, all.P50, all.P99, all.Max)
	fmt.Printf("POST -> decision, the %d orders placed before the kill: p50 %v  p99 %v  max %v\n", before.Orders, before.P50, before.P99, before.Max)
	fmt.Printf("POST -> decision, the %d orders placed while the broker was down: p50 %v  p99 %v  max %v (the longest during the failover)\n",
		failover.Orders, failover.P50, failover.P99, failover.Max)
	fmt.Printf("by time of POST (the broker was killed at %.0fs and restarted at %.0fs; cancelled orders are not decided):\n",
		killed.Sub(placed.Start).Seconds(), restarted.Sub(placed.Start).Seconds())
	decisions.Timeline(os.Stdout, placed.Orders, placed.Start, 5*time.Second)
	return verdict(report, stack)
}

// killLeader waits until at, kills with SIGKILL the node that leads most
// partitions of orders.events, and has the cluster script restart it down
// later. It returns when it killed and restarted it.
func killLeader(ctx context.Context, cluster *process, dir string, brokers []string, at time.Time, down time.Duration) (killed, restarted time.Time, err error) {
	select {
	case <-ctx.Done():
		return killed, restarted, ctx.Err()
	case <-time.After(time.Until(at)):
	}
	node, led, err := leaderOfMost(ctx, brokers, "orders.events")
	if err != nil {
		return killed, restarted, err
	}
	pidFile := filepath.Join(dir, "run", fmt.Sprintf("cluster-node-%d.pid", node))
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return killed, restarted, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return killed, restarted, fmt.Errorf("%s: %w", pidFile, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return killed, restarted, fmt.Errorf("kill node %d (pid %d): %w", node, pid, err)
	}
	killed = time.Now()
	fmt.Printf("%s killed node %d (pid %d, SIGKILL), leader of %d of the 12 partitions of orders.events\n",
		killed.Format("15:04:05.000"), node, pid, led)
	select {
	case <-ctx.Done():
		return killed, restarted, ctx.Err()
	case <-time.After(down):
	}
	if err := cluster.cmd.Process.Signal(syscall.SIGUSR1); err != nil { // scripts/kafka.sh restarts the nodes that exited
		return killed, restarted, err
	}
	restarted = time.Now()
	fmt.Printf("%s restarting node %d\n", restarted.Format("15:04:05.000"), node)
	addr := fmt.Sprintf("127.0.0.1:%d", 19091+node) // scripts/kafka.sh's ports
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			fmt.Printf("%s node %d listens again (%v after the restart began)\n",
				time.Now().Format("15:04:05.000"), node, time.Since(restarted).Round(100*time.Millisecond))
			break
		}
	}
	return killed, restarted, nil
}

// leaderOfMost is the node leading most partitions of topic, and how many.
func leaderOfMost(ctx context.Context, brokers []string, topic string) (int32, int, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return 0, 0, err
	}
	defer cl.Close()
	md, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		return 0, 0, err
	}
	t, ok := md.Topics[topic]
	if !ok || t.Err != nil {
		return 0, 0, fmt.Errorf("metadata of %s: %v", topic, t.Err)
	}
	led := map[int32]int{}
	for _, p := range t.Partitions {
		led[p.Leader]++
	}
	best := int32(-1)
	for node, n := range led {
		if best < 0 || n > led[best] || (n == led[best] && node < best) {
			best = node
		}
	}
	return best, led[best], nil
}
