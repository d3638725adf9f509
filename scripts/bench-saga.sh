#!/usr/bin/env bash
# The saga benchmark: make run's stack (bin/devstack: dev broker, order,
# customer, projector) on fresh databases of its own, loaded by bin/loadgen.
#
#   1. as many orders as the system takes for $DURATION (64 in flight),
#      after the pgbench reference (single-row INSERT, 8 clients) for as long:
#      completed sagas/s, the ratio to pgbench, and each process's RSS;
#   2. after a CHECKPOINT, 40 % of the completed sagas/s of 1 (rounded to
#      tens), a load that scales with the machine, for $LATENCY_DURATION:
#      saga latency p50/p95/p99 and where it goes;
#   3. after another CHECKPOINT, the same at a fixed $RATE orders/s.
#
# With PROFILE=1 (make bench-saga PROFILE=1, which starts the embedded
# server with pg_stat_statements), the throughput run is followed by the CPU
# each program used, the statements the services sent (how many a saga, and
# the top 20 by time) and the top functions of a 30 s CPU profile of each
# service, taken in the middle of the run (their pprof ports, 6060-6062).
#
# Everything runs on this machine, as in the README's figures. The stack's
# databases (bench_*) and broker data are removed afterwards. Ports 9092 and
# 8080-8082 must be free: stop make run first.
set -euo pipefail
cd "$(dirname "$0")/.."

DATABASE_URL=${DATABASE_URL:?run it through scripts/with-postgres.sh (make bench-saga does)}
DURATION=${DURATION:-60s}
RATE=${RATE:-250}
LATENCY_DURATION=${LATENCY_DURATION:-30s}
prefix=bench_

# With KAFKA_BROKERS (a real cluster: make kafka) the stack runs on it;
# without, on a dev broker of its own on 9092.
ports="8080 8081 8082"
[ -n "${KAFKA_BROKERS:-}" ] || ports="9092 $ports"
for port in $ports; do
	if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
		echo "bench-saga: port $port is in use (is make run up?); stop it first" >&2
		exit 1
	fi
done

make --no-print-directory build
data=$(mktemp -d)
drop_databases() {
	for db in orders customers readmodel; do
		PGOPTIONS=--client-min-messages=warning psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS ${prefix}${db} WITH (FORCE)" >/dev/null
	done
}
drop_databases # a run that was killed may have left them
DATABASE_URL=$DATABASE_URL bin/devstack -bin bin -data "$data/broker" -db-prefix "$prefix" >"$data/stack.log" 2>&1 &
stack=$!
stop() {
	kill -INT "$stack" 2>/dev/null && wait "$stack" 2>/dev/null || true
	drop_databases
	rm -rf "$data"
}
trap stop EXIT

for _ in $(seq 120); do
	ready=0
	for port in 8080 8081 8082; do
		curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && ready=$((ready + 1))
	done
	[ "$ready" = 3 ] && break
	kill -0 "$stack" 2>/dev/null || { cat "$data/stack.log" >&2; exit 1; }
	sleep 0.5
done
[ "$ready" = 3 ] || { echo "bench-saga: the stack did not become ready" >&2; cat "$data/stack.log" >&2; exit 1; }

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(psql "$DATABASE_URL" -Atc 'SHOW server_version' | cut -d' ' -f1) Postgres, autovacuum $(psql "$DATABASE_URL" -Atc 'SHOW autovacuum')"
grep -m1 '^  traces ' "$data/stack.log" | sed 's/^  traces */== traces: /'
# CPU seconds each program has used so far, summed over its processes.
cpu() { ps -eo comm=,times= | awk '$1 ~ /^(order|customer|projector|devbroker|postgres|loadgen|pgbench)$/ {s[$1] += $2} END {for (c in s) print c, s[c]}' | sort; }
if [ -n "${PROFILE:-}" ]; then
	psql "$DATABASE_URL" -Atc 'SHOW shared_preload_libraries' | grep -q pg_stat_statements || {
		echo "bench-saga: PROFILE needs pg_stat_statements preloaded: make bench-saga PROFILE=1 starts the embedded server with it; a server already running needs shared_preload_libraries = 'pg_stat_statements'" >&2
		exit 1
	}
	psql "$DATABASE_URL" -qc 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements' -c 'SELECT pg_stat_statements_reset()' >/dev/null
	cpu >"$data/cpu.before"
