#!/usr/bin/env bash
# Tried as a new user would: runs the bucketctl quick start of README.md,
# command by command, against a fresh bucketmap-server and PostgreSQL, and
# checks that the team it pins is reported as pinned.
#
# usage: readme_quickstart_test.sh SERVER_BIN BUCKETCTL_BIN REPO_ROOT
set -euo pipefail

[[ $# == 3 ]] || {
  echo "usage: $0 SERVER_BIN BUCKETCTL_BIN REPO_ROOT" >&2
  exit 2
}
ROOT=$3
# shellcheck source=server_fixture.sh
source "$(dirname "${BASH_SOURCE[0]}")/server_fixture.sh"

# The commands between the markers, inside the fenced block; `\`
# continuations are joined, comments and blank lines dropped.
extract_quickstart() {
  awk '
    /<!-- quickstart:bucketctl -->/ { on = 1; next }
    on && /<!-- \/quickstart -->/   { exit }
    on && /^[[:space:]]*(```|~~~)/  { fenced = !fenced; next }
    on && fenced                    { print }
  ' "$ROOT/README.md" | sed -e 's/^[[:space:]]*\$ //' | awk '
    /\\$/ { sub(/\\$/, ""); line = line $0; next }
    { line = line $0; if (line !~ /^[[:space:]]*(#|$)/) print line; line = "" }
  '
}

mapfile -t COMMANDS < <(extract_quickstart)
((${#COMMANDS[@]} >= 3)) || fail "README.md: found ${#COMMANDS[@]} quick-start commands, want at least 3"
for cmd in "${COMMANDS[@]}"; do
  [[ "$cmd" =~ ^[[:space:]]*bucketctl[[:space:]] ]] ||
    fail "README.md quick start: not a bucketctl command: $cmd"
done
TEAM=""
created=0
for cmd in "${COMMANDS[@]}"; do
  [[ "$cmd" =~ [[:space:]]create-bucket[[:space:]] ]] && created=1
  if [[ -z "$TEAM" && "$cmd" =~ [[:space:]]assign[[:space:]]+([0-9]+)[[:space:]] ]]; then
    TEAM=${BASH_REMATCH[1]}
  fi
done
((created)) || fail "quick start creates no bucket"
[[ -n "$TEAM" ]] || fail "quick start pins no team (no 'bucketctl assign TEAM ...')"

# The server's defaults (handoffs on), as ./scripts/run.sh runs it.
FIXTURE_SERVER_FLAGS="" fixture_start "$1" "$2" "$ROOT"

# `bucketctl` in the commands is the function of the fixture, which adds
# --server; eval keeps the README's quoting.
reads=0
for cmd in "${COMMANDS[@]}"; do
  echo "\$ $cmd"
  rc=0
  out=$(eval "$cmd" 2>&1) || rc=$?
  echo "$out"
  ((rc == 0)) || fail "exit code $rc from: $cmd"
  if [[ "$cmd" =~ [[:space:]]get-team[[:space:]]+$TEAM([[:space:]]|$) ]]; then
    reads=$((reads + 1))
    grep -qE "^team $TEAM -> bucket [0-9]+.* via pin" <<<"$out" ||
      fail "get-team does not show team $TEAM as pinned"
  elif [[ "$cmd" =~ [[:space:]]get-mapping([[:space:]]|$) ]]; then
    reads=$((reads + 1))
    grep -qE "^ *$TEAM +bucket [0-9]+$" <<<"$out" ||
      fail "get-mapping does not list team $TEAM with its bucket"
  fi
done
((reads > 0)) || fail "quick start never reads the mapping back (get-team $TEAM or get-mapping)"

# The machine view agrees.
json=$(bucketctl --json get-team "$TEAM")
grep -q '"source":"pin"' <<<"$json" || fail "get-team --json: want source pin, got $json"
echo "PASS: README quick start (${#COMMANDS[@]} commands, team $TEAM pinned)"
