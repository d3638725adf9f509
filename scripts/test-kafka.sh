#!/usr/bin/env bash
# make test-kafka: the tests that talk to Kafka, on real Apache Kafka brokers
# instead of kfake: the end-to-end saga tests, the outbox relay and consumer
# tests (with the kcat one), and the projector's on make kafka's node
# (127.0.0.1:9092); the ACL tests and the saga on a secured cluster on make
# kafka-secure's (SASL_SSL on 127.0.0.1:9192, each service its own
# principal). It starts both nodes (scripts/kafka.sh: fetched with Maven on
# first use), runs the tests with TEST_KAFKA_BROKERS and TEST_KAFKA_SECURE,
# and stops them. Tests that need kfake's fault injection skip themselves
# there, saying why; make test runs them.
set -euo pipefail
cd "$(dirname "$0")/.."

for port in 9092 9192; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "test-kafka: 127.0.0.1:$port is taken (make run, make kafka or make kafka-secure?); stop it first" >&2
		exit 1
	fi
done
${GO:-go} build -o bin/ ./cmd/kafkagrant
plain_log=$(mktemp)
secure_log=$(mktemp)
scripts/kafka.sh 1 >"$plain_log" 2>&1 &
plain=$!
scripts/kafka.sh secure >"$secure_log" 2>&1 &
secure=$!
stop() {
	kill -TERM "$plain" "$secure" 2>/dev/null || true
	wait "$plain" "$secure" 2>/dev/null || true
	rm -f "$plain_log" "$secure_log"
}
trap stop EXIT
for _ in $(seq 600); do
	grep -q '^KAFKA_BROKERS=' "$plain_log" && grep -q '^KAFKA_BROKERS=' "$secure_log" && break
	{ kill -0 "$plain" && kill -0 "$secure"; } 2>/dev/null || break
	sleep 1
done
if ! grep -q '^KAFKA_BROKERS=' "$plain_log" || ! grep -q '^KAFKA_BROKERS=' "$secure_log"; then
	cat "$plain_log" "$secure_log" >&2
	echo "test-kafka: a broker did not start" >&2
	exit 1
fi
grep -hE '^kafka: (starting|up)' "$plain_log" "$secure_log" || true

TEST_KAFKA_BROKERS=127.0.0.1:9092 TEST_KAFKA_SECURE=$PWD/.kafka/secure ${GO:-go} test -race -count=1 -timeout 20m \
	./pkg/outbox/ ./services/e2e/ ./services/projector/ ./internal/kafkaacl/
