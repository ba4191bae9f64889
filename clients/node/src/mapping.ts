// Mapping: the whole mapping at one version (buckets, pools, overrides and
// one placement table per pool), immutable once built. The Node port of
// domain/snapshot.h plus the decoding rules of codec/codec.h: a snapshot
// or delta is checked as strictly as the C++ client checks it, and a bad
// one is an INVALID_ARGUMENT BucketmapError naming the field.
//
// Open handoffs are kept beside it, in a HandoffSet (handoffs.ts), as the
// C++ client keeps them.

import { BucketmapError, invalid } from './errors';
import {
  Bucket,
  BucketState,
  DEFAULT_POOL,
  TeamId,
  compareTeamIds,
  compareUtf8,
  indexOfTeam,
  isPlaceable,
  normalizeTeamId,
  validTeamId,
} from './model';
import { PlacementMember, PlacementTable } from './placement';
import {
  AssignmentsMsg,
  BucketMsg,
  MappingDeltaMsg,
  MappingSnapshotMsg,
  toInt,
  toTeamId,
} from './proto';

/** An override's target: a pin (bucketId > 0) or a pool (non-empty). */
export interface Target {
  bucketId: number;
  pool: string;
}

function bucketFromMsg(b: BucketMsg): Bucket {
  return Object.freeze({
    id: b.id,
    name: b.name,
    state: b.state as BucketState,
    weight: b.weight,
    pool: b.pool,
    topics: Object.freeze({ ...(b.topics ?? {}) }),
    consumerGroups: Object.freeze({ ...(b.consumer_groups ?? {}) }),
    drainOrder: Object.freeze([...(b.drain_order ?? [])]),
    labels: Object.freeze({ ...(b.labels ?? {}) }),
    createdVersion: toInt(b.created_version),
    updatedVersion: toInt(b.updated_version),
  });
}

/** Bucket -> its wire form, for the cache file. */
export function bucketToMsg(b: Bucket): Record<string, unknown> {
  return {
    id: b.id,
    name: b.name,
    state: b.state,
    weight: b.weight,
    pool: b.pool,
    topics: { ...b.topics },
    consumer_groups: { ...b.consumerGroups },
    drain_order: [...b.drainOrder],
    labels: { ...b.labels },
    created_version: b.createdVersion,
    updated_version: b.updatedVersion,
  };
}

function checkBucket(b: Bucket, field: string): void {
  if (!(b.id >= 1)) throw invalid(`${field}.id: must be >= 1, got ${b.id}`);
  if (b.name === '') throw invalid(`${field}.name: bucket ${b.id} has no name`);
  if (b.pool === '') throw invalid(`${field}.pool: bucket ${b.id} has no pool`);
  if (!(b.state >= BucketState.ACTIVE && b.state <= BucketState.RETIRED)) {
    throw invalid(`${field}.state: bucket ${b.id} has invalid state ${b.state}`);
  }
  if (!(b.weight >= 1)) throw invalid(`${field}.weight: bucket ${b.id} has weight ${b.weight} (< 1)`);
}

// Decodes packed assignment columns against the message's pool table
// (codec.cc DecodeAssignments).
function decodeAssignments(
  a: AssignmentsMsg | null | undefined,
  pools: readonly string[],
  field: string,
): Array<[TeamId, Target]> {
  const ids = a?.team_ids ?? [];
  const targets = a?.targets ?? [];
  if (ids.length !== targets.length) {
    throw invalid(`${field}.targets: ${targets.length} targets for ${ids.length} team ids`);
  }
  const out: Array<[TeamId, Target]> = new Array(ids.length);
  for (let i = 0; i < ids.length; ++i) {
    const t = targets[i];
    const team = toTeamId(ids[i]);
    if (t > 0) {
      out[i] = [team, { bucketId: t, pool: '' }];
      continue;
    }
    const index = -t - 1;
    if (t === 0 || index >= pools.length) {
      throw invalid(`${field}.targets[${i}]: target ${t} names neither a bucket nor one of ${pools.length} pools`);
    }
    if (pools[index] === '') throw invalid(`${field}.targets[${i}]: refers to an empty pool name`);
    out[i] = [team, { bucketId: 0, pool: pools[index] }];
  }
  return out;
}

