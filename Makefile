# Switchboard build, test and measurement targets.
GO        ?= go
BIN       ?= bin/switchboard
FUZZTIME  ?= 30s
BENCHTIME ?= 1x
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: build test vet race bench bench-mqtt run fuzz clean

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/switchboard

# The test command CI runs: static checks, then every test with the race
# detector (unit, property, fuzz seed corpora and process-level conformance).
test: vet
	$(GO) test -race -count=1 -timeout 15m ./...

vet:
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi

bench:
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=$(BENCHTIME) -count=3 ./core/...
	$(GO) test -run='^$$' -bench=IdleStream -benchtime=1x -count=3 ./adapters/sse/
	$(GO) test -run='^$$' -bench=Fanout -benchtime=2000x -count=3 ./adapters/sse/

# Switchboard's MQTT adapter and Mosquitto under the same load, side by
# side (installs Debian's mosquitto package if missing); about 6 minutes.
bench-mqtt:
	./scripts/bench-mqtt.sh

run:
	$(GO) run ./cmd/switchboard serve --dev

# Run every fuzz target for FUZZTIME each.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$target"; \
	    $(GO) test -run='^$$' -fuzz="^$$target$$" -fuzztime=$(FUZZTIME) $$pkg; \
	  done; \
	done

clean:
	rm -rf bin
