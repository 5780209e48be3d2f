# restartcoord: make demo runs the scripted scenario, make test the tests.
GO        ?= go
BIN       := $(CURDIR)/bin
NATSCLI   := github.com/nats-io/natscli/nats@v0.5.0
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=0.1.0-$(subst /,-,$(VERSION))
export PATH := $(BIN):$(PATH)

.PHONY: all build demo dev test test-short bench lint fmt tools fuzz clean image integration chaos

all: build

build:
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/restartcoord ./cmd/restartcoord

# The container image: the static binary built here, copied into FROM scratch.
IMAGE ?= restartcoord:dev
image:
	mkdir -p deploy/.build
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o deploy/.build/restartcoord ./cmd/restartcoord
	docker build -t $(IMAGE) -f deploy/Dockerfile deploy

demo: build
	$(BIN)/restartcoord demo

dev: build
	$(BIN)/restartcoord dev

# The tests need the real nats CLI for the acceptance test: tools installs it.
test: tools
	$(GO) vet ./...
	$(GO) test -race -count=1 -p 1 -timeout 30m ./...

# Containers: builds restartcoord:dev, then starts the compose topology with
# testcontainers-go and drives it from the host (skips without Docker).
integration: image tools
	TESTCONTAINERS_RYUK_DISABLED=true $(GO) test -tags integration -count=1 -timeout 30m -v ./integration/

# A seeded run of faults under load and rolls, then the invariants
# (docs/CHAOS.md). SEED empty picks one (printed); DURATION is the fault phase.
SEED     ?=
FAULTS   ?=
DURATION ?= 3m
chaos:
	SEED=$(SEED) DURATION=$(DURATION) FAULTS=$(FAULTS) $(GO) test -tags chaos -run '^TestChaos$$' -count=1 -timeout 90m -v ./chaos/

test-short:
	$(GO) test -count=1 -short ./...

# Figures and machine in docs/BENCHMARKS.md and docs/benchmarks-clients-coordinator.md.
bench: build
	$(GO) test ./node -run '^$$' -bench '^Benchmark(GracefulRestart10k|EmergencyRestart10k|RestartFloor|WholeNodeCrashToHealthy|MetricsGracefulRestart10k)$$' -benchtime 10x -timeout 30m
	$(GO) test ./node -run '^$$' -bench 'ClientDo|DuringRestart|FullBuffer' -benchtime 3x -timeout 30m
	$(GO) test ./coordinator -run '^$$' -bench . -benchtime 3x -timeout 30m
	$(GO) test ./coordinator -run '^$$' -bench '^BenchmarkAlertLatency$$' -benchtime 200x -timeout 10m
	$(GO) test ./dashboard -run '^$$' -bench '^BenchmarkDashboard1000Nodes$$' -benchtime 200x -timeout 10m

fuzz:
	for f in $$($(GO) test -list 'Fuzz.*' ./schema | grep ^Fuzz); do \
		$(GO) test ./schema -run '^$$' -fuzz "^$$f$$" -fuzztime 20s || exit 1; done

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

tools: $(BIN)/nats

$(BIN)/nats:
	GOBIN=$(BIN) $(GO) install $(NATSCLI)

clean:
	rm -rf $(BIN) .restartcoord-dev .restartcoord-demo deploy/.build
