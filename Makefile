# A thin wrapper over CMake. `make test` and `make run` work on a fresh
# Debian 12 machine as root: they install what is missing first.

BUILD      ?= build
BUILD_SAN  ?= build-san
BUILD_FUZZ ?= build-fuzz
FUZZ_SECONDS ?= 60
BUILD_REL  ?= build-release
JOBS       ?= 2
CMAKE_ARGS ?=
CTEST_ARGS ?=

CMAKE_COMMON = -DSTIGMER_WERROR=ON $(CMAKE_ARGS)

PREFIX     ?= /usr/local
DESTDIR    ?=
VERSION    ?=

.PHONY: all deps build build-san test test-fast test-san run clean help fuzz fuzz-short \
	build-agent-runner install-agent-runner release-local release-local-full \
	install release test-release \
	bench bench-smoke bench-peers bench-build

all: build

help:
	@echo "make deps    install Debian packages, build pinned mbedTLS and curl (cached)"
	@echo "make build   configure and build into $(BUILD)/"
	@echo "make test    deps, build, every test, then every test again under ASan+UBSan"
	@echo "make clean   remove the build directories (not the dependency cache)"
	@echo "make build-agent-runner    build the reference agent-runner ($(BUILD)/agent-runner)"
	@echo "make install-agent-runner  build it and pin it: stigmer agent-runner install"
	@echo "make release-local         Release build of the CLI in $(BUILD_REL)/, embedding"
	@echo "                           the agent-runner already built in $(BUILD)/"
	@echo "make release-local-full    build-agent-runner, then release-local"
	@echo "make install PREFIX=/usr/local DESTDIR=   binary, links, man page, completions, units"
	@echo "make release VERSION=X.Y.Z   the release assets in dist/ (packaging/release.sh)"
	@echo "make test-release            two clean release builds: byte-identical assets"
	@echo "make bench         benchmarks against runit, s6, daemontools, supervisor"
	@echo "                   (installs them; minutes): $(BENCH_OUT)/results.{md,json}"
	@echo "make bench-smoke   the benchmark suite in seconds, stigmer only, no peers"

deps:
	@sh third_party/deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_COMMON)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

$(BUILD_SAN)/CMakeCache.txt:
	cmake -S . -B $(BUILD_SAN) -DCMAKE_BUILD_TYPE=Debug -DSTIGMER_ASAN=ON -DSTIGMER_UBSAN=ON $(CMAKE_COMMON)

build-san: deps $(BUILD_SAN)/CMakeCache.txt
	cmake --build $(BUILD_SAN) -j $(JOBS)

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

test-san: build-san
	cd $(BUILD_SAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

test: test-fast test-san test-release fuzz-short

# Two clean release builds and a comparison (docs/install.md): a few minutes.
test-release: deps
	bash test/release/test_release.sh

# --- the agent-runner (docs/agent-runner.md) ---------------------------------

build-agent-runner: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS) --target agent-runner

# Pins the freshly built reference agent-runner into $$STIGMER_HOME with the
# build's own stigmer (STIGMER_HOME or --home pick the home as usual).
install-agent-runner: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS) --target stigmer agent-runner
	$(BUILD)/stigmer agent-runner install $(BUILD)/agent-runner \
	  --version "reference-$$($(BUILD)/stigmer version | sed -n '1s/^stigmer //p')"

# The CLI as a release would build it, embedding the agent-runner already
# built (by build-agent-runner) instead of building the reference again.
# Warnings are not errors here: -O3 brings false positives that the
# checked builds (build, build-san) do not see.
release-local: deps
	@test -x $(BUILD)/agent-runner || { \
	  echo "$(BUILD)/agent-runner is missing: run 'make build-agent-runner' first" >&2; exit 1; }
	cmake -S . -B $(BUILD_REL) -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
	  -DSTIGMER_AGENT_RUNNER=$(abspath $(BUILD)/agent-runner) -DSTIGMER_WERROR=OFF $(CMAKE_ARGS)
	cmake --build $(BUILD_REL) -j $(JOBS) --target stigmer
	@$(BUILD_REL)/stigmer version | tail -n 1

release-local-full: build-agent-runner
	$(MAKE) release-local

# --- benchmarks (docs/benchmarks.md) ------------------------------------------
# Never part of `make test`. The measured stigmer is a Release build without
# payload ($(BENCH_REL)); item 6 uses a Release build embedding a 64 MiB
# payload ($(BENCH_X64)): the reference agent-runner padded with random bytes.

