#!/usr/bin/env bash
# README command (b): installs what is missing, builds everything and runs
# every test with ctest. Tests that need PostgreSQL start their own
# throwaway instances on free ports, so nothing else needs to run.
#
# Arguments are passed to ctest, e.g. `./scripts/test.sh -R readme`.
# Environment:
#   BUCKETMAP_BUILD_DIR  build directory (default: build/ in the repository)
#   BUCKETMAP_JOBS       parallel compile jobs and tests (default 2)
#   BUCKETMAP_TSAN       0 skips the ThreadSanitizer stage (default 1)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUCKETMAP_BUILD_DIR:-$ROOT/build}
JOBS=${BUCKETMAP_JOBS:-2}

"$ROOT/scripts/install-deps.sh"

# ThreadSanitizer (clang-14) over the code that has no gRPC in it: the
# domain library and the client's lock-free read and publish paths.
# Debian's gRPC is not TSan-instrumented, so the server is not built here.
if [[ ${BUCKETMAP_TSAN:-1} != 0 ]]; then
  TSAN_DIR=${BUILD_DIR}-tsan
  CC=clang-14 CXX=clang++-14 cmake -S "$ROOT" -B "$TSAN_DIR" -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS=-fsanitize=thread -DCMAKE_CXX_FLAGS=-fsanitize=thread \
    -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread
  ninja -C "$TSAN_DIR" -j"$JOBS" client_tests domain_tests
  TSAN_OPTIONS="halt_on_error=1 ${TSAN_OPTIONS:-}" "$TSAN_DIR/tests/client/client_tests"
  TSAN_OPTIONS="halt_on_error=1 ${TSAN_OPTIONS:-}" "$TSAN_DIR/tests/domain/domain_tests" \
    --gtest_brief=1
fi

cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
ninja -C "$BUILD_DIR" -j"$JOBS"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$JOBS" "$@"
