# twtrace build. `make test` and `make run` need only Go and root; `make
# generate` (rebuilding the committed BPF objects) also needs clang 14 and
# libbpf headers, which `make deps` installs from Debian's packages.

GO        ?= go
CLANG     ?= clang-14
BIN       := bin/twtrace
LOAD      := bin/twload
DEB_PKGS  := clang-14 llvm-14 libbpf-dev
# The real components some tests run against (docs/vmtest.md lists them).
TEST_PKGS := runc containerd busybox-static prometheus podman gcc lld-14
# make image: the static binary it copies, and the tag it builds.
STATIC    := bin/twtrace-static
IMAGE     ?= twtrace:dev
FUZZTIME  ?= 10s
# The version twtrace reports (twtrace_build_info): the commit, or a tag.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS   := -X main.version=$(VERSION)

.PHONY: all build image generate check-generated deps test-deps test vmtest vmtest-kernels fuzz lint run demo bench soak clean

all: build

# Static binaries (no cgo): one file to copy to a host or into a VM, and
# no C library mapped into the process (~1 MiB of twtrace's RSS).
build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/twtrace
	CGO_ENABLED=0 $(GO) build -o $(LOAD) ./cmd/twload

# The agent's container image (Containerfile: FROM scratch plus the static
# binary). A FROM scratch + COPY build runs nothing, so podman needs no
# container runtime for it; as root it works with its defaults (overlay
# storage). IMAGE=registry/twtrace:tag to name it for a push.
image:
	@command -v podman >/dev/null || { echo "make image needs podman (apt-get install podman, or make test-deps as root)" >&2; exit 1; }
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(STATIC) ./cmd/twtrace
	podman build -t $(IMAGE) -f Containerfile .

# Regenerate the Go bindings and BPF objects from bpf/*.c (committed).
generate: deps
	cd pkg/tracer && PATH="/usr/lib/llvm-14/bin:$$PATH" $(GO) generate ./...
	cd test/bench && PATH="/usr/lib/llvm-14/bin:$$PATH" $(GO) generate ./...
	cd pkg/inventory && PATH="/usr/lib/llvm-14/bin:$$PATH" $(GO) generate ./...

# CI: the committed objects must be what the C sources compile to.
check-generated: generate
	@git diff --exit-code -- pkg/tracer test/bench pkg/inventory || { echo "committed BPF objects are stale: run 'make generate' and commit" >&2; exit 1; }

# Installs the C toolchain when it is missing (root and apt-get), or says
# exactly what to install.
deps:
	@missing=""; \
	command -v $(CLANG) >/dev/null || missing="$$missing clang-14"; \
	command -v llvm-strip-14 >/dev/null || command -v llvm-strip >/dev/null || missing="$$missing llvm-14"; \
	test -f /usr/include/bpf/bpf_helpers.h || missing="$$missing libbpf-dev"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PKGS) >/dev/null; \
		else \
			echo "missing:$$missing (install with: apt-get install$$missing)" >&2; exit 1; \
		fi; \
	fi

# Privileged tests need root (or CAP_BPF+CAP_PERFMON+CAP_NET_ADMIN+CAP_SYS_ADMIN);
# without them they skip, except under CI=true where they fail. Packages run
# one at a time (-p 1): tests count the BPF programs loaded host-wide.
test: test-deps
	$(GO) test -p 1 -count=1 ./...

# Installs the real components tests run against (a container runtime,
# busybox for container images, Prometheus and promtool, podman for make
# image, compilers and nginx for the call-site tests) when missing and root with apt-get;
# otherwise says what is missing: those tests then skip, except under
# CI=true, where they fail.
test-deps:
	@missing=""; \
	command -v runc >/dev/null || missing="$$missing runc"; \
	command -v containerd >/dev/null || missing="$$missing containerd"; \
	test -x /bin/busybox && ! ldd /bin/busybox >/dev/null 2>&1 || missing="$$missing busybox-static"; \
	command -v promtool >/dev/null && command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v podman >/dev/null || missing="$$missing podman"; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	command -v ld.lld-14 >/dev/null || missing="$$missing lld-14"; \
	command -v nginx >/dev/null || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "missing:$$missing (install with: apt-get install$$missing); the tests that need them skip" >&2; \
		fi; \
	fi

# The test suite inside QEMU VMs booted with Debian's cloud kernels, in
# software emulation (see docs/vmtest.md); arm64-6.12 in qemu-system-aarch64
# with GOARCH=arm64 tests. KERNELS="6.1" for a subset;
#
# VMTEST_PKGS, VMTEST_FLAGS narrow the run; VMTEST_NONFATAL="5.10" reports a
# kernel's failures without failing. Installs qemu when missing (root
# and apt-get); without qemu or a kernel it skips, except under CI=true.
KERNELS ?= 5.10 6.1 6.12 arm64-6.12
vmtest:
	KERNELS="$(KERNELS)" GO="$(GO)" test/vm/vmtest.sh

# Downloads the kernels (vmlinuz only) and a static busybox into .cache/vmtest
# once; REFRESH=1 looks for newer kernels.
vmtest-kernels:
	test/vm/fetch.sh .cache/vmtest $(KERNELS)

fuzz:
	@for pkg in ./internal/testnet ./pkg/event ./pkg/filter ./pkg/load ./pkg/inventory ./pkg/headroom ./pkg/verdict ./pkg/run ./internal/containertest ./pkg/cri ./pkg/cgroup ./internal/mountinfo ./deploy ./test/soak ./test/bench ./pkg/symbol ./pkg/watch; do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "fuzzing $$pkg $$f for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out" >&2; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

run: build
	./$(BIN) watch

demo: build
	./$(BIN) demo

# Throughput cost of tracing, interleaved against the anchors (no tracer,
# a bare counter, bpftrace when installed): see docs/performance.md. Root.
# BENCH_FLAGS="-rounds 5 -duration 5s" to change the defaults.
BENCH_FLAGS ?=
bench: build
	$(GO) run ./test/bench -twtrace $(BIN) -twload $(LOAD) $(BENCH_FLAGS)

# An accelerated day of churn under twtrace agent, sampled every second
# (memory, scrape time, series, CPU) into bin/soak.csv: see
# docs/performance.md. Root; about 10 minutes. SOAK_FLAGS="-processes
# 5000 -connections 500000" for a shorter one.
SOAK_FLAGS ?=
soak: build
	$(GO) run ./test/soak -twtrace $(BIN) -twload $(LOAD) -csv bin/soak.csv $(SOAK_FLAGS)

clean:
	rm -rf bin
