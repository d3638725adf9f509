# The index of what a developer can do here. CI runs `make lint test`.

GO      ?= go
DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres

.PHONY: run test bench lint devbroker

## run: start the dev Kafka broker (kfake on 127.0.0.1:9092, data in .devbroker)
run: devbroker

devbroker:
	$(GO) build -o bin/devbroker ./cmd/devbroker
	exec bin/devbroker -port 9092 -data .devbroker

## test: every test, with the race detector, against the local Postgres and in-process Kafka
test:
	$(GO) test -race -count=1 -timeout 20m ./...

## bench: append vs pgbench, relay throughput, commit-to-consumer latency
bench:
	DATABASE_URL=$(DATABASE_URL) $(GO) run ./cmd/esbench

## lint: formatting and vet
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