function checkTarget(t: Target, field: string): void {
  if (t.bucketId < 0 || (t.bucketId > 0) === (t.pool !== '')) {
    throw invalid(`${field}: exactly one of bucket_id (>= 1) or pool must be set`);
  }
}

// The sorted pool table: "default", every bucket pool, every pool with
// assignments.
function poolList(buckets: readonly Bucket[], poolCounts: ReadonlyMap<string, number>): string[] {
  const set = new Set<string>([DEFAULT_POOL]);
  for (const b of buckets) set.add(b.pool);
  for (const [pool, count] of poolCounts) if (count > 0) set.add(pool);
  return [...set].sort(compareUtf8);
}

function poolIndex(pools: readonly string[], pool: string): number {
  let lo = 0;
  let hi = pools.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareUtf8(pools[mid], pool) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo < pools.length && pools[lo] === pool ? lo : -1;
}

function teamString(id: TeamId): string {
  return id.toString();
}

export class Mapping {
  readonly version: number;
  readonly clusterId: string;
  /** Every bucket, RETIRED ones included, ascending by id. */
  readonly buckets: readonly Bucket[];
  /** Every pool that has a bucket or an assignment, and "default"; sorted. */
  readonly pools: readonly string[];
  /** Override columns, ascending by team id. */
  readonly teamIds: readonly TeamId[];
  /** targets[i] > 0: pinned bucket; < 0: pool index -targets[i] - 1. */
  readonly targets: Int32Array;
  private readonly byId: Map<number, Bucket>;
  private readonly poolTables: Map<string, PlacementTable>;
  private readonly poolCounts: Map<string, number>;

  private constructor(
    version: number,
    clusterId: string,
    buckets: Bucket[],
    pools: string[],
    teamIds: TeamId[],
    targets: Int32Array,
    poolCounts: Map<string, number>,
    previous: Mapping | null,
  ) {
    this.version = version;
    this.clusterId = clusterId;
    this.buckets = Object.freeze(buckets);
    this.pools = Object.freeze(pools);
    // Not frozen: freezing a large array costs a copy; it is never
    // written after construction (readonly in the type).
    this.teamIds = teamIds;
    this.targets = targets;
    this.poolCounts = poolCounts;
    this.byId = new Map(buckets.map((b) => [b.id, b]));
    this.poolTables = new Map();
    // Pools whose placeable members are unchanged keep their table:
    // building one costs 65,536 x members score evaluations.
    const members = new Map<string, PlacementMember[]>();
    for (const b of buckets) {
      if (!isPlaceable(b.state)) continue;
      let m = members.get(b.pool);
      if (m === undefined) members.set(b.pool, (m = []));
      m.push({ bucketId: b.id, weight: b.weight });
    }
    for (const pool of pools) {
      const m = members.get(pool);
      if (m === undefined) {
        this.poolTables.set(pool, PlacementTable.EMPTY);
        continue;
      }
      const old = previous?.poolTables.get(pool);
      this.poolTables.set(pool, old !== undefined && old.sameMembers(m) ? old : PlacementTable.build(m));
    }
  }

