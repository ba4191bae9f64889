#!/usr/bin/env bash
# Checks that no #include runs up or sideways between the layer folders
# (docs/architecture.md, "Layers"). Each line of LAYERS is a folder and the
# folders its files may include from (its own included); a folder not
# listed (tests/, bench/, fuzz/, examples/) may include anything.
# Exits 1 and lists every offending include.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# folder: allowed include prefixes (bucketmap/v1 is the generated protos;
# bucketmap/ is the client's public API).
LAYERS=(
  "domain: domain"
  "codec: codec domain bucketmap/v1"
  "client: client bucketmap codec domain"
  "server/base: server/base domain"
  "server/metrics: server/metrics server/base domain"
  "server/kafka: server/kafka server/base domain"
  "server/store: server/store server/base codec domain bucketmap/v1"
  "server/state: server/state server/store server/base codec domain bucketmap/v1"
  "server/replica: server/replica server/store server/metrics server/base domain"
  "server/signals: server/signals server/kafka server/state server/store server/metrics server/base codec domain bucketmap/v1"
  "server/outbox: server/outbox server/store server/metrics server/base codec domain bucketmap/v1"
  "server/handoff: server/handoff server/kafka server/state server/store server/metrics server/base codec domain bucketmap/v1"
  "server/watch: server/watch server/signals server/state server/store server/metrics server/base codec domain bucketmap/v1"
  "server/rules: server/rules server/state server/store server/metrics server/base codec domain bucketmap/v1"
  "server/rebalance: server/rebalance server/signals server/state server/store server/metrics server/base codec domain bucketmap/v1"
  "server/rpc: server/rpc server/rebalance server/watch server/signals server/state server/store server/metrics server/base codec domain bucketmap/v1"
  "tools/bucketctl: tools/bucketctl bucketmap codec domain"
)

bad=0
for entry in "${LAYERS[@]}"; do
  folder=${entry%%:*}
  read -r -a allowed <<<"${entry#*:}"
  # The layer's own files: server/ holds other layers below it, so only
  # files directly in a server/<layer> folder count for that layer.
  while IFS= read -r file; do
    while IFS= read -r inc; do
      ok=0
      for prefix in "${allowed[@]}"; do
        [[ $inc == "$prefix"/* ]] && ok=1 && break
      done
      # Only project includes are checked: the ones naming a project folder.
      case $inc in
        domain/* | codec/* | client/* | server/* | tools/* | bucketmap/*) ;;
        *) ok=1 ;;
      esac
      if ((ok == 0)); then
        echo "$file includes \"$inc\": $folder may include only ${allowed[*]}"
        bad=1
      fi
    done < <(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$file")
  done < <(find "$folder" -maxdepth 3 \( -name '*.h' -o -name '*.cc' \) -not -path '*/build*')
done
if ((bad)); then
  echo "check_layers: includes run up or sideways between layers" >&2
  exit 1
fi
echo "check_layers: every include runs down"
