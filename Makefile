# The index of what a developer can do here. CI runs `make lint test`.

GO      ?= go
DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
# The projector's database as make run sets it up (devstack: "readmodel").
READMODEL_URL ?= postgres://postgres@127.0.0.1:5432/readmodel?sslmode=disable

.PHONY: run build test bench bench-saga lint devbroker rebuild demo watch

## run: the dev Kafka broker (127.0.0.1:9092) and the services (order :8080, customer :8081, projector :8082); Ctrl-C stops all
run: build
	DATABASE_URL=$(DATABASE_URL) exec bin/devstack -bin bin -data .devbroker

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

## test: every test, with the race detector, against the local Postgres and in-process Kafka
test:
	$(GO) test -race -count=1 -timeout 20m ./...

## bench: the saga benchmark (bench-saga), then the event store's and the projector's
bench: bench-saga
	DATABASE_URL=$(DATABASE_URL) $(GO) run ./cmd/esbench
	DATABASE_URL=$(DATABASE_URL) $(GO) run ./cmd/projbench

## bench-saga: make run's stack on fresh databases; sagas/s for 60 s vs pgbench, latency at 250/s, RSS
bench-saga:
	DATABASE_URL='$(DATABASE_URL)' scripts/bench-saga.sh

## rebuild: rebuild the read models of make run's stack beside the running projector
rebuild: build
	DATABASE_URL='$(READMODEL_URL)' KAFKA_BROKERS=127.0.0.1:9092 bin/projector rebuild

## lint: formatting and vet
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