  /**
   * The mapping a MappingSnapshot describes (its handoffs aside).
   * INVALID_ARGUMENT naming the field for anything inconsistent.
   */
  static fromSnapshot(msg: MappingSnapshotMsg): Mapping {
    const version = toInt(msg.version);
    if (version < 0) throw invalid(`snapshot.version: must be >= 0, got ${version}`);
    if (!msg.cluster_id) throw invalid('snapshot.cluster_id: empty');
    const buckets = (msg.buckets ?? []).map(bucketFromMsg).sort((a, b) => a.id - b.id);
    const names = new Set<string>();
    for (let i = 0; i < buckets.length; ++i) {
      const b = buckets[i];
      checkBucket(b, `snapshot.buckets[id=${b.id}]`);
      if (i > 0 && buckets[i - 1].id === b.id) throw invalid(`snapshot.buckets: duplicate bucket id ${b.id}`);
      if (names.has(b.name)) throw invalid(`snapshot.buckets: duplicate bucket name "${b.name}"`);
      names.add(b.name);
    }
    const byId = new Set(buckets.map((b) => b.id));
    const assignments = decodeAssignments(msg.assignments, msg.pools ?? [], 'snapshot.assignments');
    const poolCounts = new Map<string, number>();
    for (let i = 0; i < assignments.length; ++i) {
      const [team, target] = assignments[i];
      const field = `snapshot.assignments[${i}]`;
      if (!validTeamId(team)) throw invalid(`${field}.team_id: must be >= 1, got ${teamString(team)}`);
      if (i > 0 && compareTeamIds(assignments[i - 1][0], team) >= 0) {
        throw invalid(
          `${field}.team_id: assignments must be ascending and unique by team; team ${teamString(team)} follows team ${teamString(assignments[i - 1][0])}`,
        );
      }
      checkTarget(target, field);
      if (target.bucketId > 0 && !byId.has(target.bucketId)) {
        throw invalid(`${field}.bucket_id: team ${teamString(team)} is pinned to missing bucket ${target.bucketId}`);
      }
      if (target.bucketId === 0) poolCounts.set(target.pool, (poolCounts.get(target.pool) ?? 0) + 1);
    }
    const pools = poolList(buckets, poolCounts);
    const teamIds: TeamId[] = new Array(assignments.length);
    const targets = new Int32Array(assignments.length);
    for (let i = 0; i < assignments.length; ++i) {
      const [team, target] = assignments[i];
      teamIds[i] = team;
      targets[i] = target.bucketId > 0 ? target.bucketId : -poolIndex(pools, target.pool) - 1;
    }
    return new Mapping(version, msg.cluster_id, buckets, pools, teamIds, targets, poolCounts, null);
  }

  /**
   * The mapping after `delta` (one version, from this one). `field` names
   * the delta in errors (e.g. "deltas[2]"). INVALID_ARGUMENT when the
   * delta is inconsistent; nothing changes then.
   */
  applyDelta(delta: MappingDeltaMsg, field: string): Mapping {
    // Buckets: replace by id or insert, keeping ids ascending.
    const buckets = [...this.buckets];
    const changed = new Set<number>();
    const deltaBuckets = delta.buckets ?? [];
    for (let i = 0; i < deltaBuckets.length; ++i) {
      const b = bucketFromMsg(deltaBuckets[i]);
      checkBucket(b, `${field}: change.buckets[${i}]`);
      if (changed.has(b.id)) throw invalid(`${field}: change.buckets[${i}].id: duplicate bucket id ${b.id}`);
      changed.add(b.id);
      let lo = 0;
      let hi = buckets.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (buckets[mid].id < b.id) lo = mid + 1;
        else hi = mid;
      }
      if (lo < buckets.length && buckets[lo].id === b.id) buckets[lo] = b;
      else buckets.splice(lo, 0, b);
    }
    if (deltaBuckets.length > 0) {
      const names = new Set<string>();
      for (const b of buckets) {
        if (names.has(b.name)) throw invalid(`${field}: change.buckets: duplicate bucket name "${b.name}"`);
        names.add(b.name);
      }
    }
    const byId = new Set(buckets.map((b) => b.id));

    const set = decodeAssignments(delta.set, delta.pools ?? [], `${field}.set`);
    const unset = (delta.unset_team_ids ?? []).map(toTeamId);
    const poolCounts = new Map(this.poolCounts);
    const forgetOld = (team: TeamId): void => {
      const idx = indexOfTeam(this.teamIds, team);
      if (idx < 0) return;
      const enc = this.targets[idx];
      if (enc < 0) {
        const pool = this.pools[-enc - 1];
        poolCounts.set(pool, (poolCounts.get(pool) ?? 0) - 1);
      }
    };
    for (let i = 0; i < unset.length; ++i) {
      const team = unset[i];
      if (!validTeamId(team) || (i > 0 && compareTeamIds(unset[i - 1], team) >= 0)) {
        throw invalid(
          `${field}: change.unset[${i}]: team ids must be >= 1, ascending and unique; got ${teamString(team)}`,
        );
      }
      forgetOld(team);
    }
    let k = 0;
    for (let i = 0; i < set.length; ++i) {
      const [team, target] = set[i];
      const f = `${field}: change.set[${i}]`;
      if (!validTeamId(team) || (i > 0 && compareTeamIds(set[i - 1][0], team) >= 0)) {
        throw invalid(`${f}.team_id: team ids must be >= 1, ascending and unique; got ${teamString(team)}`);
      }
      while (k < unset.length && compareTeamIds(unset[k], team) < 0) ++k;
      if (k < unset.length && compareTeamIds(unset[k], team) === 0) {
        throw invalid(`${f}.team_id: team ${teamString(team)} is both set and unset`);
      }
      checkTarget(target, f);
      if (target.bucketId > 0 && !byId.has(target.bucketId)) {
        throw invalid(`${f}.bucket_id: team ${teamString(team)} pinned to missing bucket ${target.bucketId}`);
      }
      forgetOld(team);
      if (target.bucketId === 0) poolCounts.set(target.pool, (poolCounts.get(target.pool) ?? 0) + 1);
    }
    for (const [pool, count] of [...poolCounts]) if (count <= 0) poolCounts.delete(pool);

