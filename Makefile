# The platform's entry points. `make run` and `make test` work on a fresh
# Debian machine as root: both install what is missing first.
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build prereqs stack systemd-image run test test-unit bench bench-scale systemd-verify clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/deis-coordinator ./coordinator/cmd/deis-coordinator
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/deis-agent ./agent/cmd/deis-agent
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/deisctl ./ctl/cmd/deisctl

# Docker engine, Nginx, git, debootstrap; dockerd started; stack image built.
prereqs:
	@testing/local/prereqs.sh

stack:
	@coordinator/stack/mkimage.sh

# The Debian image with systemd that testing/systemd boots the units in
# (once, about a minute).
systemd-image:
	@testing/systemd/mkimage.sh

run: prereqs build
	@testing/local/run.sh

# Unit, integration and end-to-end tests against real etcd, Docker, Nginx, git
# and systemd (testing/systemd boots the units in the systemd image).
test: prereqs systemd-image build
	$(GO) test -count=1 -timeout 45m ./...

test-unit:
	$(GO) test -count=1 -short ./...

# The control plane at scale: the real scheduler and etcd (separate
# processes) with simulated agents and proxies; prints the figures of
# docs/benchmarks.md. SIZES=nodes/formations/containers,... (default
# 10/50/200,100/500/2000,1000/2000/20000), and the memory of a real agent
# with 50 real containers (Docker); DEIS_BENCH_OUT=file keeps the tables.
bench-scale:
	DEIS_BENCH_SCALE=$(or $(SIZES),1) $(GO) test -count=1 -run 'TestScale$$|TestAgentRSS$$' -v -timeout 30m ./testing/bench/

# Go benchmarks of the pure parts (scheduler passes, the view, the release log).
bench:
	$(GO) test -count=1 -run XXX -bench . ./testing/bench/ ./pkg/view/

systemd-verify:
	systemd-analyze verify systemd/*.service

clean:
	rm -rf $(BIN)
