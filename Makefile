# The two commands a newcomer needs: `make run` and `make test`.
# Both install missing Debian packages (as root), configure with Ninja and build.
BUILD_DIR ?= build
DATA_DIR ?= ./stepdb-data
PACKAGES := build-essential cmake ninja-build ccache pkg-config \
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
  librocksdb-dev libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev \
  libcpp-httplib-dev libjemalloc-dev nlohmann-json3-dev libcli11-dev libre2-dev libssl-dev openssl \
  curl python3 python3-grpcio python3-protobuf python3-pytest python3-numpy

.PHONY: all deps configure build run test clean test-asan test-tsan fuzz

all: build

deps:
	@missing=$$(for p in $(PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(BUILD_DIR)/build.ninja: CMakeLists.txt | deps
	cmake -S . -B $(BUILD_DIR) -G Ninja

configure: deps $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR)

run: build
	$(BUILD_DIR)/stepdb --data $(DATA_DIR)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure --timeout 300 -j2

clean:
	rm -rf $(BUILD_DIR)

# ---- reliability: sanitizers and fuzzers (docs/RELIABILITY.md) -------------
# Each has its own build directory; none touches $(BUILD_DIR).
ASAN_DIR ?= build-asan
TSAN_DIR ?= build-tsan
FUZZ_DIR ?= build-fuzz
SAN_TIMEOUT ?= 900
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
# -Wno-tsan: GCC refuses (-Werror) the atomic_thread_fence that Abseil's
# flags inline for flags of class type (absl::Duration); TSan cannot model
# a fence, and flags are read once, at startup, on one thread.
TSAN_FLAGS := -fsanitize=thread -fno-omit-frame-pointer -Wno-tsan
# Also in effect while gtest_discover_tests runs the binaries at build time.
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1 \
  LSAN_OPTIONS=suppressions=$(CURDIR)/cmake/lsan.supp:print_suppressions=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  TSAN_OPTIONS=suppressions=$(CURDIR)/cmake/tsan.supp:halt_on_error=0:second_deadlock_stack=1:history_size=4
# The concurrency tests run under TSan (the others are single-threaded).
TSAN_TESTS ?= engine_test ingest_test e2e_test tail_test aggregate_test limits_test
# Left out of the TSan run (ctest -E); none at present.
TSAN_EXCLUDE ?= ^$$
# gRPC core orders a callback reactor's StartWrite before its OnWriteDone
# (and similar) with atomics TSan cannot see; roughly one run in three
# reports such a false race in a reactor callback (docs/RELIABILITY.md). A
# failing TSan test is rerun once; every report stays in the log.
TSAN_REPEAT ?= until-pass:2

# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: deps
	cmake -S . -B $(ASAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Debug \
	  "-DCMAKE_CXX_FLAGS=$(ASAN_FLAGS)" \
	  "-DCMAKE_EXE_LINKER_FLAGS=$(ASAN_FLAGS)" "-DCMAKE_SHARED_LINKER_FLAGS=$(ASAN_FLAGS)"
	$(SAN_ENV) cmake --build $(ASAN_DIR)
	cd $(ASAN_DIR) && $(SAN_ENV) ctest --output-on-failure --timeout $(SAN_TIMEOUT) -j2

# The concurrency tests under ThreadSanitizer. cmake/tsan.cmake makes
# Debian's uninstrumented absl::Mutex visible to TSan; cmake/tsan.supp lists
# the third-party frames whose reports are suppressed.
test-tsan: deps
	cmake -S . -B $(TSAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Debug \
	  "-DCMAKE_CXX_FLAGS=$(TSAN_FLAGS)" \
	  "-DCMAKE_EXE_LINKER_FLAGS=$(TSAN_FLAGS)" "-DCMAKE_SHARED_LINKER_FLAGS=$(TSAN_FLAGS)" \
	  -DCMAKE_PROJECT_stepdb_INCLUDE=$(CURDIR)/cmake/tsan.cmake
	$(SAN_ENV) cmake --build $(TSAN_DIR) --target $(TSAN_TESTS)
	cd $(TSAN_DIR) && suites=$$(cat $(foreach t,$(TSAN_TESTS),'$(t)[1]_tests.cmake') | \
	  sed -n 's/^add_test(\[=\[\([^.]*\)\..*/\1/p' | sort -u | paste -sd'|'); \
	  $(SAN_ENV) ctest --output-on-failure --timeout $(SAN_TIMEOUT) -j2 -R "^($$suites)\." -E '$(TSAN_EXCLUDE)' --repeat $(TSAN_REPEAT)

# libFuzzer targets (clang): builds them, then runs each for FUZZ_SECONDS on
# its committed seed corpus (tests/fuzz/corpus/<target>); new inputs go to
# $(FUZZ_DIR)/corpus/<target>, crashes to $(FUZZ_DIR)/artifacts/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := chunk_decoder import_parsers
fuzz: deps
	cmake -S . -B $(FUZZ_DIR) -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DSTEPDB_FUZZ=ON
	cmake --build $(FUZZ_DIR) --target stepdb_fuzzers
	mkdir -p $(FUZZ_DIR)/artifacts
	set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$t; \
	  $(FUZZ_DIR)/tests/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_DIR)/artifacts/$$t- \
	    $(FUZZ_DIR)/corpus/$$t tests/fuzz/corpus/$$t; \
	done
