#!/usr/bin/env bash
# Every bucketctl command against a real bucketmap-server and PostgreSQL:
# exit codes (0 ok, 1 server error, 2 usage), human and --json output,
# dry runs, request-id replays, expected-version conflicts, paging, the
# actor header, and the metrics endpoint.
#
# usage: bucketctl_e2e_test.sh SERVER_BIN BUCKETCTL_BIN REPO_ROOT
set -euo pipefail

[[ $# == 3 ]] || {
  echo "usage: $0 SERVER_BIN BUCKETCTL_BIN REPO_ROOT" >&2
  exit 2
}
# shellcheck source=server_fixture.sh
source "$(dirname "${BASH_SOURCE[0]}")/server_fixture.sh"
fixture_start "$1" "$2" "$3"

OUT=""
ERR=""
# run WANT_RC ARGS...: runs bucketctl, keeps stdout in OUT and stderr in
# ERR, and fails unless it exits with WANT_RC.
run() {
  local want=$1 rc=0
  shift
  OUT=$(bucketctl "$@" 2>"$WORK/stderr") || rc=$?
  ERR=$(cat "$WORK/stderr")
  echo "\$ bucketctl $* -> $rc"
  [[ -n "$OUT" ]] && echo "$OUT" | sed 's/^/  /'
  [[ -n "$ERR" ]] && echo "$ERR" | sed 's/^/  stderr: /'
  ((rc == want)) || fail "bucketctl $*: exit code $rc, want $want"
}
expect_out() { grep -qE -- "$1" <<<"$OUT" || fail "stdout lacks /$1/"; }
expect_err() { grep -qE -- "$1" <<<"$ERR" || fail "stderr lacks /$1/"; }

# Usage errors: exit 2 with the usage line, nothing sent.
run 2 frobnicate
expect_err "unknown command 'frobnicate'"
run 2 get-team
expect_err '^usage: bucketctl get-team <TEAM_ID>'
run 2 assign 42 --bucket 1
expect_err -- '--reason is required'
run 2 create-bucket --name x --reason r --weight heavy
expect_err -- '--weight: expected an integer'
run 0 help
expect_out 'bucketctl bulk-assign --file F'
run 0 help update-bucket
expect_out 'update mask'

# A fresh install: no buckets, every team unroutable.
run 0 list-buckets
expect_out '^no buckets'
run 1 get-team 5
expect_err '^error: FAILED_PRECONDITION: .*default'

# Buckets, with the actor header.
run 0 --actor alice create-bucket --name b1 --topic ingestion=events_1 --consumer-group ingestion=g1 \
  --drain-order ingestion --label tier=gold --reason "first"
expect_out '^version 1: created bucket 1 \(b1\) in pool default, weight 100, ACTIVE'
run 0 create-bucket --name f1 --pool free --weight 50 --topic ingestion=events_f1 --reason "free pool" \
  --json
expect_out '"version":"2"'
expect_out '"name":"f1"'
run 1 create-bucket --name b1 --topic ingestion=x --reason dup
expect_err '^error: ALREADY_EXISTS: '
run 1 create-bucket --name B! --reason bad
expect_err '^error: INVALID_ARGUMENT: bucket.name'
run 0 create-bucket --name b2 --topic ingestion=events_2 --reason "preview" --dry-run
expect_out '^dry run at version 2 \(nothing committed\): would create'
run 0 list-buckets
expect_out '^ID +NAME +STATE +POOL +WEIGHT +PINNED'
expect_out '^ *2 +f1 +ACTIVE +free +50 +0'
[[ $(grep -c . <<<"$OUT") == 3 ]] || fail "the dry run created a bucket"

# update-bucket by name and by id; the mask follows the flags.
run 0 update-bucket b1 --weight 200 --label tier=silver --reason "more capacity"
expect_out '^version 3: updated bucket 1 \(b1\): weight=200, labels=tier=silver'
run 0 update-bucket 2 --state PAUSED --reason "incident" --dry-run
expect_out '^dry run at version 3'
run 1 update-bucket 99 --state PAUSED --reason "no such bucket"
expect_err '^error: NOT_FOUND: '
run 1 update-bucket b1 --weight 5 --reason "stale" --expected-version 1
expect_err '^error: ABORTED: '

# Assignments: by bucket name, to a pool, replay of a request id.
run 0 assign 42 --bucket b1 --reason "pin" --request-id req-42
expect_out '^version 4: team 42 -> bucket 1 \(pin\)'
run 0 assign 42 --bucket b1 --reason "pin" --request-id req-42
expect_out '^version 4: .*\[replay'
run 1 assign 42 --bucket f1 --reason "other body" --request-id req-42
expect_err '^error: INVALID_ARGUMENT: '
run 1 assign 43 --bucket nope --reason "x"
expect_err "^error: NOT_FOUND: no bucket named 'nope'"
run 0 assign 7 --pool free --reason "free plan"
expect_out '^version 5: team 7 -> bucket 2 \(pool:free\)'
run 0 get-team 7
expect_out '^team 7 -> bucket 2 \(f1\) via pool:free, at version 5'
run 0 unassign 7 --reason "back" --dry-run
expect_out '^dry run at version 5'
run 0 unassign 7 --reason "back"
expect_out '^version 6: team 7 -> bucket 1 \(default\), was bucket 2 \(pool:free\)'

# bulk-assign from a file and from stdin.
cat >"$WORK/teams.csv" <<'CSV'
# team,target
100,1
101,pool:free
102,2   # f1
42,-
CSV
run 0 bulk-assign --file "$WORK/teams.csv" --reason "bulk" --dry-run
expect_out '^dry run at version 6 .*bulk assign of 4 teams'
run 0 bulk-assign --file "$WORK/teams.csv" --reason "bulk"
expect_out '^version 7: bulk assign of 4 teams: 4 assignment rows changed'
run 2 bulk-assign --file "$WORK/missing.csv" --reason "x"
run 2 bulk-assign --file - --reason "x" <<<"1,b1"
expect_err 'stdin:1: bucket id'

# Paging: one page with a token, then --all.
run 0 list-assignments --page-size 1
expect_out '^ *100 +bucket 1$'
expect_out '^more: add --page-token 100'
run 0 list-assignments --page-size 1 --page-token 100
expect_out '^ *101 +pool:free$'
run 0 list-assignments --page-size 1 --all
[[ $(grep -cE '^ *[0-9]+ +(bucket|pool)' <<<"$OUT") == 3 ]] || fail "--all did not fetch 3 rows"
run 0 list-assignments --bucket f1
expect_out '^ *102 +bucket 2$'

# History: the actor, kinds, per-team filter, deltas.
run 0 history --all
expect_out '^ *1 +[0-9T:-]+Z +CreateBucket +alice +bucket 1 +- +first'
expect_out 'BulkAssign +anonymous'
run 0 history --team 42 --include-delta
expect_out '^version 4 .*AssignTeam by anonymous: pin  \[request id req-42\]'
expect_out 'team 42: override removed'

# Reads.
run 0 get-mapping
expect_out '^version      7'
expect_out '^assignments  3 \(2 pinned, 1 to pools\)'
run 1 --max_message_size 64 get-mapping
expect_err '^error: RESOURCE_EXHAUSTED: '
run 0 get-mapping --min-version 7 --json
expect_out '"version":"7"'
# Served once watch streams and handoffs exist; until then UNIMPLEMENTED,
# which must still be reported as an RPC error.
for cmd in list-clients list-handoffs; do
  rc=0
  OUT=$(bucketctl "$cmd" 2>"$WORK/stderr") || rc=$?
  ERR=$(cat "$WORK/stderr")
  echo "\$ bucketctl $cmd -> $rc"
  if ((rc == 0)); then
    expect_out '^(no clients|no open handoffs|CLIENT|ID)'
  else
    ((rc == 1)) || fail "bucketctl $cmd: exit code $rc"
    expect_err '^error: UNIMPLEMENTED: '
  fi
done

# The pipeline commands (docs/pipeline.md; tests/clickhouse_e2e runs them
# against Kafka and ClickHouse): usage errors name the problem, and
# helm-values needs no Kafka for one replica.
run 2 render frobnicate
expect_err "unknown kind 'frobnicate' \\(kinds: clickhouse, helm-values"
run 2 render helm-values --diff
expect_err -- '--diff is not a flag of render helm-values'
run 2 render clickhouse
expect_err 'the Kafka tables need a broker list'
run 2 render clickhouse --kafka_brokers 127.0.0.1:1 --json
expect_err -- '--json does not apply'
run 2 render helm-values --replicas 3
expect_err -- '--replicas 3 needs --kafka_brokers'
run 0 render helm-values --roles nope
expect_out '^  deployments: \[\]'
run 2 check-pipeline
expect_err -- '--kafka_brokers is required'

# The server counts the calls.
if command -v curl >/dev/null 2>&1; then
  metrics=$(curl -fsS "http://$METRICS_ADDR/metrics")
  grep -q '^bucketmap_mapping_version 7' <<<"$metrics" || fail "metrics lack the version"
  grep -q 'bucketmap_rpc_requests_total{.*method="bucketmap.v1.AdminService/CreateBucket"' \
    <<<"$metrics" || fail "metrics lack per-method counts"
fi

# Pools and team rules.
run 0 update-pool free --priority 10 --reason "free is least important"
expect_out '^version 8: pool free ACTIVE, priority 10$'
run 0 pause-pool free --reason "incident" --dry-run
expect_out '^dry run at version 8 \(nothing committed\): pool free PAUSED, priority 10; bucket 2 paused'
run 0 pause-pool free --reason "incident"
expect_out '^version 9: pool free PAUSED, priority 10; bucket 2 paused'
run 0 pause-pool free --reason "again"
expect_out '^version 9: no change \(pool free is PAUSED with priority 10\)'
run 0 list-pools
expect_out '^free +PAUSED +10 +2 +1 +1 +- +2 +9 +anonymous +incident'
expect_out '^default +ACTIVE +100 +1 '
run 0 list-buckets --pool free
expect_out 'PAUSED'
# Rebalancing without load: the plan reports and moves nothing; --apply has
# nothing to apply; bad flags are usage errors, an unknown pool NOT_FOUND.
run 0 rebalance --pool default
expect_out '^pool default  version 9  metric events/s'
expect_out 'no load reported yet'
expect_out '^moves: 0 teams'
run 0 rebalance --pool default --apply
expect_out '^nothing to apply'
run 0 rebalance --pool default --json
expect_out '"stop_reason": ?"target_reached"'
run 2 rebalance --pool default --max-load-moved 200%
expect_err -- '--max-load-moved'
run 2 rebalance --pool default --reason "no apply"
expect_err -- '--reason and --dry-run apply only with --apply'
run 1 rebalance --pool nowhere
expect_err '^error: NOT_FOUND: pool: '
run 1 update-bucket f1 --state ACTIVE --reason "too early"
expect_err '^error: FAILED_PRECONDITION: .*pool "free", which is PAUSED'
run 0 resume-pool free --reason "over"
expect_out '^version 10: pool free ACTIVE, priority 10; bucket 2 resumed'
run 2 set-rule 100 --kind sideways --reason r
expect_err -- '--kind: expected rate-limit'
run 2 set-rule 100 --kind rate-limit --reason r
expect_err -- '--events-per-second is required'
run 1 set-rule 100 --kind rate-limit --events-per-second 50 --reason "noisy"
expect_err '^error: FAILED_PRECONDITION: .*bucket 1 \(b1\) has no "overflow" topic'
run 0 set-rule 100 --kind drop --ttl 1h --reason "spam" --request-id drop-100
expect_out '^version 11: team 100 DROP, expires [0-9T:-]+Z$'
run 0 set-rule 100 --kind drop --ttl 1h --reason "spam" --request-id drop-100
expect_out 'replay of an earlier request'
run 0 set-rule 101 --kind skip-person-processing --reason "backfill"
run 0 rules
expect_out '^ *100 +DROP +[0-9T:-]+Z +11 +anonymous +spam$'
expect_out '^ *101 +SKIP_PERSON_PROCESSING +never +12 +anonymous +backfill$'
run 0 rules --kind drop --json
expect_out '"team_id":"100"'
run 0 clear-rule 100 --reason "done"
expect_out '^version 13: team 100: DROP cleared$'
run 0 rules --team 100
expect_out '^no team rules'

echo "PASS: bucketctl end to end"
