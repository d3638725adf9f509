#!/usr/bin/env bash
# Runs a command (the benchmarks) with DATABASE_URL naming a Postgres server,
# the same one make run's services use: DATABASE_URL if it is set, else the
# server on 127.0.0.1:5432 if one answers, else the embedded PostgreSQL of
# make run (bin/devpostgres, data in .postgres), started for the command and
# stopped after it. The benchmarks also need psql and pgbench: when they are
# missing, Debian's packages that carry them are installed (pgbench comes with
# the server package before PostgreSQL 17), without creating a cluster.
#
# PG_PRELOAD sets the shared_preload_libraries of an embedded server it
# starts (make bench-saga PROFILE=1: pg_stat_statements).
#
#   scripts/with-postgres.sh scripts/bench-saga.sh
set -euo pipefail
cd "$(dirname "$0")/.."

pg_tools() {
	command -v psql >/dev/null && command -v pgbench >/dev/null && return 0
	if [ "$(id -u)" != 0 ]; then
		echo "with-postgres: psql and pgbench are missing; install Debian's postgresql-client and postgresql packages" >&2
		exit 1
	fi
	echo "== installing psql and pgbench (Debian's postgresql-client and postgresql; no cluster is created or started)"
	mkdir -p /etc/postgresql-common/createcluster.d
	echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/eventsaga-no-main-cluster.conf
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q postgresql-client postgresql >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null && apt-get install -y -q postgresql-client postgresql >/dev/null; }
	command -v pgbench >/dev/null || { echo "with-postgres: pgbench still missing after the install" >&2; exit 1; }
}
pg_tools

if [ -z "${DATABASE_URL:-}" ]; then
	export DATABASE_URL='postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable'
	if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
		make --no-print-directory build
		bin/devpostgres -port 5432 -dir .postgres ${PG_PRELOAD:+-preload "$PG_PRELOAD"} &
		pg=$!
		trap 'kill -TERM "$pg" 2>/dev/null; wait "$pg" || true' EXIT
		for _ in $(seq 300); do
			psql "$DATABASE_URL" -Atqc 'SELECT 1' >/dev/null 2>&1 && break
			kill -0 "$pg" 2>/dev/null || { echo "with-postgres: the embedded PostgreSQL did not start" >&2; exit 1; }
			sleep 1
		done
	fi
fi
"$@"
