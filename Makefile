# A thin wrapper over CMake. `make test` and `make run` work on a fresh
# Debian 12 machine as root: they install what is missing first.

BUILD      ?= build
BUILD_SAN  ?= build-san
JOBS       ?= 2
CMAKE_ARGS ?=
CTEST_ARGS ?=

CMAKE_COMMON = -DSTIGMER_WERROR=ON $(CMAKE_ARGS)

.PHONY: all deps build build-san test test-fast test-san run clean help

all: build

help:
	@echo "make deps    install Debian packages, build pinned mbedTLS and curl (cached)"
	@echo "make build   configure and build into $(BUILD)/"
	@echo "make test    deps, build, every test, then every test again under ASan+UBSan"
	@echo "make clean   remove the build directories (not the dependency cache)"

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

test: test-fast test-san

clean:
	rm -rf $(BUILD) $(BUILD_SAN)

# The stack in the foreground with its merged, coloured logs; Ctrl-C stops it.
run: build
	$(BUILD)/stigmer daemon run
