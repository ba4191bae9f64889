#!/usr/bin/env bash
# README command (a): installs what is missing, builds bucketmap-server and
# bucketctl, starts a private PostgreSQL and the server against it, and
# prints the addresses and a quick start. Ctrl-C (or SIGTERM) stops the
# server (SIGTERM: it drains and exits), then PostgreSQL, and exits 0.
#
# Environment:
#   BUCKETMAP_DATA_DIR      PostgreSQL data and logs (default /var/tmp/bucketmap-dev);
#                           kept between runs
#   BUCKETMAP_BUILD_DIR     build directory (default: build/ in the repository)
#   BUCKETMAP_SERVER_FLAGS  extra bucketmap-server flags, split on spaces,
#                           e.g. "--max_bulk_assign=1000000"; they come after
#                           the defaults (--kafka_brokers=embedded
#                           --changes_format=json), so they can override them
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUCKETMAP_BUILD_DIR:-$ROOT/build}
DATA_DIR=${BUCKETMAP_DATA_DIR:-/var/tmp/bucketmap-dev}

# Server flags of the development setup: change events go to librdkafka's
# mock cluster inside the server (it dies with the server, and so do the
# events it holds), in JSON so that kcat prints them readably (protobuf,
# the production default, is binary).
SERVER_FLAGS=(--kafka_brokers=embedded --changes_format=json)
read -r -a USER_SERVER_FLAGS <<<"${BUCKETMAP_SERVER_FLAGS:-}"

log() { echo "run.sh: $*" >&2; }

"$ROOT/scripts/install-deps.sh"
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
ninja -C "$BUILD_DIR" bucketmap-server bucketctl

SERVER_BIN=$BUILD_DIR/server/bucketmap-server
BUCKETCTL=$BUILD_DIR/tools/bucketctl/bucketctl

# shellcheck source=pg.sh
source "$ROOT/scripts/pg.sh"

server_pid=""
pg_started=""
cleanup() {
  local rc=$?
  # A second Ctrl-C must not abandon the server or PostgreSQL half-stopped.
  trap '' INT TERM HUP
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    log "stopping bucketmap-server (SIGTERM; it drains in-flight calls)"
    kill -TERM "$server_pid"
    local server_rc=0
    wait "$server_pid" || server_rc=$?
    if ((server_rc != 0)); then
      log "bucketmap-server exited with $server_rc"
      rc=1
    fi
  fi
  if [[ -n "$pg_started" ]]; then
    log "stopping PostgreSQL"
    bm_pg_stop || rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

log "starting PostgreSQL (data in $DATA_DIR)"
bm_pg_start "$DATA_DIR" || exit 1
pg_started=1

grpc_port=$(bm_free_port 50051)
metrics_port=$(bm_free_port 9464)
while [[ "$metrics_port" == "$grpc_port" ]]; do metrics_port=$(bm_free_port); done
GRPC_ADDR=127.0.0.1:$grpc_port
METRICS_URL=http://127.0.0.1:$metrics_port/metrics

log "starting bucketmap-server on $GRPC_ADDR (its log follows on this terminal)"
# setsid: Ctrl-C reaches only this script, which then stops the server
# before PostgreSQL rather than both at once.
setsid "$SERVER_BIN" \
  --postgres_url="$BM_PG_URL" \
  --grpc_listen="$GRPC_ADDR" \
  --metrics_listen="127.0.0.1:$metrics_port" \
  --migrations_dir="$ROOT/migrations" \
  "${SERVER_FLAGS[@]}" "${USER_SERVER_FLAGS[@]}" &
server_pid=$!

# Ready when it answers a read (PostgreSQL connected, mapping loaded).
for ((i = 0; ; i++)); do
  if "$BUCKETCTL" --server "$GRPC_ADDR" --timeout 1 list-buckets >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    rc=0
    wait "$server_pid" || rc=$?
    server_pid=""
    log "bucketmap-server exited with $rc before serving; see its log above"
    exit 1
  fi
  if ((i >= 450)); then
    log "bucketmap-server does not answer on $GRPC_ADDR after 90 s"
    exit 1
  fi
  sleep 0.2
done
version=$("$BUCKETCTL" --server "$GRPC_ADDR" --json list-buckets |
  sed -nE 's/.*"version":"?([0-9]+)"?.*/\1/p')

# The embedded cluster's address, from bucketmap_embedded_kafka_info on
# /metrics (empty when the server publishes elsewhere, or not at all).
kafka_bootstrap=$(curl -fsS --max-time 5 "$METRICS_URL" 2>/dev/null |
  sed -nE 's/^bucketmap_embedded_kafka_info\{.*bootstrap="([^"]+)".*/\1/p' | head -n 1) || true
changes_topic=bucketmap_changes
for flag in "${SERVER_FLAGS[@]}" "${USER_SERVER_FLAGS[@]}"; do
  if [[ "$flag" == --changes_topic=* ]]; then changes_topic=${flag#--changes_topic=}; fi
done

# Prints the README's quick-start block marked `name`, for this server.
quickstart() {
  awk -v start="<!-- quickstart:$1 -->" '
    index($0, start) == 1          { on = 1; next }
    on && /<!-- \/quickstart -->/  { exit }
    on && /^[[:space:]]*(```|~~~)/ { next }
    on                             { print "  " $0 }
  ' "$ROOT/README.md" | sed "s/localhost:50051/$GRPC_ADDR/g"
}

cat <<EOF

bucketmap is running.
  gRPC        $GRPC_ADDR  (plaintext; reflection and grpc.health.v1 enabled)
  metrics     $METRICS_URL
  PostgreSQL  $BM_PG_URL  (data and logs in $DATA_DIR)
  Kafka       ${kafka_bootstrap:-(not embedded: see the server flags)}
  version     ${version:-0}

EOF
if [[ "${version:-0}" != 0 ]]; then
  cat <<EOF
The data directory was reused (mapping version $version): the quick start's
create-bucket commands will answer ALREADY_EXISTS. \`bucketctl list-buckets\`
shows what is there; BUCKETMAP_DATA_DIR=/another/dir starts afresh.

EOF
fi
cat <<EOF
Quick start with bucketctl:
  export PATH="$(dirname "$BUCKETCTL"):\$PATH"
EOF
[[ "$GRPC_ADDR" == 127.0.0.1:50051 ]] || echo "  export BUCKETMAP_SERVER=$GRPC_ADDR"
quickstart bucketctl
cat <<EOF

Quick start with grpcurl (not installed by this script):
EOF
quickstart grpcurl
if [[ -n "$kafka_bootstrap" ]]; then
  cat <<EOF

Change events with kcat (one per version: its headers, bucketmap-version and
content-type, then the key and the JSON value), in another terminal:
  kcat -b $kafka_bootstrap -C -t $changes_topic -f '%h key=%k %s\n'
This Kafka is a mock cluster inside the server: it starts empty at every
server start, and the server then publishes only versions not yet published.
EOF
fi
cat <<EOF

More: bucketctl help, docs/api.md, docs/operations.md.
Ctrl-C stops the server, then PostgreSQL.

EOF

trap 'exit 0' INT TERM HUP
# Returns when the server exits on its own, or when a signal runs the trap.
rc=0
wait "$server_pid" || rc=$?
server_pid=""
log "bucketmap-server exited with $rc"
exit $((rc == 0 ? 1 : rc))
