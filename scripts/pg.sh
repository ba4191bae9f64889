# shellcheck shell=bash
# Private PostgreSQL instances for development and tests. Source this file;
# it defines functions only and changes no shell option.
#
#   bm_pg_start DIR   Starts PostgreSQL with everything under DIR:
#                       DIR/pgdata        data directory (initdb'd if absent)
#                       DIR/run           socket directory
#                       DIR/postgres.log  server log
#                     on a free port of 127.0.0.1, waits until it accepts
#                     connections and creates the database `bucketmap`
#                     if missing. On success it sets:
#                       BM_PG_PORT, BM_PG_URL (postgresql://postgres@127.0.0.1:PORT/bucketmap),
#                       BM_PG_DATA, BM_PG_LOG, BM_PG_SOCKET_DIR.
#   bm_pg_stop        Stops the instance started by bm_pg_start (fast
#                     shutdown: open sessions are ended, data is flushed).
#                     Safe to call twice or when nothing was started.
#   bm_free_port [P]  Prints P if nothing listens on it, else a random free
#                     TCP port in 10000..31999.
#
# Knobs (environment):
#   BM_PG_BIN   PostgreSQL binaries (default: /usr/lib/postgresql/15/bin).
#   BM_PG_DB    database to create (default: bucketmap).
#   BM_PG_FAST  1: no fsync (initdb --no-sync, fsync=off). For throwaway
#               test instances only: a crash can lose or corrupt data.
#
# As root, the instance runs as the `postgres` user (PostgreSQL refuses to
# run as root): DIR is chowned to it, and DIR must be reachable by it, so it
# cannot live under /root. Authentication is `trust`, and the server only
# listens on 127.0.0.1 and on its own socket directory.

_bm_pg_err() { echo "pg.sh: $*" >&2; }

# Returns 0 when something listens on TCP port $1.
_bm_port_in_use() {
  local port=$1
  if command -v ss >/dev/null 2>&1; then
    [[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]]
  else
    # No ss (iproute2) on minimal images: try to connect instead.
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
  fi
}

bm_free_port() {
  local preferred=${1:-} port i
  if [[ -n "$preferred" ]] && ! _bm_port_in_use "$preferred"; then
    echo "$preferred"
    return 0
  fi
  # Below Linux's ephemeral range (32768+), so outgoing connections do not
  # grab the port between this check and the bind.
  for ((i = 0; i < 500; i++)); do
    port=$((10000 + (RANDOM * 32768 + RANDOM) % 22000))
    if ! _bm_port_in_use "$port"; then
      echo "$port"
      return 0
    fi
  done
  _bm_pg_err "no free TCP port found"
  return 1
}

_bm_pg_find_bin() {
  local dir
  if [[ -x /usr/lib/postgresql/15/bin/pg_ctl ]]; then
    echo /usr/lib/postgresql/15/bin
    return 0
  fi
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [[ -n "$dir" && -x "$dir/pg_ctl" ]]; then
    echo "$dir"
    return 0
  fi
  _bm_pg_err "PostgreSQL binaries not found in /usr/lib/postgresql/*/bin (run scripts/install-deps.sh)"
  return 1
}

