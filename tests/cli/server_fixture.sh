# shellcheck shell=bash
# Test fixture, sourced by the CLI tests: a throwaway PostgreSQL and a
# bucketmap-server on free loopback ports, torn down on exit.
#
#   fixture_start SERVER_BIN BUCKETCTL_BIN REPO_ROOT
#     sets WORK (scratch directory), ADDR (gRPC host:port), METRICS_ADDR,
#     SERVER_PID, and defines `bucketctl` as a function that talks to ADDR.
#   fail MESSAGE...   prints the message and exits 1 (the trap cleans up).

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

_fixture_cleanup() {
  local rc=$?
  set +e
  if [[ -n "${SERVER_PID:-}" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID"
    local server_rc=$?
    if ((server_rc != 0)); then
      echo "FAIL: bucketmap-server exited with $server_rc after SIGTERM (want 0)" >&2
      ((rc == 0)) && rc=1
    fi
  fi
  bm_pg_stop
  if ((rc != 0)); then
    echo "--- server log (last 40 lines)" >&2
    tail -n 40 "$WORK/server.log" >&2 2>/dev/null
    echo "--- postgres log (last 20 lines)" >&2
    tail -n 20 "${BM_PG_LOG:-/dev/null}" >&2 2>/dev/null
  fi
  rm -rf "$WORK"
  exit "$rc"
}

fixture_start() {
  local server_bin=$1 root=$3
  BUCKETCTL_BIN=$2
  # shellcheck source=../../scripts/pg.sh
  source "$root/scripts/pg.sh"
  # /tmp, not $TMPDIR: the postgres user must reach it even when TMPDIR
  # points under /root.
  WORK=$(mktemp -d /tmp/bucketmap-cli-test.XXXXXX)
  chmod 755 "$WORK"
  trap _fixture_cleanup EXIT
  trap 'exit 130' INT TERM

  BM_PG_FAST=1 bm_pg_start "$WORK/pg" || fail "cannot start PostgreSQL"
  # Parallel tests may pick the same free port: retry on a bind failure.
  local attempt
  for attempt in 1 2 3; do
    _fixture_start_server "$server_bin" "$root" && return 0
    grep -qE 'cannot listen|--metrics_listen' "$WORK/server.log" ||
      fail "bucketmap-server exited before serving"
    echo "fixture: port taken, retrying (attempt $attempt)" >&2
  done
  fail "bucketmap-server could not bind free ports"
}

# Starts the server on fresh ports; returns 1 if it exits before serving.
_fixture_start_server() {
  local server_bin=$1 root=$2 i grpc_port metrics_port rc
  grpc_port=$(bm_free_port "")
  metrics_port=$(bm_free_port "")
  ADDR=127.0.0.1:$grpc_port
  METRICS_ADDR=127.0.0.1:$metrics_port
  # FIXTURE_SERVER_FLAGS defaults to --handoffs=false: the CLI tests move
  # teams back and forth and assert exact versions; handoffs (tests/handoff)
  # would refuse the second move and add phase-change versions. Set it to
  # "" for the server's defaults.
  local -a extra=()
  read -r -a extra <<<"${FIXTURE_SERVER_FLAGS---handoffs=false}"
  "$server_bin" --postgres_url="$BM_PG_URL" --grpc_listen="$ADDR" \
    --metrics_listen="$METRICS_ADDR" --migrations_dir="$root/migrations" \
    "${extra[@]}" 2>"$WORK/server.log" &
  SERVER_PID=$!

  for ((i = 0; i < 150; i++)); do
    if "$BUCKETCTL_BIN" --server "$ADDR" --timeout 1 list-buckets >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      rc=0
      wait "$SERVER_PID" || rc=$?
      SERVER_PID=""
      echo "fixture: bucketmap-server exited with $rc before serving" >&2
      return 1
    fi
    sleep 0.2
  done
  fail "bucketmap-server did not serve on $ADDR within 30 s"
}

bucketctl() {
  "$BUCKETCTL_BIN" --server "$ADDR" "$@"
}
