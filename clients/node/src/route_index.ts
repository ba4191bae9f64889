// RouteIndex: the read-optimized form of one Mapping, answering route(team)
// with one hash and, usually, two typed-array reads (the Node counterpart
// of client/src/route_index.h).
//
// Layout.
//   - Every distinct route of the version (bucket, state, pool, source,
//     handoff bit) is one frozen Route object, built once per version, so
//     route() returns a shared object and allocates nothing.
//   - Overrides (pins and pool assignments) live in an open-addressing
//     table: team ids in a Float64Array (0 = free; ids up to 2^53 are exact
//     doubles), the index of their precomputed route in an Int32Array,
//     probed linearly from the low 32 bits of Mix64(team), at most half
//     full. Teams beyond 2^53 - 1 (bigint) sit in a Map of their own.
//   - Teams without an override are placed by default: the high 16 bits of
//     the same Mix64 are TeamSlot(), which indexes a 65,536-entry
//     Uint16Array of default routes.
//   One hash serves the probe (low word) and the slot (high word), and it
//   is computed on two 32-bit halves with exact double arithmetic (see
//   placement.ts): no BigInt on the hot path.
//
// A delta that changes only overrides (and handoffs that list their teams)
// copies the two arrays and updates the touched teams; anything else
// (buckets, pools, pool-based handoffs) rebuilds, as the C++ index does.
//
// Immutable once built; lookup() never allocates.

import { BucketmapError } from './errors';
import { HandoffSet } from './handoffs';
import { Mapping } from './mapping';
import {
  BucketState,
  DEFAULT_POOL,
  Route,
  RouteSource,
  RouteStatus,
  TeamId,
  makeRoute,
  normalizeTeamId,
} from './model';
import { SLOT_COUNT, mix64Halves, teamSlot } from './placement';

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const TWO32 = 4294967296;
const scratch = new Uint32Array(2);

// What a route is made of, before the version is attached.
interface RouteSpec {
  bucketId: number;
  state: BucketState;
  source: RouteSource;
  pool: string;
  handoff: boolean;
}

function specKey(s: RouteSpec): string {
  return `${s.bucketId}\u0000${s.state}\u0000${s.source}\u0000${s.pool}\u0000${s.handoff ? 1 : 0}`;
}

function materialize(version: number, s: RouteSpec): Route {
  return makeRoute(
    version,
    s.bucketId > 0 ? RouteStatus.OK : RouteStatus.NO_PLACEABLE_BUCKET,
    s.bucketId,
    s.bucketId > 0 ? s.state : BucketState.UNSPECIFIED,
    s.source,
    s.pool,
    s.handoff,
  );
}

function capacityFor(count: number): number {
  let c = 16;
  while (c < count * 2) c *= 2;
  return c;
}

export class RouteIndex {
  readonly version: number;
  private readonly keys: Float64Array;
  private readonly vals: Int32Array;
  private readonly mask: number;
  private readonly count: number;
  private readonly big: Map<bigint, number>;
  // Override routes, by index; specs/specIndex describe them for updates.
  private readonly routes: Route[];
  private readonly specs: RouteSpec[];
  private readonly specIndex: Map<string, number>;
  private readonly defaultSlots: Uint16Array;
  private readonly defaultRoutes: Route[];
  private readonly invalidTeam: Route;

  private constructor(
    version: number,
    keys: Float64Array,
    vals: Int32Array,
    count: number,
    big: Map<bigint, number>,
    specs: RouteSpec[],
    specIndex: Map<string, number>,
    defaultSlots: Uint16Array,
    defaultRoutes: Route[],
  ) {
    this.version = version;
    this.keys = keys;
    this.vals = vals;
    this.mask = keys.length - 1;
    this.count = count;
    this.big = big;
    this.specs = specs;
    this.specIndex = specIndex;
    this.routes = specs.map((s) => materialize(version, s));
    this.defaultSlots = defaultSlots;
    this.defaultRoutes = defaultRoutes;
    this.invalidTeam = makeRoute(
      version,
      RouteStatus.INVALID_TEAM,
      0,
      BucketState.UNSPECIFIED,
      RouteSource.DEFAULT,
      '',
      false,
    );
  }

