#!/usr/bin/env bash
# The Node.js client's tests and benchmark (clients/node), run by ctest
# (node_client_tests, tests/node/CMakeLists.txt) and by scripts/test.sh's
# bench stage.
#
#   run_node_tests.sh --source DIR --work DIR [--server BIN --kafka-mock BIN --cache-tool BIN]
#                     [--bench-quick]
#
# 1. Copies the package (clients/node, without node_modules and dist) and
#    the wire contract (proto/) to WORK/pkg, installs its dependencies with
#    `npm ci` from the committed package-lock.json (only when the lock file
#    changed since the last install there), and compiles it with tsc,
#    together with the plugin-server example of docs/client-node.md.
# 2. Tests (default): starts a private PostgreSQL (scripts/pg.sh, fsync
#    off) and runs `node --test` over the unit tests and the integration
#    tests, which start the bucketmap-server binary, the Kafka mock helper
#    and node_cache_tool themselves (clients/node/test/support/stack.ts).
#    --only REGEX: only the test files whose path matches.
#    --bench-quick: runs clients/node/bench/route_bench.js --quick instead.
# Needs node (18 or newer) and npm: scripts/install-deps.sh installs them.
set -euo pipefail

SOURCE="" WORK="" SERVER="" KAFKA_MOCK="" CACHE_TOOL="" MODE=test ONLY=
while (($#)); do
  case $1 in
    --source) SOURCE=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --server) SERVER=$2; shift 2 ;;
    --kafka-mock) KAFKA_MOCK=$2; shift 2 ;;
    --cache-tool) CACHE_TOOL=$2; shift 2 ;;
    --bench-quick) MODE=bench; shift ;;
    --only) ONLY=$2; shift 2 ;;
    *) echo "run_node_tests.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $SOURCE && -n $WORK ]] || { echo "usage: run_node_tests.sh --source DIR --work DIR ..." >&2; exit 2; }
# Absolute paths: the tests run from the package's copy.
SOURCE=$(realpath "$SOURCE")
mkdir -p "$WORK" && WORK=$(realpath "$WORK")
for f in SERVER KAFKA_MOCK CACHE_TOOL; do
  if [[ -n ${!f} ]]; then printf -v "$f" '%s' "$(realpath "${!f}")"; fi
done
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "run_node_tests.sh: $tool not found (run scripts/install-deps.sh)" >&2; exit 1; }
done

PKG=$WORK/pkg
mkdir -p "$PKG"
start=$SECONDS
# A fresh copy of the sources; node_modules is kept across runs.
rm -rf "$PKG/src" "$PKG/test" "$PKG/bench" "$PKG/examples" "$PKG/scripts" "$PKG/proto" "$PKG/dist"
cp -r "$SOURCE/clients/node/src" "$SOURCE/clients/node/test" "$SOURCE/clients/node/bench" \
  "$SOURCE/clients/node/examples" "$SOURCE/clients/node/scripts" "$PKG/"
cp "$SOURCE/clients/node/package.json" "$SOURCE/clients/node/package-lock.json" \
  "$SOURCE/clients/node/tsconfig.json" "$PKG/"
# The integration example of docs/client-node.md, compiled with the rest.
awk '/<!-- example:plugin-server -->/{on=1; next} /<!-- \/example -->/{on=0} on && !/^```/' \
  "$SOURCE/docs/client-node.md" >"$PKG/examples/doc_plugin_server.ts"
[[ -s $PKG/examples/doc_plugin_server.ts ]] || {
  echo "run_node_tests.sh: no plugin-server example in docs/client-node.md" >&2
  exit 1
}
lock_sum=$(sha256sum "$PKG/package-lock.json" | cut -d' ' -f1)
if [[ ! -f $PKG/node_modules/.bucketmap-lock || $(cat "$PKG/node_modules/.bucketmap-lock") != "$lock_sum" ]]; then
  (cd "$PKG" && npm ci --no-audit --no-fund --prefer-offline --loglevel=error)
  echo "$lock_sum" >"$PKG/node_modules/.bucketmap-lock"
fi
(cd "$PKG" && BUCKETMAP_PROTO_DIR="$SOURCE/proto" npm run --silent build)
echo "run_node_tests.sh: package ready in $((SECONDS - start)) s (npm ci, tsc)"

export BUCKETMAP_SOURCE_DIR=$SOURCE
if [[ $MODE == bench ]]; then
  exec node "$PKG/dist/bench/route_bench.js" --quick
fi

[[ -n $SERVER && -n $KAFKA_MOCK && -n $CACHE_TOOL ]] || {
  echo "run_node_tests.sh: --server, --kafka-mock and --cache-tool are required for the tests" >&2
  exit 2
}
# shellcheck source=../../scripts/pg.sh
source "$SOURCE/scripts/pg.sh"
PG_DIR=$(mktemp -d "${BUCKETMAP_TEST_TMPDIR:-/tmp}/bm-node-pg.XXXXXX")
chmod 755 "$PG_DIR"
cleanup() {
  bm_pg_stop || true
  rm -rf "$PG_DIR"
}
trap cleanup EXIT
BM_PG_FAST=1 bm_pg_start "$PG_DIR"
export BM_PG_PORT BM_PG_BIN=$_BM_PG_BIN
export BUCKETMAP_SERVER_BIN=$SERVER BUCKETMAP_KAFKA_MOCK=$KAFKA_MOCK BUCKETMAP_CACHE_TOOL=$CACHE_TOOL
mapfile -t files < <(cd "$PKG" && find dist/test -name '*.test.js' | sort | grep -E "${ONLY:-.}")
cd "$PKG"
node --test "${files[@]}"
