#!/usr/bin/env bash
# make test-kafka: the tests that talk to Kafka, on real Apache Kafka brokers
# instead of kfake. First on make kafka's node (127.0.0.1:9092): the
# end-to-end saga tests, the outbox relay and consumer tests (with the kcat
# one), and the projector's, with TEST_KAFKA_BROKERS. Then, that node
# stopped, on make kafka-secure's (SASL_SSL on 127.0.0.1:9192, ACLs): the ACL
# tests and the saga with each service as its own principal, with
# TEST_KAFKA_SECURE. One broker at a time: a second JVM on two cores slowed
# the first run's timing-sensitive tests enough to fail one. The nodes are
# scripts/kafka.sh's (fetched with Maven on first use). Tests that need
# kfake's fault injection skip themselves there, saying why; make test runs
# them.
set -euo pipefail
cd "$(dirname "$0")/.."

for port in 9092 9192; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "test-kafka: 127.0.0.1:$port is taken (make run, make kafka or make kafka-secure?); stop it first" >&2
		exit 1
	fi
done
${GO:-go} build -o bin/ ./cmd/kafkagrant

log=$(mktemp)
kafka=""
stop() {
	if [ -n "$kafka" ]; then
		kill -TERM "$kafka" 2>/dev/null || true
		wait "$kafka" 2>/dev/null || true
	fi
	kafka=""
}
trap 'stop; rm -f "$log"' EXIT

# start MODE: scripts/kafka.sh MODE in the background, until it prints
# KAFKA_BROKERS.
start() {
	: >"$log"
	scripts/kafka.sh "$1" >"$log" 2>&1 &
	kafka=$!
	for _ in $(seq 600); do
		grep -q '^KAFKA_BROKERS=' "$log" && break
		kill -0 "$kafka" 2>/dev/null || break
		sleep 1
	done
	grep -q '^KAFKA_BROKERS=' "$log" || { cat "$log" >&2; echo "test-kafka: the broker ($1) did not start" >&2; exit 1; }
	grep -E '^kafka: (starting|up)' "$log" || true
}

start 1
TEST_KAFKA_BROKERS=127.0.0.1:9092 ${GO:-go} test -race -count=1 -timeout 20m \
	./pkg/outbox/ ./services/e2e/ ./services/projector/
stop

start secure
TEST_KAFKA_SECURE=$PWD/.kafka/secure ${GO:-go} test -race -count=1 -timeout 10m \
	-run 'TestEachPrincipalMayDoItsPartOnly|TestSagaOnASecuredKafka' ./internal/kafkaacl/ ./services/e2e/
