// Package pgbench runs the references that the benchmarks compare with:
// Postgres' own pgbench, each transaction inserting one row (a small JSON
// document, about the size of an event) into a table of its own (Run), or
// doing what the event store does to append one event (RunUnitOfWork).
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
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
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
	insert := `INSERT INTO pgbench_rows (data) VALUES ('{"seq": 1, "total": "12.50", "pad": "` + Pad + `"}');` + "\n"
	return run(ctx, url, clients, d, insert)
}

// The unit of work's statements, as the event store sends them to append
// one event to a stream that exists (pkg/eventstore: insertEvents with its
// guard, then outbox.Insert), pipelined as one implicit transaction in one
// round trip. Each client appends to a stream of its own (made by
// RunUnitOfWork at version 1), whose next version it counts in :v.
const unitOfWork = `\set v :v + 1
\set prev :v - 1
\startpipeline
INSERT INTO events (aggregate_id, version, aggregate_type, event_id, event_type, schema_version, occurred_at, correlation_id, causation_id, data)
SELECT * FROM unnest(ARRAY[{agg}]::uuid[], ARRAY[:v]::bigint[], ARRAY['bench']::text[], ARRAY[gen_random_uuid()]::uuid[], ARRAY['BenchEvent']::text[], ARRAY[1]::int[], ARRAY[now()]::timestamptz[], ARRAY[{agg}]::uuid[], ARRAY[{agg}]::uuid[], ARRAY['{data}']::jsonb[]) WHERE (SELECT eventstore_expect_versions(ARRAY[{agg}]::uuid[], ARRAY[:prev]::bigint[]));
INSERT INTO outbox (topic, key, value, header_keys, header_values)
SELECT m.topic, m.key, m.value, (ARRAY['event_type', 'event_id']::text[])[m.hfrom : m.hto], (ARRAY['BenchEvent', '{id}']::bytea[])[m.hfrom : m.hto] FROM unnest(ARRAY['bench.events']::text[], ARRAY[{agg}]::text[], ARRAY['{envelope}']::bytea[], ARRAY[1]::int[], ARRAY[2]::int[]) WITH ORDINALITY AS m(topic, key, value, hfrom, hto, n) ORDER BY m.n;
\endpipeline
`

// The stream of a client of a run: pgbench cannot make a UUID, so the
// statements build it from the run and the client.
const streamOf = `('00000000-0000-4000-' || lpad(:run::text, 4, '0') || '-' || lpad(:client_id::text, 12, '0'))::uuid`

var runs atomic.Int32

// RunUnitOfWork runs pgbench against the database at url (migrated with
// the event store's and the outbox's schemas) with clients clients for d,
// each transaction appending one event as the event store does, and returns
// its transactions per second. Its events and outbox rows are left behind.
func RunUnitOfWork(ctx context.Context, db *pgxpool.Pool, url string, clients int, d time.Duration) (float64, error) {
	// Streams of a run of their own, as the database may hold earlier runs'.
	runID := runs.Add(1)
	// Version 1 of each client's stream, which the guard then finds.
	_, err := db.Exec(ctx, `
INSERT INTO events (aggregate_id, version, aggregate_type, event_id, event_type, schema_version, occurred_at, correlation_id, causation_id, data)
SELECT ('00000000-0000-4000-' || lpad($1::int::text, 4, '0') || '-' || lpad(c::text, 12, '0'))::uuid, 1, 'bench',
       gen_random_uuid(), 'BenchEvent', 1, now(), gen_random_uuid(), gen_random_uuid(), '{}'
FROM generate_series(0, $2::int - 1) c`, runID, clients)
	if err != nil {
		return 0, err
	}
	id := "0b8f5bde-4bb8-4a57-8d0c-3d0c1a3a1f7e"
	data := `{"seq": 1, "total": "12.50", "pad": "` + Pad + `"}`
	envelope := `{"event_id":"` + id + `","event_type":"BenchEvent","schema_version":1,"aggregate_type":"bench","aggregate_id":"` + id +
		`","aggregate_version":1,"occurred_at":"2026-12-01T20:14:03.953123Z","correlation_id":"` + id + `","causation_id":"` + id +
		`","data":{"seq":1,"total":"12.50","pad":"` + Pad + `"}}`
	script := strings.NewReplacer("{agg}", streamOf, "{data}", data, "{id}", id, "{envelope}", envelope).Replace(unitOfWork)
	return run(ctx, url, clients, d, script, "-M", "prepared", "-D", "v=1", "-D", "run="+strconv.Itoa(int(runID)))
}

func run(ctx context.Context, url string, clients int, d time.Duration, script string, args ...string) (float64, error) {
	dir, err := os.MkdirTemp("", "pgbench")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "script.sql")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		return 0, err
	}
	args = append([]string{"-n", "-c", strconv.Itoa(clients), "-j", "2", "-T", strconv.Itoa(int(d.Seconds())), "-f", file}, args...)
	out, err := exec.CommandContext(ctx, "pgbench", append(args, url)...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench: %v\n%s", err, out)
	}
	m := tpsLine.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no tps in pgbench output:\n%s", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}
