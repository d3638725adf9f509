# The index of what a developer can do here. CI runs `make lint test`.

GO      ?= go
# The projector's database as make run sets it up (devstack: "readmodel").
READMODEL_URL ?= postgres://postgres:postgres@127.0.0.1:5432/readmodel?sslmode=disable

.PHONY: run token jaeger trace build test test-kafka chaos chaos-kafka bench bench-saga lint devbroker devpostgres kafka kafka-cluster kafka-secure kafka-certs rebuild demo watch

## run: the dev Kafka broker (127.0.0.1:9092), the services (order :8080, customer :8081, projector :8082) and, unless DATABASE_URL is set or a Postgres answers on 127.0.0.1:5432, an embedded PostgreSQL (data in .postgres); Ctrl-C stops all
run: build
	exec bin/devstack -bin bin -data .devbroker -pgdata .postgres

## token: a development bearer token signed with AUTH_HS256_SECRET (the services' secret): make token CUSTOMER=<customer id>, or make token ADMIN=1
token:
	@$(GO) build -o bin/ ./cmd/token && bin/token $(if $(ADMIN),-admin,-customer '$(CUSTOMER)')

## jaeger: Jaeger all-in-one (traces kept in memory), built from the Go module proxy into bin/jaeger on first use (minutes; pinned in deploy/jaeger/go.mod); OTLP on 127.0.0.1:4317 (gRPC) and 4318 (HTTP), the query API on :16686 (this build has no web UI); a make run started after it exports its traces there; Ctrl-C stops it
jaeger: bin/jaeger
	exec bin/jaeger

bin/jaeger: deploy/jaeger/go.mod deploy/jaeger/go.sum
	cd deploy/jaeger && $(GO) build -o ../../bin/jaeger github.com/jaegertracing/jaeger/cmd/jaeger

## trace: against a running stack that exports to make jaeger's Jaeger, one order's saga as one trace, fetched from Jaeger and printed span by span
trace: build
	bin/tracecheck

## demo: against a running stack (make run), sagas that end in each way, step by step
demo: build
	bin/demo

## watch: the events on the topics as they come, decoded and grouped by saga
watch: build
	bin/sagawatch

## build: the commands into bin/
build:
	$(GO) build -o bin/ ./cmd/... ./services/order/cmd/order ./services/customer/cmd/customer ./services/projector/cmd/projector

## devbroker: the dev Kafka broker alone
devbroker: build
	exec bin/devbroker -port 9092 -data .devbroker

## devpostgres: the embedded PostgreSQL of make run alone (127.0.0.1:5432, data in .postgres)
devpostgres: build
	exec bin/devpostgres -port 5432 -dir .postgres

## kafka: real Apache Kafka (KRaft), one node on 127.0.0.1:9092, as a JVM (Java 17; the first start fetches the jars with Maven into .kafka/lib); data and logs in .kafka; Ctrl-C stops it
kafka:
	exec scripts/kafka.sh 1

## kafka-cluster: real Apache Kafka, three nodes on 127.0.0.1:19092,19093,19094 (controllers 19192-19194), one quorum; data and logs in .kafka; Ctrl-C stops them
kafka-cluster:
	exec scripts/kafka.sh 3

## test: every test, with the race detector, on in-process Kafka and Postgres from TEST_DATABASE_URL, Docker, 127.0.0.1:5432 or embedded
test:
	$(GO) test -race -count=1 -timeout 20m ./...

## kafka-secure: real Apache Kafka, one node that takes TLS and SASL only (SASL_SSL on 127.0.0.1:9192, controller 9193) and authorizes with ACLs; sets up a SCRAM user per service with least-privilege ACLs (bin/kafkagrant) and writes each one's settings to .kafka/secure/<service>.env; Ctrl-C stops it
kafka-secure:
	$(GO) build -o bin/ ./cmd/kafkagrant
	exec scripts/kafka.sh secure

## kafka-certs: a local CA, the secure broker's certificate and the passwords of its users, in .kafka/secure/ (kept if there; make kafka-secure makes them too)
kafka-certs:
	scripts/kafka-certs.sh

## test-kafka: the saga, outbox, projector and kcat tests on a real Kafka broker (make kafka's), then the ACL tests and a saga with a principal per service on make kafka-secure's; each started and stopped for its part (9092 and 9192 must be free)
test-kafka:
	GO='$(GO)' scripts/test-kafka.sh

## chaos: two instances of each service under 200 orders/s for CHAOS_DURATION (3m): one instance killed (SIGKILL) every 10 s and restarted, the broker frozen 10 s, Postgres restarted in immediate mode; checks that no saga is lost, decided twice or stalled over 15 s by a kill (ports 8080-8085, 9092 and 15432 must be free)
chaos: CHAOS_DURATION ?= 3m
chaos: CHAOS_MAX_PAUSE ?= 15s
chaos: build
	bin/chaos -scenario processes -duration $(CHAOS_DURATION) -max-pause $(CHAOS_MAX_PAUSE)

## chaos-kafka: a broker of a three-node Kafka cluster killed (SIGKILL) and restarted 20 s later while orders flow through make run's services; checks that no saga is lost or decided twice (ports 8080-8082 and 19092-19094 must be free)
chaos-kafka: build
	scripts/with-postgres.sh bin/chaos -scenario kafka

## bench: the saga benchmark (bench-saga), then the event store's and the projector's, on make run's Postgres
bench:
	scripts/with-postgres.sh sh -c 'scripts/bench-saga.sh && $(GO) run ./cmd/esbench && $(GO) run ./cmd/projbench'

## bench-saga: make run's stack on fresh databases; sagas/s for 60 s vs pgbench, latency at 40% of that and at 250/s, RSS; PROFILE=1 adds CPU by program and the statements per saga (pg_stat_statements, preloaded in the embedded server it starts)
bench-saga:
	PROFILE='$(PROFILE)' PG_PRELOAD='$(if $(PROFILE),pg_stat_statements)' scripts/with-postgres.sh scripts/bench-saga.sh

## rebuild: rebuild the read models of make run's stack beside the running projector
rebuild: build
	DATABASE_URL='$(READMODEL_URL)' KAFKA_BROKERS=127.0.0.1:9092 bin/projector rebuild

## lint: formatting, vet, a tidy go.mod and staticcheck (pinned, run through the module proxy, not a dependency in go.mod)
lint: STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) mod tidy -diff
	$(STATICCHECK) ./...
