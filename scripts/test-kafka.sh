#!/usr/bin/env bash
# make test-kafka: the tests that talk to Kafka, on a real Apache Kafka
# broker instead of kfake: the end-to-end saga tests, the outbox relay and
# consumer tests (with the kcat one), and the projector's. It starts one node
# (scripts/kafka.sh: 127.0.0.1:9092, fetched with Maven on first use), runs
# them with TEST_KAFKA_BROKERS, and stops it. Tests that need kfake's fault
# injection skip themselves there, saying why; make test runs them.
set -euo pipefail
cd "$(dirname "$0")/.."

if (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null; then
	echo "test-kafka: 127.0.0.1:9092 is taken (make run, or make kafka?); stop it first" >&2
	exit 1
fi
log=$(mktemp)
scripts/kafka.sh 1 >"$log" 2>&1 &
kafka=$!
stop() {
	kill -TERM "$kafka" 2>/dev/null || true
	wait "$kafka" 2>/dev/null || true
	rm -f "$log"
}
trap stop EXIT
for _ in $(seq 600); do
	grep -q '^KAFKA_BROKERS=' "$log" && break
	kill -0 "$kafka" 2>/dev/null || break
	sleep 1
done
grep -q '^KAFKA_BROKERS=' "$log" || { cat "$log" >&2; echo "test-kafka: the broker did not start" >&2; exit 1; }
grep -E '^kafka: (starting|up)' "$log" || true

TEST_KAFKA_BROKERS=127.0.0.1:9092 ${GO:-go} test -race -count=1 -timeout 20m \
	./pkg/outbox/ ./services/e2e/ ./services/projector/
