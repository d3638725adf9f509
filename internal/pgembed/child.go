package pgembed

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	embeddedpostgres "github.com/fergusstrange/embedded-postgres"
)

// A child re-executed by Start runs the server here, before the program's
// own main (or a test binary's tests) ever starts.
func init() {
	if spec, ok := os.LookupEnv(childEnv); ok {
		os.Exit(child(spec))
	}
}

// child starts the server, says "ready" on stdout, and stops the server when
// stdin closes (the parent stopped it or went away) or on SIGTERM/SIGINT.
func child(spec string) int {
	var cfg Config
	if err := json.Unmarshal([]byte(spec), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "embedded postgres:", err)
		return 2
	}
	// Nothing of the program's environment is meant for this process.
	os.Unsetenv(childEnv)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	// Once the parent is gone, so is the reader of our stderr: a write
	// there must fail, not kill us before the server is stopped.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)

	db, err := startServer(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "embedded postgres:", err)
		return 1
	}
	fmt.Println("ready")

	gone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(gone)
	}()
	select {
	case <-gone:
	case <-stop:
	}
	code := 0
	if err := db.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "embedded postgres: stop:", err)
		code = 1
	}
	if cfg.Remove {
		if err := os.RemoveAll(cfg.Home); err != nil {
			fmt.Fprintln(os.Stderr, "embedded postgres:", err)
			code = 1
		}
	}
	return code
}

func startServer(cfg Config) (*embeddedpostgres.EmbeddedPostgres, error) {
	binaries := filepath.Join(cfg.Dir, Version)
	runtime := filepath.Join(cfg.Home, "run")
	// The library writes its log file to the temporary folder and never
	// removes it: keep it in Home.
	if err := os.MkdirAll(runtime, 0o700); err != nil {
		return nil, err
	}
	os.Setenv("TMPDIR", runtime)

	// Test binaries start their servers at the same time, and all unpack
	// into one folder: one at a time.
	unlock, err := lock(filepath.Join(cfg.Dir, "start.lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	if err := stopStale(binaries, cfg.DataDir()); err != nil {
		return nil, err
	}
	repo := os.Getenv("EMBEDDED_POSTGRES_REPOSITORY")
	if repo == "" {
		repo = Maven
	}
	// Loopback only; the server's log to files in data/log/ rather than to
	// a temporary file no one reads.
	params := map[string]string{
		"listen_addresses":  "127.0.0.1",
		"logging_collector": "on",
	}
	if cfg.Preload != "" {
		params["shared_preload_libraries"] = cfg.Preload
	}
	db := embeddedpostgres.NewDatabase(embeddedpostgres.DefaultConfig().
		Version(embeddedpostgres.PostgresVersion(Version)).
		Port(uint32(cfg.Port)).
		Username(User).Password(Password).Database("postgres").
		Encoding("UTF8").Locale("C").
		CachePath(filepath.Join(cfg.Dir, "cache")).
		BinariesPath(binaries).
		RuntimePath(filepath.Join(runtime, "lib")).
		DataPath(cfg.DataDir()).
		BinaryRepositoryURL(repo).
		StartTimeout(time.Minute).
		Logger(os.Stderr).
		StartParameters(params))
	if err := db.Start(); err != nil {
		return nil, err
	}
	return db, nil
}

// stopStale stops a server that still runs on dataDir: its supervisor was
// killed before it could stop it.
func stopStale(binaries, dataDir string) error {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return nil // none
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil || syscall.Kill(pid, 0) != nil {
		return nil // a stale file; postgres itself deals with it
	}
	fmt.Fprintf(os.Stderr, "embedded postgres: a server left running on %s (pid %d): stopping it\n", dataDir, pid)
	cmd := exec.Command(filepath.Join(binaries, "bin", "pg_ctl"), "stop", "-w", "-m", "fast", "-D", dataDir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("stop the server left running on %s (pid %d): %w", dataDir, pid, err)
	}
	return nil
}

// lock takes an exclusive lock on path, waiting for it.
func lock(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