fi
echo "== throughput: as many orders as taken for $DURATION"
if [ -n "${PROFILE:-}" ]; then
	# Once the orders flow (pgbench's reference is printed first) and have
	# for 10 s, 30 s of each service's CPU.
	(
		for _ in $(seq 600); do grep -q '^pgbench reference' "$data/throughput.log" 2>/dev/null && break; sleep 0.5; done
		sleep 10
		for svc in order:6060 customer:6061 projector:6062; do
			curl -sf -o "$data/${svc%%:*}.pprof" "http://127.0.0.1:${svc#*:}/debug/pprof/profile?seconds=30" &
		done
		wait
	) &
	profiler=$!
fi
DATABASE_URL=$DATABASE_URL bin/loadgen -duration "$DURATION" -settle 60s | tee "$data/throughput.log"
capacity=$(sed -n 's|^completed sagas: \([0-9]*\)/s.*|\1|p' "$data/throughput.log")
if [ -n "${PROFILE:-}" ]; then
	sagas=$(sed -n 's|^decided \([0-9]*\) .*|\1|p' "$data/throughput.log")
	echo
	echo "== profile of the throughput run: CPU seconds by program (the run, its settling and pgbench's reference)"
	cpu | join -a2 -e0 -o 0,1.2,2.2 "$data/cpu.before" - | awk '{printf "  %-10s %7.1f s\n", $1, $3 - $2}'
	echo "== statements of the services' databases: $sagas sagas"
	psql "$DATABASE_URL" -P footer=off -c "
SELECT sum(s.calls) AS statements, round(sum(s.calls)::numeric / $sagas, 1) AS per_saga,
       round(sum(s.total_exec_time)::numeric / 1000, 1) AS exec_s
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname LIKE '${prefix}%'"
	psql "$DATABASE_URL" -P footer=off -c "
SELECT substr(d.datname, length('${prefix}') + 1) AS db, s.calls,
       round(s.calls::numeric / $sagas, 2) AS per_saga,
       round(s.total_exec_time::numeric / 1000, 1) AS exec_s, round(s.mean_exec_time::numeric, 3) AS mean_ms,
       left(regexp_replace(s.query, '\s+', ' ', 'g'), 70) AS query
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname LIKE '${prefix}%'
ORDER BY s.total_exec_time DESC LIMIT 20"
	wait "$profiler" || true
	for svc in order customer projector; do
		echo "== $svc: top functions of 30 s of CPU in the middle of the run (go tool pprof -top)"
		if [ -s "$data/$svc.pprof" ]; then
			go tool pprof -top -nodecount=15 "bin/$svc" "$data/$svc.pprof" 2>/dev/null | sed -n '/^Duration/p; /flat%/,$p'
		else
			echo "  (no profile: was its pprof port answering?)"
		fi
	done
fi
echo
# The throughput run leaves Postgres ~0.5 GB of WAL into a checkpoint that
# then writes for most of a minute (log_checkpoints shows it); measured
# inside it, a latency run would pay for the throughput run's writes.
echo "== CHECKPOINT, so that each latency run pays for its own writes only"
psql "$DATABASE_URL" -qc CHECKPOINT
# A load that scales with the machine: 40 % of the capacity just measured,
# rounded to tens of orders/s.
[ -n "$capacity" ] || { echo "bench-saga: the throughput run printed no completed sagas/s" >&2; exit 1; }
at40=$(( (capacity * 4 + 50) / 100 * 10 ))
[ "$at40" -ge 10 ] || at40=10
echo "== latency at 40% of capacity: $at40 orders/s (40% of $capacity/s) for $LATENCY_DURATION"
bin/loadgen -pgbench=false -rate "$at40" -duration "$LATENCY_DURATION" -settle 30s
echo
echo "== CHECKPOINT"
psql "$DATABASE_URL" -qc CHECKPOINT
echo "== latency: $RATE orders/s for $LATENCY_DURATION"
bin/loadgen -pgbench=false -rate "$RATE" -duration "$LATENCY_DURATION" -settle 30s