BENCH_REL ?= bench/build-rel
BENCH_X64 ?= bench/build-x64
BENCH_OUT ?= bench/out
BENCH_ARGS ?=
BENCH_PAYLOAD = $(BENCH_X64)-payload/agent-runner-64m
BENCH_ENV = STG_SOURCE_DIR=$(CURDIR) STG_TEST_HELPER=$(BUILD)/stg-test-helper \
	STG_BENCH=$(BUILD)/stg-bench STG_TLS_SERVER=$(BUILD)/stg-test-tls-server \
	STG_AGENT_RUNNER=$(BUILD)/agent-runner

bench-peers:
	@sh bench/peers.sh

bench-build: build
	cmake --build $(BUILD) -j $(JOBS) --target stg-bench stg-test-helper stg-test-tls-server agent-runner
	@test -f $(BENCH_REL)/CMakeCache.txt || cmake -S . -B $(BENCH_REL) -DCMAKE_BUILD_TYPE=Release \
	  -DBUILD_TESTING=OFF -DSTIGMER_AGENT_RUNNER=none -DSTIGMER_WERROR=OFF $(CMAKE_ARGS)
	cmake --build $(BENCH_REL) -j $(JOBS) --target stigmer
	@mkdir -p $(dir $(BENCH_PAYLOAD))
	@test -f $(BENCH_PAYLOAD) || { cp $(BUILD)/agent-runner $(BENCH_PAYLOAD).tmp && \
	  head -c $$((67108864 - $$(stat -c %s $(BUILD)/agent-runner))) /dev/urandom >>$(BENCH_PAYLOAD).tmp && \
	  mv $(BENCH_PAYLOAD).tmp $(BENCH_PAYLOAD); }
	@test -f $(BENCH_X64)/CMakeCache.txt || cmake -S . -B $(BENCH_X64) -DCMAKE_BUILD_TYPE=Release \
	  -DBUILD_TESTING=OFF -DSTIGMER_AGENT_RUNNER=$(abspath $(BENCH_PAYLOAD)) -DSTIGMER_WERROR=OFF $(CMAKE_ARGS)
	cmake --build $(BENCH_X64) -j $(JOBS) --target stigmer

bench: deps bench-peers bench-build
	$(BENCH_ENV) STIGMER_BIN=$(BENCH_REL)/stigmer STIGMER_X64_BIN=$(BENCH_X64)/stigmer \
	  bash bench/run.sh --out $(BENCH_OUT) $(BENCH_ARGS)

# Seconds, stigmer only, no peers, no Release builds: the suite still works.
bench-smoke: build
	$(BENCH_ENV) STIGMER_BIN=$(BUILD)/stigmer bash bench/run.sh --smoke --out $(BUILD)/bench-smoke

clean:
	rm -rf $(BUILD) $(BUILD_SAN) $(BUILD_REL) $(BUILD_FUZZ)

# --- install and release (docs/install.md) -------------------------------------------

install: build
	@sh packaging/install.sh $(BUILD)/stigmer "$(PREFIX)" "$(DESTDIR)"

release: deps
	@test -n "$(VERSION)" || { echo "usage: make release VERSION=X.Y.Z" >&2; exit 2; }
	sh packaging/release.sh "$(VERSION)"
	rm -rf $(BUILD) $(BUILD_SAN) $(BUILD_REL) $(BENCH_REL) $(BENCH_X64) $(BENCH_X64)-payload

# The stack in the foreground with its merged, coloured logs; Ctrl-C stops it.
run: build
	$(BUILD)/stigmer daemon run

# libFuzzer targets (test/fuzz/fuzz_*.c), built with clang, each run for
# FUZZ_SECONDS over its seed corpus; new inputs go to build-fuzz/corpus/.
# `make test` runs them for 10 seconds each.
fuzz: deps
	cmake -S . -B $(BUILD_FUZZ) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
	  -DSTIGMER_FUZZ=ON -DBUILD_TESTING=OFF $(CMAKE_ARGS)
	cmake --build $(BUILD_FUZZ) -j $(JOBS) --target fuzz_all
	@set -e; for t in $(BUILD_FUZZ)/fuzz/fuzz_*; do \
	  n=$$(basename $$t); mkdir -p $(BUILD_FUZZ)/corpus/$$n; \
	  echo "fuzz: $$n for $(FUZZ_SECONDS)s"; \
	  $$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=0 \
	    $(BUILD_FUZZ)/corpus/$$n test/fuzz/corpus/$$n 2>$(BUILD_FUZZ)/$$n.log || \
	    { tail -n 40 $(BUILD_FUZZ)/$$n.log; exit 1; }; \
	  tail -n 1 $(BUILD_FUZZ)/$$n.log; \
	done

fuzz-short:
	$(MAKE) fuzz FUZZ_SECONDS=10