  /** Builds the index of `mapping` with the handoff bits of `handoffs`. */
  static build(mapping: Mapping, handoffs: HandoffSet): RouteIndex {
    const maker = new EntryMaker(mapping, handoffs);
    const listed = handoffs.empty ? [] : handoffs.listedTeams();
    const n = mapping.teamIds.length;
    const keys = new Float64Array(capacityFor(n + listed.length));
    const vals = new Int32Array(keys.length);
    const big = new Map<bigint, number>();
    const specs: RouteSpec[] = [];
    const specIndex = new Map<string, number>();
    let count = 0;
    for (let i = 0; i < n; ++i) {
      const team = mapping.teamIds[i];
      if (insert(keys, vals, big, team, internSpec(specs, specIndex, maker.make(i)))) ++count;
    }
    // Teams listed in an open handoff with no override now (an unpin moved
    // them to default placement): their default route with the bit.
    for (const team of listed) {
      if (mapping.findAssignment(team) !== undefined) continue;
      if (insert(keys, vals, big, team, internSpec(specs, specIndex, maker.listedDefault(team)))) ++count;
    }

    // Default placement.
    const table = mapping.poolTable(DEFAULT_POOL);
    const defaultSpecs: RouteSpec[] = [];
    const slots = new Uint16Array(SLOT_COUNT);
    if (table.empty) {
      defaultSpecs.push({ bucketId: 0, state: 0, source: RouteSource.DEFAULT, pool: DEFAULT_POOL, handoff: false });
    } else {
      const members = table.members;
      if (members.length > SLOT_COUNT / 2) {
        throw new BucketmapError(
          'RESOURCE_EXHAUSTED',
          `snapshot.buckets: ${members.length} placeable buckets in the default pool; the client supports ${SLOT_COUNT / 2}`,
        );
      }
      const memberIndex = new Map<number, number>();
      for (const m of members) {
        memberIndex.set(m.bucketId, defaultSpecs.length);
        defaultSpecs.push({
          bucketId: m.bucketId,
          state: mapping.findBucket(m.bucketId)!.state,
          source: RouteSource.DEFAULT,
          pool: DEFAULT_POOL,
          handoff: false,
        });
      }
      // A member some of whose slots are moving in an open pool-based
      // handoff gets a second route, with the bit, for those slots.
      const moving = new Map<number, number>();
      const poolHandoffs = handoffs.hasPoolHandoffs;
      for (let s = 0; s < SLOT_COUNT; ++s) {
        const id = table.bucketForSlot(s);
        let route = memberIndex.get(id)!;
        if (poolHandoffs && handoffs.slotMoved(DEFAULT_POOL, s, id)) {
          let m = moving.get(route);
          if (m === undefined) {
            m = defaultSpecs.length;
            defaultSpecs.push({ ...defaultSpecs[route], handoff: true });
            moving.set(route, m);
          }
          route = m;
        }
        slots[s] = route;
      }
    }
    const version = mapping.version;
    return new RouteIndex(
      version,
      keys,
      vals,
      count,
      big,
      specs,
      specIndex,
      slots,
      defaultSpecs.map((s) => materialize(version, s)),
    );
  }