# Runs a PostgreSQL program as the instance owner. From "/" because initdb
# and pg_ctl fail when the owner cannot read the current directory (for
# example a build directory under /root).
_bm_pg_as_owner() {
  if ((EUID == 0)); then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

_bm_pg_check_not_root_home() {
  case "$1" in
    /root | /root/* | ~root | ~root/*)
      _bm_pg_err "$1 is under /root, which the postgres user cannot reach; choose a directory elsewhere (e.g. /var/tmp)"
      return 1
      ;;
  esac
  return 0
}

bm_pg_start() {
  local base=${1:?usage: bm_pg_start DIR}
  local db=${BM_PG_DB:-bucketmap}
  local bin attempt port fast_opts="" initdb_opts=() pid_file exists

  bin=${BM_PG_BIN:-$(_bm_pg_find_bin)} || return 1
  _bm_pg_check_not_root_home "$base" || return 1
  mkdir -p "$base" || return 1
  base=$(cd "$base" && pwd -P) || return 1
  _bm_pg_check_not_root_home "$base" || return 1

  BM_PG_DATA=$base/pgdata
  BM_PG_LOG=$base/postgres.log
  BM_PG_SOCKET_DIR=$base/run
  _BM_PG_BIN=$bin
  _BM_PG_STARTED=""
  _BM_PG_TMP_SOCKET=""
  # Unix socket paths are limited to 107 bytes.
  if ((${#BM_PG_SOCKET_DIR} > 80)); then
    BM_PG_SOCKET_DIR=$(mktemp -d /tmp/bm-pg.XXXXXX) || return 1
    _BM_PG_TMP_SOCKET=$BM_PG_SOCKET_DIR
  fi
  mkdir -p "$BM_PG_SOCKET_DIR" || return 1
  touch "$BM_PG_LOG" || return 1

  if ((EUID == 0)); then
    if ! id -u postgres >/dev/null 2>&1; then
      _bm_pg_err "user 'postgres' does not exist (install the postgresql package: scripts/install-deps.sh)"
      return 1
    fi
    chown postgres: "$base" "$BM_PG_SOCKET_DIR" "$BM_PG_LOG" || return 1
    if ! runuser -u postgres -- test -w "$base"; then
      _bm_pg_err "the postgres user cannot write $base: a parent directory is not searchable by it (chmod o+x, or choose another directory)"
      return 1
    fi
  fi

  if [[ "${BM_PG_FAST:-0}" == 1 ]]; then
    initdb_opts+=(--no-sync)
    fast_opts="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  fi

  if [[ -f "$BM_PG_DATA/PG_VERSION" ]]; then
    exists="$(cat "$BM_PG_DATA/PG_VERSION")"
    if [[ "$exists" != "$("$bin/pg_ctl" --version | grep -oE '[0-9]+' | head -n 1)" ]]; then
      _bm_pg_err "$BM_PG_DATA was created by PostgreSQL $exists, but $bin is another major version"
      return 1
    fi
  else
    if [[ -e "$BM_PG_DATA" ]] && [[ -n "$(ls -A "$BM_PG_DATA" 2>/dev/null)" ]]; then
      _bm_pg_err "$BM_PG_DATA exists but is not a PostgreSQL data directory; move it away"
      return 1
    fi
    _bm_pg_as_owner "$bin/initdb" -D "$BM_PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C \
      "${initdb_opts[@]}" >>"$BM_PG_LOG" 2>&1 || {
      _bm_pg_err "initdb failed; see $BM_PG_LOG"
      tail -n 20 "$BM_PG_LOG" >&2
      return 1
    }
  fi

  pid_file=$BM_PG_DATA/postmaster.pid
  if [[ -f "$pid_file" ]] && _bm_pg_as_owner "$bin/pg_ctl" status -D "$BM_PG_DATA" >/dev/null 2>&1; then
    _bm_pg_err "PostgreSQL is already running on $BM_PG_DATA (pid $(head -n 1 "$pid_file"), port $(sed -n 4p "$pid_file")), probably left by an earlier run. Stop it with:"
    if ((EUID == 0)); then
      echo "  runuser -u postgres -- $bin/pg_ctl stop -D $BM_PG_DATA -m fast" >&2
    else
      echo "  $bin/pg_ctl stop -D $BM_PG_DATA -m fast" >&2
    fi
    return 1
  fi

  # Another process may take the port between bm_free_port and the bind
  # (parallel tests do): retry on another port.
  for attempt in 1 2 3 4 5; do
    port=$(bm_free_port "") || return 1
    # setsid: Ctrl-C in the terminal must not reach the postmaster, so the
    # caller can stop its clients before PostgreSQL.
    if _bm_pg_as_owner setsid "$bin/pg_ctl" start -D "$BM_PG_DATA" -l "$BM_PG_LOG" -w -t 60 -s \
      -o "-p $port -k '$BM_PG_SOCKET_DIR' -c listen_addresses=127.0.0.1 $fast_opts" >/dev/null 2>&1; then
      break
    fi
    if tail -n 20 "$BM_PG_LOG" | grep -qiE 'could not bind|address already in use|could not create any TCP/IP sockets'; then
      _bm_pg_err "port $port was taken; retrying (attempt $attempt)"
      port=""
      continue
    fi
    _bm_pg_err "PostgreSQL did not start; see $BM_PG_LOG"
    tail -n 20 "$BM_PG_LOG" >&2
    return 1
  done
  if [[ -z "$port" ]]; then
    _bm_pg_err "PostgreSQL did not start: no port could be bound"
    return 1
  fi
  BM_PG_PORT=$port
  _BM_PG_STARTED=1

  for attempt in $(seq 1 60); do
    if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres -U postgres; then
      break
    fi
    if ((attempt == 60)); then
      _bm_pg_err "PostgreSQL on port $port is not ready after 30 s; see $BM_PG_LOG"
      return 1
    fi
    sleep 0.5
  done

  exists=$("$bin/psql" -X -q -t -A -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -c "SELECT 1 FROM pg_database WHERE datname = '$db'") || {
    _bm_pg_err "cannot query PostgreSQL on port $port"
    return 1
  }
  if [[ "$exists" != 1 ]]; then
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db" || {
      _bm_pg_err "createdb $db failed"
      return 1
    }
  fi
  BM_PG_URL="postgresql://postgres@127.0.0.1:$port/$db"
  export BM_PG_PORT BM_PG_URL BM_PG_DATA BM_PG_LOG BM_PG_SOCKET_DIR
  return 0
}

bm_pg_stop() {
  local rc=0
  # Only an instance this shell started: a failed bm_pg_start must not stop
  # the instance of another run that holds the same data directory.
  if [[ -n "${_BM_PG_STARTED:-}" && -f "$BM_PG_DATA/postmaster.pid" ]]; then
    _bm_pg_as_owner "$_BM_PG_BIN/pg_ctl" stop -D "$BM_PG_DATA" -m fast -w -t 60 -s || rc=$?
  fi
  _BM_PG_STARTED=""
  if [[ -n "${_BM_PG_TMP_SOCKET:-}" ]]; then
    rm -rf "$_BM_PG_TMP_SOCKET"
    _BM_PG_TMP_SOCKET=""
  fi
  return $rc
}
