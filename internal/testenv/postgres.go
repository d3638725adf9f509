// Package testenv gives integration tests real infrastructure: a fresh,
// migrated Postgres database per test and a Kafka cluster.
//
// Postgres comes from TEST_DATABASE_URL when it is set, else from a
// testcontainers Postgres when a Docker engine answers, else from the local
// server at postgres://postgres@127.0.0.1:5432/postgres when one answers
// there, else from an embedded PostgreSQL (internal/pgembed) that the test
// binary starts on a free port and that stops when the binary exits. Each
// test gets its own database, cloned from a template migrated once per set
// of migrations.
//
// Kafka comes from TEST_KAFKA_BROKERS when it is set, else from an
// in-process kfake cluster per test.
package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"

	"github.com/eventsaga/eventsaga/internal/pgdb"
	"github.com/eventsaga/eventsaga/internal/pgembed"
	"github.com/eventsaga/eventsaga/internal/pgmigrate"
)

var (
	serverOnce sync.Once
	serverURL  string
	serverErr  error
)

// server returns the URL of the Postgres server tests use, starting a
// container the first time if that is where it comes from.
func server() (string, error) {
	serverOnce.Do(func() {
		if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
			serverURL = u
			return
		}
		if dockerAnswers() {
			serverURL, serverErr = startContainer()
			return
		}
		if c, err := net.DialTimeout("tcp", "127.0.0.1:5432", time.Second); err == nil {
			c.Close()
			serverURL = pgdb.Local
			return
		}
		serverURL, serverErr = startEmbedded()
	})
	return serverURL, serverErr
}

// startEmbedded starts the embedded server every test of this binary
// shares. It is never stopped here: its supervisor stops it, and removes
// its files, when this process exits. The binaries are kept in the
// project's .postgres folder, where make run keeps them too.
func startEmbedded() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	home, err := os.MkdirTemp("", "eventsaga-test-postgres")
	if err != nil {
		return "", err
	}
	// The server's messages go to a file that is unlinked once it is up,
	// so that what it says as it stops cannot be lost in a closed pipe.
	log, err := os.CreateTemp("", "eventsaga-test-postgres-*.log")
	if err != nil {
		return "", err
	}
	defer os.Remove(log.Name())
	defer log.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := pgembed.Start(ctx, pgembed.Config{
		Dir: filepath.Join(root, ".postgres"), Home: home, Port: port, Log: log, Remove: true,
	})
	if err != nil {
		said, _ := os.ReadFile(log.Name())
		os.RemoveAll(home)
		return "", fmt.Errorf("embedded postgres: %w\n%s", err, said)
	}
	return s.URL(), nil
}

// ModuleRoot is the folder of the go.mod above the working directory (a
// test runs in its package's folder): where a test finds the project's
// files.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// dockerAnswers reports whether a Docker engine is reachable, quickly and
// without panicking when there is none.
func dockerAnswers() (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	p, err := testcontainers.ProviderDefault.GetProvider()
	if err != nil {
		return false
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return p.Health(ctx) == nil
}

// startContainer starts the Postgres container that every test of this
// process shares; testcontainers' reaper removes it when the process exits.
func startContainer() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := tcpostgres.Run(ctx, "postgres:16-alpine",
		tcpostgres.WithDatabase("postgres"),
		tcpostgres.WithUsername("postgres"),
		tcpostgres.WithPassword("postgres"),
		tcpostgres.BasicWaitStrategies(),
	)
	if err != nil {
		return "", fmt.Errorf("start postgres container: %w", err)
	}
	return c.ConnectionString(ctx, "sslmode=disable")
}

// ServerURL is the URL of the Postgres server tests use, for a test that
// makes databases of its own.
func ServerURL(t testing.TB) string {
	t.Helper()
	u, err := server()
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	return u
}

// Postgres returns a pool on a database of its own, migrated with ms and
// dropped when the test ends. The pool allows 32 connections.
func Postgres(t testing.TB, ms ...pgmigrate.Migration) *pgxpool.Pool {
	t.Helper()
	url := Database(t, ms...)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 32
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Database creates a database of its own, migrated with ms, and returns
// its URL; it is dropped (with whatever is still connected) when the test
// ends.
func Database(t testing.TB, ms ...pgmigrate.Migration) string {
	t.Helper()
	base := ServerURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("postgres at %s: %v", pgdb.Redact(base), err)
	}
	defer admin.Close(context.Background())

	tmpl, err := template(ctx, admin, base, ms)
	if err != nil {
		t.Fatalf("template database: %v", err)
	}
	name := "test_" + strings.ReplaceAll(uuid.NewString(), "-", "")
	if _, err := admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, tmpl)); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Logf("drop %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop %s: %v", name, err)
		}
	})
	return pgdb.WithDatabase(base, name)
}

var templates sync.Map // template name → *sync.Once-guarded result

type templateResult struct {
	once sync.Once
	err  error
}

// template returns the name of a database migrated with ms, creating it if
// no earlier run did. Its name is a hash of the migrations, so a changed
// migration gets a new template and an old one is never used by mistake.
func template(ctx context.Context, admin *pgx.Conn, base string, ms []pgmigrate.Migration) (string, error) {
	h := sha256.New()
	for _, m := range ms {
		fmt.Fprintf(h, "%s\x00", m.VersionTable)
		err := fs.WalkDir(m.FS, m.Dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := fs.ReadFile(m.FS, path)
			fmt.Fprintf(h, "%s\x00%s\x00", path, b)
			return err
		})
		if err != nil {
			return "", err
		}
	}
	name := "tmpl_" + hex.EncodeToString(h.Sum(nil))[:24]
	v, _ := templates.LoadOrStore(name, &templateResult{})
	res := v.(*templateResult)
	res.once.Do(func() { res.err = buildTemplate(ctx, admin, base, name, ms) })
	return name, res.err
}

// buildTemplate creates template name unless it exists. It builds under a
// temporary name and renames when done, so a crash half-way never leaves a
// half-migrated template behind, and holds an advisory lock so that test
// binaries running in parallel build it once.
func buildTemplate(ctx context.Context, admin *pgx.Conn, base, name string, ms []pgmigrate.Migration) error {
	if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock(hashtext($1))", name); err != nil {
		return err
	}
	defer admin.Exec(context.Background(), "SELECT pg_advisory_unlock(hashtext($1))", name)

	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil || exists {
		return err
	}
	building := name + "_building"
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+building+" WITH (FORCE)"); err != nil {
		return err
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+building); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, pgdb.WithDatabase(base, building))
	if err != nil {
		return err
	}
	err = pgmigrate.Apply(ctx, pool, ms...)
	pool.Close()
	if err != nil {
		return err
	}
	_, err = admin.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s RENAME TO %s", building, name))
	return err
}

// LockTable holds an exclusive lock on table, as a stalled database would
// hold every statement on it, until release or the end of the test.
func LockTable(t testing.TB, pool *pgxpool.Pool, table string) (release func()) {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE "+table+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { _ = tx.Rollback(ctx) }) }
	t.Cleanup(release)
	return release
}