  /**
   * The index of `mapping` from `previous`, the index of its predecessor.
   * Requires the same buckets and pool table, overrides that differ only
   * for the teams in `touched`, and no pool-based handoff opened or ended.
   */
  static update(previous: RouteIndex, mapping: Mapping, handoffs: HandoffSet, touched: Iterable<TeamId>): RouteIndex {
    const touchedList = [...new Set([...touched].map(normalizeTeamId))];
    if ((previous.count + touchedList.length) * 2 > previous.keys.length) return RouteIndex.build(mapping, handoffs);
    const keys = previous.keys.slice();
    const vals = previous.vals.slice();
    const big = new Map(previous.big);
    const specs = [...previous.specs];
    const specIndex = new Map(previous.specIndex);
    const maker = new EntryMaker(mapping, handoffs);
    let count = previous.count;
    for (const team of touchedList) {
      if (remove(keys, vals, big, team)) --count;
      const i = indexOfOverride(mapping, team);
      let spec: RouteSpec | null = null;
      if (i >= 0) spec = maker.make(i);
      else if (handoffs.lists(team)) spec = maker.listedDefault(team);
      if (spec !== null && insert(keys, vals, big, team, internSpec(specs, specIndex, spec))) ++count;
    }
    const version = mapping.version;
    return new RouteIndex(
      version,
      keys,
      vals,
      count,
      big,
      specs,
      specIndex,
      previous.defaultSlots,
      previous.defaultRoutes.map((r) =>
        materialize(version, {
          bucketId: r.bucketId,
          state: r.bucketState,
          source: r.source,
          pool: r.pool,
          handoff: r.handoff,
        }),
      ),
    );
  }

  /** Number of entries indexed (overrides and listed teams without one). */
  get size(): number {
    return this.count;
  }

  /** The route of `team`. Never allocates for a number id. */
  lookup(team: number | bigint): Route {
    if (typeof team !== 'number') return this.lookupBig(team);
    if (!(team >= 1 && team <= MAX_SAFE) || team % 1 !== 0) return this.invalidTeam;
    // Mix64 of (hi, lo), inlined from placement.ts's mix64Halves.
    let l = (team >>> 0) + 0x7f4a7c15;
    let h = (((team / TWO32) >>> 0) + 0x9e3779b9 + (l > 0xffffffff ? 1 : 0)) >>> 0;
    l >>>= 0;
    let zl = (l ^ ((l >>> 30) | (h << 2))) >>> 0;
    let zh = (h ^ (h >>> 30)) >>> 0;
    l = Math.imul(zl, 0x1ce4e5b9) >>> 0;
    h = (mulhi(zl, 0x1ce4e5b9) + Math.imul(zh, 0x1ce4e5b9) + Math.imul(zl, 0xbf58476d)) >>> 0;
    zl = (l ^ ((l >>> 27) | (h << 5))) >>> 0;
    zh = (h ^ (h >>> 27)) >>> 0;
    l = Math.imul(zl, 0x133111eb) >>> 0;
    h = (mulhi(zl, 0x133111eb) + Math.imul(zh, 0x133111eb) + Math.imul(zl, 0x94d049bb)) >>> 0;
    const hashHi = h ^ (h >>> 31);
    const hashLo = l ^ ((l >>> 31) | (h << 1));
    const keys = this.keys;
    const mask = this.mask;
    for (let i = hashLo & mask; ; i = (i + 1) & mask) {
      const k = keys[i];
      if (k === team) return this.routes[this.vals[i]];
      if (k === 0) break;
    }
    return this.defaultRoutes[this.defaultSlots[hashHi >>> 16]];
  }

  private lookupBig(team: bigint): Route {
    if (typeof team !== 'bigint' || team < 1n || team >= 1n << 63n) return this.invalidTeam;
    const normalized = normalizeTeamId(team);
    if (typeof normalized === 'number') return this.lookup(normalized);
    const v = this.big.get(team);
    if (v !== undefined) return this.routes[v];
    return this.defaultRoutes[this.defaultSlots[teamSlot(team)]];
  }
}

// The unsigned high word of a * b (a, b < 2^32); see placement.ts.
function mulhi(a: number, b: number): number {
  const a0 = a & 0xffff;
  const a1 = a >>> 16;
  const b0 = b & 0xffff;
  const b1 = b >>> 16;
  const t = a1 * b0 + ((a0 * b0) >>> 16);
  const w1 = (t & 0xffff) + a0 * b1;
  return (a1 * b1 + Math.floor(t / 65536) + Math.floor(w1 / 65536)) >>> 0;
}

