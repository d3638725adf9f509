package pgembed

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// shared is where the tests find the binaries: the project's folder, as
// make run and the other tests use it, so that they are fetched once.
func shared(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../../.postgres")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// home is a folder of the test's own, in the temporary folder as the
// project's tests make theirs.
func home(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgembed-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func answers(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func TestServerRunsAsShippedAndStops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := Config{Dir: shared(t), Home: home(t), Port: freePort(t), Log: testWriter{t}, Remove: true}
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, s.URL())
	if err != nil {
		s.Stop()
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, name := range []string{"server_version", "fsync", "synchronous_commit", "full_page_writes", "autovacuum", "listen_addresses"} {
		var v string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			t.Fatal(err)
		}
		settings[name] = v
	}
	var super bool
	if err := conn.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super); err != nil || !super {
		t.Errorf("connected as a superuser: %v, %v", super, err)
	}
	conn.Close(ctx)
	t.Logf("settings: %v", settings)
	want := map[string]string{"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on", "autovacuum": "on", "listen_addresses": "127.0.0.1"}
	for k, v := range want {
		if settings[k] != v {
			t.Errorf("%s = %q, want %q", k, settings[k], v)
		}
	}
	if major := strings.SplitN(Version, ".", 2)[0]; !strings.HasPrefix(settings["server_version"], major+".") {
		t.Errorf("server_version %q, want %s.x", settings["server_version"], major)
	}

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if answers(cfg.Port) {
		t.Errorf("port %d still answers after Stop", cfg.Port)
	}
	if _, err := os.Stat(cfg.Home); !os.IsNotExist(err) {
		t.Errorf("Remove: %s still there (%v)", cfg.Home, err)
	}
}

// The server must not outlive the program that started it, even when the
// program is killed: here the program is this test binary run again.
func TestServerStopsWhenItsProgramIsKilled(t *testing.T) {
	port := freePort(t)
	h := home(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProgram$", "-test.v")
	cmd.Env = append(os.Environ(), "PGEMBED_HELPER="+strconv.Itoa(port)+","+h+","+shared(t))
	cmd.Stderr = testWriter{t}
	// Should this test be killed, the helper must not wait out its sleep.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	up := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "helper: up" {
				up <- true
			}
		}
		up <- false
	}()
	select {
	case ok := <-up:
		if !ok {
			cmd.Wait()
			t.Fatal("the helper program exited before its server was up")
		}
	case <-time.After(5 * time.Minute):
		cmd.Process.Kill()
		t.Fatal("the helper program's server did not come up")
	}
	if !answers(port) {
		t.Fatal("the server does not answer")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for answers(port) {
		if time.Now().After(deadline) {
			t.Fatal("the server still answers 30 s after its program was killed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(h, "data", "postmaster.pid")); !os.IsNotExist(err) {
		t.Errorf("postmaster.pid still there: the server did not shut down cleanly (%v)", err)
	}
}

// A server whose supervisor was killed outright keeps running; the next
// start on its folder stops it and takes its place.
func TestStartStopsAServerLeftRunning(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := Config{Dir: shared(t), Home: home(t), Port: freePort(t), Log: testWriter{t}}
	first, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done
	if !answers(cfg.Port) {
		t.Fatal("the server stopped with its supervisor: nothing left to recover from")
	}
	second, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("second start: %v", err)
	}
	conn, err := pgx.Connect(ctx, second.URL())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := second.Stop(); err != nil {
		t.Fatal(err)
	}
	if answers(cfg.Port) {
		t.Errorf("port %d still answers after Stop", cfg.Port)
	}
}

// TestHelperProgram is the program of TestServerStopsWhenItsProgramIsKilled.
func TestHelperProgram(t *testing.T) {
	spec := os.Getenv("PGEMBED_HELPER")
	if spec == "" {
		t.Skip("run by TestServerStopsWhenItsProgramIsKilled")
	}
	parts := strings.Split(spec, ",")
	port, _ := strconv.Atoi(parts[0])
	// Its messages through a pipe that dies with this program, as they do
	// when a program logs what its server says.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(os.Stderr, r)
	s, err := Start(context.Background(), Config{Dir: parts[2], Home: parts[1], Port: port, Log: w})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	os.Stdout.WriteString("helper: up\n")
	time.Sleep(10 * time.Minute)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
