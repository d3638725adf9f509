package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventsaga/eventsaga/internal/pgdb"
	"github.com/eventsaga/eventsaga/internal/procs"
	"github.com/eventsaga/eventsaga/internal/testenv"
)

// When devstack dies without stopping its children (SIGKILL, an OOM kill),
// they must not live on holding the ports: the next make run would fail
// with "already taken".
func TestChildrenDoNotOutliveDevstack(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the stack's binaries")
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/devstack", "./cmd/devbroker",
		"./services/order/cmd/order", "./services/customer/cmd/customer", "./services/projector/cmd/projector")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	server := testenv.ServerURL(t)
	prefix := fmt.Sprintf("devstack_test_%d_", os.Getpid())
	t.Cleanup(func() { dropDatabases(t, server, prefix) })
	httpPort, kafkaPort := freePorts(t, 3), freePorts(t, 1)
	cmd := exec.Command(filepath.Join(bin, "devstack"), "-bin", bin, "-data", t.TempDir(), "-db-prefix", prefix,
		"-kafka-port", fmt.Sprint(kafkaPort), "-http-port", fmt.Sprint(httpPort), "-pprof-port", "0")
	cmd.Env = append(withoutKafka(os.Environ()), "DATABASE_URL="+server)
	var out testenv.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	testenv.WaitFor(t, 2*time.Minute, "the stack to run", func() bool {
		return strings.Contains(out.String(), "The stack is running")
	})
	kids := procs.Children(cmd.Process.Pid)
	t.Cleanup(func() { // those that outlived it, if the test fails
		for _, k := range kids {
			if p, ok := procs.Get(k.Pid); ok && p.Comm == k.Comm {
				_ = syscall.Kill(k.Pid, syscall.SIGKILL)
			}
		}
	})
	if len(kids) != 4 { // the broker and three services
		t.Fatalf("devstack has %d children, want 4: %v\n%s", len(kids), kids, out.String())
	}

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	testenv.WaitFor(t, 45*time.Second, "devstack's children to exit", func() bool {
		for _, k := range kids {
			if p, ok := procs.Get(k.Pid); ok && p.State != "Z" {
				return false
			}
		}
		return true
	})
	for _, port := range []int{httpPort, httpPort + 1, httpPort + 2, kafkaPort} {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
			c.Close()
			t.Errorf("port %d still answers after devstack died: %s", port, listener(port))
		}
	}
}

// freePorts finds n consecutive free ports on 127.0.0.1.
//
// They are below Linux's ephemeral range (32768-60999 by default): a port
// the kernel handed out for ":0" could be handed out again, once devstack's
// child let it go, to a test running beside this one, which would then seem
// to be a child that outlived devstack (seen in CI).
func freePorts(t *testing.T, n int) int {
	t.Helper()
	for range 50 {
		base := 20000 + rand.IntN(12000)
		free := true
		for i := 0; i < n; i++ {
			if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+i)); err != nil {
				free = false
			} else {
				l.Close()
			}
		}
		if free {
			return base
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0
}

// listener names the process listening on 127.0.0.1:port, from /proc, so
// that a failure says whose the port is.
func listener(port int) string {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return err.Error()
	}
	inode := ""
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		// local address (hex ip:port), state 0A = LISTEN, inode.
		if len(f) > 9 && strings.HasSuffix(f[1], fmt.Sprintf(":%04X", port)) && f[3] == "0A" {
			inode = f[9]
		}
	}
	if inode == "" {
		return "no listener in /proc/net/tcp"
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range dirs {
		if target, err := os.Readlink(fd); err == nil && target == "socket:["+inode+"]" {
			pid := strings.Split(fd, "/")[2]
			comm, _ := os.ReadFile("/proc/" + pid + "/comm")
			cmdline, _ := os.ReadFile("/proc/" + pid + "/cmdline")
			return fmt.Sprintf("pid %s (%s): %s", pid, strings.TrimSpace(string(comm)), strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return "socket inode " + inode + ", no process found"
}

func withoutKafka(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "KAFKA_BROKERS=") {
			out = append(out, kv)
		}
	}
	return out
}

func dropDatabases(t *testing.T, server, prefix string) {
	ctx := context.Background()
	c, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Error(err)
		return
	}
	defer c.Close(ctx)
	for _, db := range []string{"orders", "customers", "readmodel"} {
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{prefix + db}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Error(pgdb.Redact(err.Error()))
		}
	}
}