function probeStart(team: number, mask: number): number {
  mix64Halves(Math.floor(team / TWO32) >>> 0, team >>> 0, scratch);
  return scratch[1] & mask;
}

// Inserts or replaces `team`; true when it was not there before.
function insert(keys: Float64Array, vals: Int32Array, big: Map<bigint, number>, team: TeamId, route: number): boolean {
  if (typeof team === 'bigint') {
    const had = big.has(team);
    big.set(team, route);
    return !had;
  }
  const mask = keys.length - 1;
  for (let i = probeStart(team, mask); ; i = (i + 1) & mask) {
    if (keys[i] === team) {
      vals[i] = route;
      return false;
    }
    if (keys[i] === 0) {
      keys[i] = team;
      vals[i] = route;
      return true;
    }
  }
}

// Removes `team` (backward-shift deletion keeps every probe chain intact);
// true when it was there.
function remove(keys: Float64Array, vals: Int32Array, big: Map<bigint, number>, team: TeamId): boolean {
  if (typeof team === 'bigint') return big.delete(team);
  const mask = keys.length - 1;
  let i = probeStart(team, mask);
  for (;;) {
    if (keys[i] === 0) return false;
    if (keys[i] === team) break;
    i = (i + 1) & mask;
  }
  // Shift later members of the chain back into the hole when their home
  // slot does not lie cyclically in (hole, j].
  let hole = i;
  for (let j = (hole + 1) & mask; keys[j] !== 0; j = (j + 1) & mask) {
    const home = probeStart(keys[j], mask);
    const between = hole <= j ? home > hole && home <= j : home > hole || home <= j;
    if (between) continue;
    keys[hole] = keys[j];
    vals[hole] = vals[j];
    hole = j;
  }
  keys[hole] = 0;
  vals[hole] = 0;
  return true;
}

function internSpec(specs: RouteSpec[], specIndex: Map<string, number>, spec: RouteSpec): number {
  const key = specKey(spec);
  let i = specIndex.get(key);
  if (i === undefined) {
    i = specs.length;
    specs.push(spec);
    specIndex.set(key, i);
  }
  return i;
}

function indexOfOverride(mapping: Mapping, team: TeamId): number {
  const ids = mapping.teamIds;
  let lo = 0;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const a = ids[mid];
    const less = typeof a === typeof team ? a < team : typeof a === 'number';
    if (less) lo = mid + 1;
    else hi = mid;
  }
  return lo < ids.length && ids[lo] === team ? lo : -1;
}

// Computes the routes of overrides with the mapping's placement tables,
// exactly as Mapping.routeOf() does.
class EntryMaker {
  constructor(
    private readonly mapping: Mapping,
    private readonly handoffs: HandoffSet,
  ) {}

  make(i: number): RouteSpec {
    const m = this.mapping;
    const team = m.teamIds[i];
    const target = m.targets[i];
    let bucketId = target;
    let pool = '';
    let source: RouteSource = RouteSource.PIN;
    if (target < 0) {
      pool = m.pools[-target - 1];
      bucketId = m.poolTable(pool).bucketForTeam(team);
      source = RouteSource.POOL;
    }
    const state = bucketId > 0 ? m.findBucket(bucketId)!.state : BucketState.UNSPECIFIED;
    const handoff =
      !this.handoffs.empty &&
      (this.handoffs.lists(team) ||
        (source !== RouteSource.PIN && this.handoffs.slotMoved(pool, teamSlot(team), bucketId)));
    return { bucketId, state, source, pool, handoff };
  }

  listedDefault(team: TeamId): RouteSpec {
    const bucketId = this.mapping.poolTable(DEFAULT_POOL).bucketForTeam(team);
    const state = bucketId > 0 ? this.mapping.findBucket(bucketId)!.state : BucketState.UNSPECIFIED;
    return { bucketId, state, source: RouteSource.DEFAULT, pool: DEFAULT_POOL, handoff: true };
  }
}