    const pools = poolList(buckets, poolCounts);
    const identity = pools.length === this.pools.length && pools.every((p, i) => p === this.pools[i]);
    const remap = identity ? null : this.pools.map((p) => poolIndex(pools, p));
    const setTargets = set.map(([, t]) => (t.bucketId > 0 ? t.bucketId : -poolIndex(pools, t.pool) - 1));

    // Linear merge of the sorted old columns with the sorted set/unset,
    // into arrays sized for the largest outcome (no growth, no copies).
    const n = this.teamIds.length;
    const old = this.teamIds;
    const oldTargets = this.targets;
    const teamIds: TeamId[] = new Array(n + set.length);
    const targets = new Int32Array(n + set.length);
    let out = 0;
    let i = 0;
    let j = 0;
    let u = 0;
    while (i < n || j < set.length) {
      if (j < set.length && (i >= n || compareTeamIds(set[j][0], old[i]) <= 0)) {
        if (i < n && compareTeamIds(old[i], set[j][0]) === 0) ++i;
        teamIds[out] = set[j][0];
        targets[out++] = setTargets[j];
        ++j;
        continue;
      }
      const team = old[i];
      while (u < unset.length && compareTeamIds(unset[u], team) < 0) ++u;
      if (u < unset.length && compareTeamIds(unset[u], team) === 0) {
        ++i;
        continue;
      }
      const enc = oldTargets[i];
      teamIds[out] = team;
      targets[out++] = remap === null || enc > 0 ? enc : -remap[-enc - 1] - 1;
      ++i;
    }
    teamIds.length = out;
    return new Mapping(
      this.version + 1,
      this.clusterId,
      buckets,
      pools,
      teamIds,
      out === targets.length ? targets : targets.slice(0, out),
      poolCounts,
      this,
    );
  }

  findBucket(id: number): Bucket | undefined {
    return this.byId.get(id);
  }

  /** The placement table of `pool`; empty when it has no placeable bucket. */
  poolTable(pool: string): PlacementTable {
    return this.poolTables.get(pool) ?? PlacementTable.EMPTY;
  }

  get assignmentCount(): number {
    return this.teamIds.length;
  }

  /** The override of a team, if any. */
  findAssignment(teamId: TeamId): Target | undefined {
    const idx = indexOfTeam(this.teamIds, normalizeTeamId(teamId));
    if (idx < 0) return undefined;
    const enc = this.targets[idx];
    return enc > 0 ? { bucketId: enc, pool: '' } : { bucketId: 0, pool: this.pools[-enc - 1] };
  }

  /**
   * The route of a team (>= 1) by the plain rules, without an index: the
   * reference the route index is tested against.
   */
  routeOf(teamId: TeamId): { bucketId: number; pinned: boolean; pool: string } {
    const t = this.findAssignment(teamId);
    if (t !== undefined && t.bucketId > 0) return { bucketId: t.bucketId, pinned: true, pool: '' };
    const pool = t === undefined ? DEFAULT_POOL : t.pool;
    return { bucketId: this.poolTable(pool).bucketForTeam(teamId), pinned: false, pool };
  }
}

export { BucketmapError };
