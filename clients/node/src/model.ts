// The model as this library keeps it: buckets, targets, team ids, and the
// route value route() returns. Plain immutable values.

/** Numeric values match bucketmap.v1.BucketState. */
export const BucketState = {
  UNSPECIFIED: 0,
  ACTIVE: 1,
  PAUSED: 2,
  DRAINING: 3,
  RETIRED: 4,
} as const;
export type BucketState = (typeof BucketState)[keyof typeof BucketState];

export function isPlaceable(state: number): boolean {
  return state === BucketState.ACTIVE || state === BucketState.PAUSED;
}

/** Where a team's route comes from. */
export const RouteSource = { PIN: 0, POOL: 1, DEFAULT: 2 } as const;
export type RouteSource = (typeof RouteSource)[keyof typeof RouteSource];

/** Why a Route has, or has no, bucket (as the C++ RouteStatus). */
export const RouteStatus = {
  /** bucketId names the team's bucket. */
  OK: 0,
  /** No mapping has been loaded yet (no snapshot, no cache file). */
  NO_MAPPING: 1,
  /** The team's pool has no ACTIVE or PAUSED bucket: never guess. */
  NO_PLACEABLE_BUCKET: 2,
  /**
   * team id < 1, not an integer, or a number beyond 2^53 - 1 (pass such
   * ids as bigint).
   */
  INVALID_TEAM: 3,
} as const;
export type RouteStatus = (typeof RouteStatus)[keyof typeof RouteStatus];

/** The pool of every team without an override. */
export const DEFAULT_POOL = 'default';

/** A team id: a safe integer, or a bigint for ids beyond 2^53 - 1. */
export type TeamId = number | bigint;

export interface Bucket {
  readonly id: number;
  readonly name: string;
  readonly state: BucketState;
  readonly weight: number;
  readonly pool: string;
  /** role -> topic */
  readonly topics: Readonly<Record<string, string>>;
  /** role -> consumer group */
  readonly consumerGroups: Readonly<Record<string, string>>;
  readonly drainOrder: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  readonly createdVersion: number;
  readonly updatedVersion: number;
}

/**
 * The route of one team at one version. route() hands out shared frozen
 * instances (one per distinct route of a view), so it allocates nothing;
 * compare fields, not identities.
 */
export interface Route {
  /** The version this result was computed from; 0 without a mapping. */
  readonly version: number;
  readonly status: RouteStatus;
  /** The team's bucket; 0 unless routable. */
  readonly bucketId: number;
  /** State of bucketId; 0 (UNSPECIFIED) unless routable. */
  readonly bucketState: BucketState;
  /** Pin, pool assignment or default placement. */
  readonly source: RouteSource;
  /** The team's pool ("" for pins and without a mapping). */
  readonly pool: string;
  /** True while the team is in an open handoff (SPEC §5). */
  readonly handoff: boolean;
  readonly routable: boolean;
  readonly paused: boolean;
}

export function makeRoute(
  version: number,
  status: RouteStatus,
  bucketId: number,
  bucketState: BucketState,
  source: RouteSource,
  pool: string,
  handoff: boolean,
): Route {
  const routable = status === RouteStatus.OK;
  return Object.freeze({
    version,
    status,
    bucketId,
    bucketState,
    source,
    pool,
    handoff,
    routable,
    paused: routable && bucketState === BucketState.PAUSED,
  });
}

export const NO_MAPPING_ROUTE: Route = makeRoute(
  0,
  RouteStatus.NO_MAPPING,
  0,
  BucketState.UNSPECIFIED,
  RouteSource.DEFAULT,
  '',
  false,
);

/** "pin", "pool:<name>" or "default", as TeamRoute.source. */
export function routeSourceString(route: Route): string {
  if (route.source === RouteSource.PIN) return 'pin';
  if (route.source === RouteSource.POOL) return `pool:${route.pool}`;
  return 'default';
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/** Whether `id` is a valid team id (>= 1; numbers must be safe integers). */
export function validTeamId(id: unknown): id is TeamId {
  if (typeof id === 'number') return id >= 1 && id <= MAX_SAFE && Number.isInteger(id);
  if (typeof id === 'bigint') return id >= 1n && id < 1n << 63n;
  return false;
}

/**
 * Orders team ids: numbers by value, every bigint after every number (a
 * bigint id is always beyond 2^53 - 1 once normalized; see normalizeTeamId).
 */
export function compareTeamIds(a: TeamId, b: TeamId): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (typeof a === 'number') return -1;
  if (typeof b === 'number') return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A bigint that fits a safe integer becomes a number, so equal ids compare equal. */
export function normalizeTeamId(id: TeamId): TeamId {
  if (typeof id === 'bigint' && id <= BigInt(MAX_SAFE) && id >= -BigInt(MAX_SAFE)) return Number(id);
  return id;
}

/** Index of `id` in the ascending `ids`, or -1. */
export function indexOfTeam(ids: readonly TeamId[], id: TeamId): number {
  let lo = 0;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareTeamIds(ids[mid], id) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo < ids.length && compareTeamIds(ids[lo], id) === 0 ? lo : -1;
}

/**
 * Compares strings by their UTF-8 bytes, as C++ std::string does (JS `<`
 * compares UTF-16 code units, which orders surrogate pairs differently).
 */
export function compareUtf8(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; ++i) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // Surrogates (U+D800..U+DFFF) encode code points above U+FFFF, which
    // sort after every BMP character in UTF-8.
    if (x >= 0xd800 && x <= 0xdfff) x += 0x10000;
    if (y >= 0xd800 && y <= 0xdfff) y += 0x10000;
    return x - y;
  }
  return a.length - b.length;
}
