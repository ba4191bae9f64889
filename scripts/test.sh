#!/usr/bin/env bash
# README command (b): installs what is missing, builds everything and runs
# every test with ctest, then the hardening stages. Tests that need
# PostgreSQL start their own throwaway instances on free ports, so nothing
# else needs to run.
#
# Stages, in order (wall times measured on the 2-core CI machine are in
# docs/operations.md, "CI stages"):
#   tsan    clang-14 ThreadSanitizer over the domain and client tests
#   asan    one clang-14 tree: every target but bench/ with
#           -Werror=thread-safety, instrumented for libFuzzer, ASan and
#           UBSan; then each fuzzer for BUCKETMAP_FUZZ_SECONDS from its
#           seed corpus, then the whole ctest suite on that tree
#   main    the normal build and the whole ctest suite
#   bench   every program in bench/ with --quick, on the main stage's
#           binaries, and the Node client's route_bench --quick
#           (clients/node/bench): each must exit 0 (its own sanity
#           checks); figures are printed, not compared
#
# Arguments are passed to the main stage's ctest, e.g.
# `./scripts/test.sh -R readme`.
# Environment:
#   BUCKETMAP_BUILD_DIR     build directory (default: build/ in the repository);
#                           the other stages use $BUCKETMAP_BUILD_DIR-<stage>
#   BUCKETMAP_JOBS          parallel compile jobs and tests (default 2)
#   BUCKETMAP_TSAN=0        skips the ThreadSanitizer stage
#   BUCKETMAP_ASAN=0        skips the clang ASan+UBSan stage (the
#                           thread-safety check, the fuzzers, the suite)
#   BUCKETMAP_FUZZ=0        runs no fuzzer in the asan stage
#   BUCKETMAP_FUZZ_SECONDS  run time of each fuzzer (default 60)
#   BUCKETMAP_MAIN=0        skips the normal build and its ctest run
#   BUCKETMAP_BENCH=0       skips the benchmarks' quick runs (with
#                           BUCKETMAP_MAIN=0 they run on the existing
#                           $BUCKETMAP_BUILD_DIR)
#   BUCKETMAP_BENCH_TIMEOUT seconds before a benchmark is killed (default 300)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUCKETMAP_BUILD_DIR:-$ROOT/build}
JOBS=${BUCKETMAP_JOBS:-2}
FUZZERS=(client_snapshot_fuzzer client_delta_fuzzer admin_request_fuzzer)

"$ROOT/scripts/install-deps.sh"

stage() { echo "=== $1 ($(date -u +%H:%M:%S))"; STAGE_START=$SECONDS; }
stage_done() { echo "=== $1 took $((SECONDS - STAGE_START)) s"; }

# ThreadSanitizer (clang-14) over the code that has no gRPC in it: the
# domain library and the client's lock-free read and publish paths.
# Debian's gRPC is not TSan-instrumented, so the server is not built here.
if [[ ${BUCKETMAP_TSAN:-1} != 0 ]]; then
  stage tsan
  TSAN_DIR=${BUILD_DIR}-tsan
  CC=clang-14 CXX=clang++-14 cmake -S "$ROOT" -B "$TSAN_DIR" -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS=-fsanitize=thread -DCMAKE_CXX_FLAGS=-fsanitize=thread \
    -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread
  ninja -C "$TSAN_DIR" -j"$JOBS" client_tests domain_tests
  TSAN_OPTIONS="halt_on_error=1 ${TSAN_OPTIONS:-}" "$TSAN_DIR/tests/client/client_tests"
  TSAN_OPTIONS="halt_on_error=1 ${TSAN_OPTIONS:-}" "$TSAN_DIR/tests/domain/domain_tests" \
    --gtest_brief=1
  stage_done tsan
fi

