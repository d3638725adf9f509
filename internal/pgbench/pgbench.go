// Package pgbench runs the reference that the benchmarks compare with:
// Postgres' own pgbench, each transaction inserting one row (a small JSON
// document, about the size of an event) into a table of its own.
package pgbench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Table is the statement that creates the table Run inserts into.
const Table = `CREATE TABLE pgbench_rows (id bigserial PRIMARY KEY, data jsonb NOT NULL)`

// Pad is the padding of the inserted document, for benchmarks that write
// documents of the same size.
var Pad = strings.Repeat("x", 200)

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// Run runs pgbench against the database at url (where Table exists) with
// clients clients for d, and returns its transactions per second.
func Run(ctx context.Context, url string, clients int, d time.Duration) (float64, error) {
	dir, err := os.MkdirTemp("", "pgbench")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "insert.sql")
	insert := `INSERT INTO pgbench_rows (data) VALUES ('{"seq": 1, "total": "12.50", "pad": "` + Pad + `"}');` + "\n"
	if err := os.WriteFile(script, []byte(insert), 0o644); err != nil {
		return 0, err
	}
	out, err := exec.CommandContext(ctx, "pgbench", "-n", "-c", strconv.Itoa(clients), "-j", "2",
		"-T", strconv.Itoa(int(d.Seconds())), "-f", script, url).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench: %v\n%s", err, out)
	}
	m := tpsLine.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no tps in pgbench output:\n%s", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}
