#!/usr/bin/env bash
# README command (b): installs what is missing, builds everything and runs
# every test with ctest. Tests that need PostgreSQL start their own
# throwaway instances on free ports, so nothing else needs to run.
#
# Arguments are passed to ctest, e.g. `./scripts/test.sh -R readme`.
# Environment:
#   BUCKETMAP_BUILD_DIR  build directory (default: build/ in the repository)
#   BUCKETMAP_JOBS       parallel compile jobs and tests (default 2)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUCKETMAP_BUILD_DIR:-$ROOT/build}
JOBS=${BUCKETMAP_JOBS:-2}

"$ROOT/scripts/install-deps.sh"
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
ninja -C "$BUILD_DIR" -j"$JOBS"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$JOBS" "$@"
