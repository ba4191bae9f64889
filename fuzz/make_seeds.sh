#!/usr/bin/env bash
# Regenerates the seed corpus in fuzz/corpus/ from the text-format protos
# below, with protoc --encode. The seeds are committed; run this only after
# changing them. The delta and admin seeds start with the fuzzers' selector
# byte (see the fuzzers' comments).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PROTO=../proto

# encode <message> <out-file> <prefix-byte-octal-or-empty> <text>
encode() {
  local msg=$1 out=$2 prefix=$3 text=$4
  mkdir -p "$(dirname "$out")"
  { if [[ -n $prefix ]]; then printf "\\$prefix"; fi
    printf '%s' "$text" | protoc -I"$PROTO" --encode="bucketmap.v1.$msg" \
      "$PROTO"/bucketmap/v1/types.proto "$PROTO"/bucketmap/v1/mapping.proto \
      "$PROTO"/bucketmap/v1/admin.proto; } > "$out"
}

BUCKETS='
buckets { id: 1 name: "b1" state: ACTIVE weight: 100 pool: "default"
          topics { key: "ingest" value: "t1" } consumer_groups { key: "ingest" value: "g1" }
          drain_order: "ingest" created_version: 1 updated_version: 1 }
buckets { id: 2 name: "b2" state: PAUSED weight: 50 pool: "paid"
          topics { key: "ingest" value: "t2" } created_version: 2 updated_version: 3 }
buckets { id: 3 name: "b3" state: DRAINING weight: 10 pool: "paid"
          created_version: 2 updated_version: 4 }'

S=corpus/client_snapshot_fuzzer
encode MappingSnapshot $S/empty "" 'version: 0 cluster_id: "c"'
encode MappingSnapshot $S/buckets "" "version: 5 cluster_id: \"c\" $BUCKETS
pools: \"default\" pools: \"paid\""
encode MappingSnapshot $S/assignments "" "version: 7 cluster_id: \"c\" $BUCKETS
pools: \"default\" pools: \"paid\" pools: \"empty\"
assignments { team_ids: 3 team_ids: 9 team_ids: 12 team_ids: 40 targets: 1 targets: -2 targets: -3 targets: 3 }"

D=corpus/client_delta_fuzzer
# Selector byte 1: versions are rewritten to follow the base.
encode WatchResponse.Push $D/assign 001 '
deltas { pools: "paid" pools: "default" set { team_ids: 5 team_ids: 7 targets: -1 targets: 1 } }'
encode WatchResponse.Push $D/unset 001 '
deltas { unset_team_ids: 8 unset_team_ids: 100 }
deltas { set { team_ids: 8 targets: 3 } }'
encode WatchResponse.Push $D/bucket 001 '
deltas { buckets { id: 6 name: "b6" state: ACTIVE weight: 100 pool: "paid"
                   created_version: 11 updated_version: 11 } }
deltas { buckets { id: 3 name: "b3" state: DRAINING weight: 150 pool: "paid"
                   topics { key: "ingest" value: "t-ingest-3" } topics { key: "out" value: "t-out-3" }
                   consumer_groups { key: "ingest" value: "g-3" } drain_order: "ingest"
                   drain_order: "out" labels { key: "tier" value: "paid" }
                   created_version: 3 updated_version: 12 } }'
# Selector byte 0: versions as given.
encode WatchResponse.Push $D/versions 000 '
deltas { from_version: 10 to_version: 11 set { team_ids: 1 targets: 1 } }'

A=corpus/admin_request_fuzzer
encode CreateBucketRequest $A/create 000 '
bucket { name: "new-one" weight: 20 pool: "paid" topics { key: "ingest" value: "in.x" }
         consumer_groups { key: "ingest" value: "cg" } drain_order: "ingest"
         labels { key: "k" value: "v" } }
reason: "fuzz seed"'
encode UpdateBucketRequest $A/update 001 '
bucket { id: 3 state: DRAINING weight: 7 }
update_mask { paths: "state" paths: "weight" } reason: "fuzz seed"'
encode UpdateBucketRequest $A/update_by_name 001 '
bucket { name: "b1" pool: "paid" } update_mask { paths: "pool" } reason: "r"'
encode AssignTeamRequest $A/assign 002 'team_id: 42 bucket_id: 1 reason: "r"'
encode AssignTeamRequest $A/assign_pool 002 'team_id: 43 pool: "paid" reason: "r"'
encode BulkAssignRequest $A/bulk 003 '
assignments { team_id: 7 unassign: true } assignments { team_id: 8 bucket_id: 1 }
assignments { team_id: 50 pool: "default" } reason: "r"'