# One clang-14 tree serves three checks, so that the server is compiled
# once for all of them:
#   * -Werror=thread-safety turns the -Wthread-safety analysis (on for
#     every clang build, see CMakeLists.txt) into errors over every target
#     with ABSL_GUARDED_BY annotations;
#   * every object is instrumented for libFuzzer's coverage, ASan and
#     UBSan (-fno-sanitize-recover, CMakeLists.txt: any UBSan report
#     aborts), and each fuzzer runs for BUCKETMAP_FUZZ_SECONDS from its
#     seed corpus;
#   * the whole ctest suite runs on the same binaries, the server that the
#     process tests spawn included.
# -O1 -g1: the sanitizers need no more (line tables for their reports),
# and the tree builds in 9 minutes here where the gcc ASan tree at -O2 -g
# took 28 (docs/operations.md, "CI stages").
if [[ ${BUCKETMAP_ASAN:-1} != 0 ]]; then
  stage asan
  ASAN_DIR=${BUILD_DIR}-asan
  CC=clang-14 CXX=clang++-14 cmake -S "$ROOT" -B "$ASAN_DIR" -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
    -DBUCKETMAP_SANITIZE=ON -DBUCKETMAP_FUZZ=ON -DBUCKETMAP_BENCH=OFF \
    -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link \
    -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link -Werror=thread-safety"
  ninja -C "$ASAN_DIR" -j"$JOBS"
  stage_done "asan build"

  if [[ ${BUCKETMAP_FUZZ:-1} != 0 ]]; then
    stage fuzz
    # Each fuzzer starts from the committed seeds and writes what it finds
    # to a scratch corpus, never to fuzz/corpus. A crash, leak or failed
    # check stops it with a non-zero exit and leaves the input in
    # $ASAN_DIR/fuzz-artifacts/ (add it to fuzz/regressions/<fuzzer>/).
    mkdir -p "$ASAN_DIR/fuzz-artifacts"
    for fuzzer in "${FUZZERS[@]}"; do
      corpora=("$ASAN_DIR/fuzz-corpus/$fuzzer" "$ROOT/fuzz/corpus/$fuzzer")
      mkdir -p "${corpora[0]}"
      if [[ -d $ROOT/fuzz/regressions/$fuzzer ]]; then
        corpora+=("$ROOT/fuzz/regressions/$fuzzer")
      fi
      "$ASAN_DIR/fuzz/$fuzzer" -max_total_time="${BUCKETMAP_FUZZ_SECONDS:-60}" \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$ASAN_DIR/fuzz-artifacts/$fuzzer-" "${corpora[@]}" 2>&1 | tail -n 30
    done
    stage_done fuzz
  fi

  stage "asan tests"
  # scripts/lsan.supp: leaks inside uninstrumented Debian libraries.
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=1 ${ASAN_OPTIONS:-}" \
    LSAN_OPTIONS="suppressions=$ROOT/scripts/lsan.supp ${LSAN_OPTIONS:-}" \
    UBSAN_OPTIONS="print_stacktrace=1 ${UBSAN_OPTIONS:-}" \
    ctest --test-dir "$ASAN_DIR" --output-on-failure -j"$JOBS"
  stage_done "asan tests"
fi

if [[ ${BUCKETMAP_MAIN:-1} != 0 ]]; then
  stage main
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
  ninja -C "$BUILD_DIR" -j"$JOBS"
  ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$JOBS" "$@"
  stage_done main
fi

# Every benchmark with --quick (docs/benchmarks.md, "Quick runs in CI"), on
# the main stage's binaries: a short run that exits non-zero when one of
# its own sanity checks fails. The list is the one bench/CMakeLists.txt
# writes, so a new benchmark cannot be left out. All of them run, then the
# stage fails if any failed. timeout(1) signals the benchmark's whole
# process group, so a hung one takes its servers with it.
if [[ ${BUCKETMAP_BENCH:-1} != 0 ]]; then
  stage bench
  BENCH_LIST=$BUILD_DIR/bench/benches.txt
  if [[ ! -s $BENCH_LIST ]]; then
    echo "no $BENCH_LIST: the bench stage runs the main stage's build" >&2
    exit 1
  fi
  mapfile -t BENCHES <"$BENCH_LIST"
  BENCH_FAILED=()
  BENCH_TIMES=()
  for bench in "${BENCHES[@]}"; do
    echo "--- $bench --quick"
    bench_start=${EPOCHREALTIME/[.,]/}
    rc=0
    # Line-buffered, so that a run that is killed still shows how far it got.
    timeout -k 10 "${BUCKETMAP_BENCH_TIMEOUT:-300}" \
      stdbuf -oL "$BUILD_DIR/bench/$bench" --quick || rc=$?
    ms=$(((${EPOCHREALTIME/[.,]/} - bench_start) / 1000))
    note=""
    if ((rc != 0)); then
      BENCH_FAILED+=("$bench")
      note=" FAILED (exit $rc)"
      if ((rc == 124 || rc == 137)); then note+=", timed out"; fi
    elif ((ms > 60000)); then
      note=" (over the minute a quick run should take)"
    fi
    BENCH_TIMES+=("$(printf '%-18s %4d.%d s%s' "$bench" $((ms / 1000)) $((ms % 1000 / 100)) \
      "$note")")
  done
  # The Node client's route benchmark (clients/node/bench), the same way.
  echo "--- clients/node route_bench --quick"
  bench_start=${EPOCHREALTIME/[.,]/}
  rc=0
  timeout -k 10 "${BUCKETMAP_BENCH_TIMEOUT:-300}" stdbuf -oL "$ROOT/tests/node/run_node_tests.sh" \
    --source "$ROOT" --work "$BUILD_DIR/tests/node" --bench-quick || rc=$?
  ms=$(((${EPOCHREALTIME/[.,]/} - bench_start) / 1000))
  note=""
  if ((rc != 0)); then
    BENCH_FAILED+=("node route_bench")
    note=" FAILED (exit $rc)"
  fi
  BENCH_TIMES+=("$(printf '%-18s %4d.%d s%s' "node route_bench" $((ms / 1000)) $((ms % 1000 / 100)) \
    "$note")")
  printf '%s\n' "${BENCH_TIMES[@]}"
  stage_done bench
  if ((${#BENCH_FAILED[@]} > 0)); then
    echo "=== bench: ${BENCH_FAILED[*]} failed" >&2
    exit 1
  fi
fi
