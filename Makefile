# spak — see README.md. `make demo` and `make test` are the quickstart (as root, Debian 12).
SHELL := /bin/bash
CLANG ?= $(shell command -v clang-16 || command -v clang-19 || command -v clang)
ARCH_INC := /usr/include/$(shell uname -m)-linux-gnu
BPF_CFLAGS := -O2 -g -Wall -Werror -target bpf -D__TARGET_ARCH_x86 -I$(ARCH_INC) -Ibpf
BPF_SRC := $(wildcard bpf/*.bpf.c)
BPF_OBJ := $(patsubst bpf/%.bpf.c,build/%.bpf.o,$(BPF_SRC))
BPF_HDR := $(wildcard bpf/*.h)
DEPS_STAMP := build/.deps
DEB_PKGS := clang-16 llvm-16 libbpf1 libbpf-dev linux-libc-dev iproute2 ethtool tcpdump ncat curl python3 python3-scapy nmap procps netsniff-ng systemd strace faketime nftables

.PHONY: all deps build bpf ts test demo bench clean
all: build

# Installs only what is missing; safe to run again.
deps: $(DEPS_STAMP)
$(DEPS_STAMP): package.json package-lock.json
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	npm ci --no-audit --no-fund --loglevel=error
	@mkdir -p build && touch $@

build: deps bpf ts
bpf: $(BPF_OBJ)
build/%.bpf.o: bpf/%.bpf.c $(BPF_HDR) $(DEPS_STAMP)
	@mkdir -p build
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

ts: $(DEPS_STAMP)
	npx tsc -p tsconfig.json

test: build
	node scripts/run-tests.mjs

demo: build
	node dist/src/lab/demo.js

# REF=<ref> (or SPAK_BENCH_REF): the previous build measured side by side; default HEAD~1.
bench: build
	$(if $(REF),SPAK_BENCH_REF='$(REF)' )node dist/bench/run.js

clean:
	rm -rf build dist
