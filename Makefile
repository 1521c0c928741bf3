# segd build and test entry points. `make test` is what CI runs (.ci/run).
GO        ?= go
BIN       := bin/segd
PKGS      := ./...
FUZZTIME  ?= 60s
STATICCHECK_VERSION ?= v0.7.0

.PHONY: all build test test-kafka test-registry test-fast demo bench bench-quick bench-scaling bench-go lint fuzz clean

all: build

build:
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/segd

# test runs every test with the race detector: vet, unit, crash and integration
# tests (the embedded Kafka broker needs nothing installed), with a real schema
# registry running for the registry tests (see test-registry; they fail here
# without one).
test: build
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	cd bench/goka && $(GO) vet ./...
	cd deploy/validate && $(GO) test -count=1 ./...
	./scripts/install-chromium.sh
	SEGD_UI_TEST=1 SEGD_REQUIRE_REGISTRY=1 SEGD_ARTIFACTS=$(CURDIR)/artifacts \
	  ./deploy/registry/with-registry.sh $(GO) test -race -count=1 -timeout 20m $(PKGS)
	$(MAKE) test-kafka

# test-kafka starts real Apache Kafka brokers (3.9.1 and 4.1.0, KRaft, jars
# from Maven Central cached in ~/.cache/segd) one after the other and runs
# the real-broker tests against each (deploy/kafka/).
test-kafka:
	GO=$(GO) ./deploy/kafka/test-kafka.sh

# test-registry runs only the tests that need a real schema registry: Apicurio
# Registry 2.6.13.Final (Java 17), installed with mvn from Maven Central into
# ~/.cache/segd on first use and started on a free loopback port for the run
# (deploy/registry/). Without it, `go test ./...` skips them.
test-registry:
	SEGD_REQUIRE_REGISTRY=1 ./deploy/registry/with-registry.sh $(GO) test -count=1 -v -run 'RealRegistry' ./engine

# test-fast skips the race detector, for quick local iterations.
test-fast:
	$(GO) test -count=1 -timeout 20m $(PKGS)

demo: build
	./$(BIN) demo

# bench runs the standard benchmark (bench/README.md): segd against the Go-map
# limit and the goka baseline in one run, decoders against encoding/json and
# goavro, file replay with 1 and 2 workers, latency against the transport
# alone (changelog off and on), a segments sweep with a 1000-segment row;
# ends with one line per performance target. End to end and goka run twice,
# alternating (target 5 was decided by the machine's load). About 6 minutes here.
bench:
	$(GO) run ./bench/cmd/segd-bench --label standard --customers 1000000 --events 2000000 \
	  --latency-for 20s --e2e-rounds 2 --cpuprofile bench/results/engine-cpu.pprof \
	  --decode-events 300000 --replay-events 300000 --replay-rounds 2 \
	  --sweep 100000:300000:10,100000:300000:100,100000:300000:1000 \
	  --out bench/results/latest.json --markdown bench/results/latest.md

# bench-scaling sweeps the customer count (100k, 1M, 10M) with the standard
# rules: throughput, memory, state size and restart time; then builds a store
# with 2.1M active customers and times its restart (target 6; about 2 minutes).
bench-scaling:
	$(GO) run ./bench/cmd/segd-bench --label scaling --customers 1000 --events 1000 --skip-goka --latency-for 0 \
	  --targets 6 --restart-active 2100000 \
	  --sweep 100000:300000:20,1000000:2000000:20,10000000:6000000:20 \
	  --out bench/results/scaling.json --markdown bench/results/scaling.md

# bench-quick is a smaller bench (100k customers), written beside it: every
# target but 6, about two minutes.
bench-quick:
	$(GO) run ./bench/cmd/segd-bench --label quick --customers 100000 --events 300000 \
	  --latency-for 10s --decode-events 100000 --replay-events 100000 --replay-rounds 2 \
	  --sweep 100000:300000:1000 \
	  --out bench/results/quick.json --markdown bench/results/quick.md

# bench-go runs every package's Go benchmarks.
bench-go:
	$(GO) test -run='^$$' -bench=. -benchmem $(PKGS)

# lint: vet and staticcheck over every module, and deploy/ validated against
# the Kubernetes API types (deploy/validate; no cluster needed).
lint:
	$(GO) vet $(PKGS)
	$(GO) test -count=1 ./internal/repocheck
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)
	cd bench/goka && $(GO) vet ./... && $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	cd deploy/validate && $(GO) vet ./... && $(GO) test -count=1 ./...

# fuzz runs every fuzz target for FUZZTIME each.
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$t"; $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) $$pkg; \
	  done; \
	done

clean:
	rm -rf bin artifacts
