package e2e

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eventsaga/eventsaga/internal/testenv"
	"github.com/eventsaga/eventsaga/services/customer"
	"github.com/eventsaga/eventsaga/services/order"
)

// The commands as deployed: configured only by the environment, they run a
// saga that the projector shows, and on SIGTERM drain and exit 0.
func TestBinariesRunASagaAndStopOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the service binaries")
	}
	dir := t.TempDir()
	for _, cmd := range []string{"order", "customer", "projector"} {
		build := exec.Command("go", "build", "-o", filepath.Join(dir, cmd), "./../"+cmd+"/cmd/"+cmd)
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", cmd, err, out)
		}
	}
	k := testenv.NewKafka(t)
	orders, customers := k.Topic("orders.events"), k.Topic("customers.events")
	k.CreateTopics(t, 12, orders, customers)

	start := func(name, db string) (*exec.Cmd, string, *bytes.Buffer) {
		addr := freeAddr(t)
		cmd := exec.Command(filepath.Join(dir, name))
		cmd.Env = append(os.Environ(),
			"DATABASE_URL="+db, "KAFKA_BROKERS="+strings.Join(k.Brokers, ","), "HTTP_ADDR="+addr,
			"ORDERS_TOPIC="+orders, "CUSTOMERS_TOPIC="+customers, "CONSUMER_GROUP="+k.Topic(name+"-service"))
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		url := "http://" + addr
		testenv.WaitFor(t, 30*time.Second, name+" to be ready", func() bool {
			status, _ := tryCall(t, url+"/readyz")
			return status == 200
		})
		return cmd, url, &logs
	}
	customerCmd, customerURL, customerLogs := start("customer", testenv.Database(t))
	orderCmd, orderURL, orderLogs := start("order", testenv.Database(t))
	projectorCmd, projectorURL, projectorLogs := start("projector", testenv.Database(t))

	s := &system{t: t}
	s.customer = &running[*customer.Service]{url: customerURL}
	s.order = &running[*order.Service]{url: orderURL}
	c := s.register("Binary", "20.00")
	o := s.place(c, 2, "5.00")
	s.awaitStatus(o, "APPROVED")
	var read struct {
		Status string `json:"status"`
	}
	mustCall(t, 200, &read, "GET", projectorURL+"/orders/"+o.String()+"?min_version=2", "")
	if read.Status != "APPROVED" {
		t.Errorf("the read model says %s", read.Status)
	}

	for _, p := range []struct {
		cmd  *exec.Cmd
		logs *bytes.Buffer
	}{{orderCmd, orderLogs}, {customerCmd, customerLogs}, {projectorCmd, projectorLogs}} {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- p.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s exited with %v:\n%s", p.cmd.Path, err, p.logs)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not stop within 30s of SIGTERM:\n%s", p.cmd.Path, p.logs)
		}
		if !strings.Contains(p.logs.String(), "shutting down") {
			t.Errorf("%s did not log its shutdown:\n%s", p.cmd.Path, p.logs)
		}
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
