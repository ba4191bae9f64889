#!/usr/bin/env bash
# Captures what the upgrade tests compare the current tree with, from the
# previous release at git revision REV, into tests/testdata/upgrade/:
#   release_REV_migrations.txt  its migration files and their SHA-256;
#   release_REV_sql.txt         the SQL its PgStore runs
#                               (capture_release_sql.py);
#   release_REV_protos.pb       a FileDescriptorSet of its bucketmap/v1
#                               protos (protoc --descriptor_set_out).
# Run it at each release with the previous release's tag or commit, then
# point tests/upgrade/CMakeLists.txt at the new files.
#
# Usage: tests/upgrade/capture_release.sh REV
set -euo pipefail
REV=$1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=$ROOT/tests/testdata/upgrade
cd "$ROOT"
mkdir -p "$OUT"

{
  echo "# The migrations of the previous release (commit $REV), with the SHA-256 of"
  echo "# each file as it shipped. tests/upgrade/upgrade_test.cc applies exactly these"
  echo "# to build that release's schema. Made by tests/upgrade/capture_release.sh."
  for f in $(git ls-tree --name-only "$REV" migrations/); do
    echo "$(basename "$f") $(git show "$REV:$f" | sha256sum | cut -d' ' -f1)"
  done
} > "$OUT/release_${REV}_migrations.txt"

python3 tests/upgrade/capture_release_sql.py "$REV" > "$OUT/release_${REV}_sql.txt"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/bucketmap/v1"
for f in $(git ls-tree --name-only "$REV" proto/bucketmap/v1/); do
  git show "$REV:$f" > "$TMP/bucketmap/v1/$(basename "$f")"
done
protoc -I"$TMP" --descriptor_set_out="$OUT/release_${REV}_protos.pb" "$TMP"/bucketmap/v1/*.proto
