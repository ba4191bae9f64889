// Placement: the pure function from (team id, a pool's buckets) to a
// bucket, bit for bit as domain/placement.h computes it in the C++
// library and the server. tests/testdata/placement_vector.txt pins it down.
//
//   Mix64(x):  x += 0x9e3779b97f4a7c15
//              z  = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
//              z  = (z ^ (z >> 27)) * 0x94d049bb133111eb
//              return z ^ (z >> 31)
//   TeamSlot(team_id) = Mix64(uint64(team_id)) >> 48           (0..65535)
//   For slot s and member (bucket b, weight w):
//     h     = Mix64((uint64(b) << 32) ^ uint64(s) ^ kPlacementSalt)
//     u     = (double(h >> 11) + 0.5) * 2^-53
//     score = -double(w) / log(u)
//   The slot goes to the highest score; on an exact tie, to the lower id.
//
// Why two implementations of Mix64: BigInt arithmetic allocates and costs
// about a microsecond per hash in V8 (bench/route_bench.ts measures it), so
// the hot path (route()) computes Mix64 on two 32-bit halves with exact
// double arithmetic instead. mix64Big() is the readable reference; the
// tests hold the two equal.
//
// V8's Math.log is fdlibm's, accurate to within an ulp, as
// domain/placement.h requires of a port.

export const SLOT_COUNT = 65536;
/** ASCII "bktmap01": part of the wire contract, like the test vector. */
export const PLACEMENT_SALT = 0x626b746d61703031n;
const SALT_HI = 0x626b746d;
const SALT_LO = 0x61703031;

const MASK64 = (1n << 64n) - 1n;

/** The reference Mix64 on BigInt (uint64 in, uint64 out). */
export function mix64Big(x: bigint): bigint {
  x = (x + 0x9e3779b97f4a7c15n) & MASK64;
  let z = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return z ^ (z >> 31n);
}

// The unsigned high 32 bits of the 64-bit product a * b (a, b < 2^32), with
// every intermediate below 2^53 (Hacker's Delight, mulhu).
function mulhi32(a: number, b: number): number {
  const a0 = a & 0xffff;
  const a1 = a >>> 16;
  const b0 = b & 0xffff;
  const b1 = b >>> 16;
  const t = a1 * b0 + ((a0 * b0) >>> 16);
  const w1 = (t & 0xffff) + a0 * b1;
  return (a1 * b1 + Math.floor(t / 65536) + Math.floor(w1 / 65536)) >>> 0;
}

/** Mix64 of the uint64 (hi, lo) in 32-bit halves; the result goes to `out`. */
export function mix64Halves(hi: number, lo: number, out: Uint32Array): void {
  // x += 0x9e3779b97f4a7c15
  let l = lo + 0x7f4a7c15;
  let h = (hi + 0x9e3779b9 + (l > 0xffffffff ? 1 : 0)) >>> 0;
  l >>>= 0;
  // z = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
  let zl = (l ^ ((l >>> 30) | (h << 2))) >>> 0;
  let zh = (h ^ (h >>> 30)) >>> 0;
  l = Math.imul(zl, 0x1ce4e5b9) >>> 0;
  h = (mulhi32(zl, 0x1ce4e5b9) + Math.imul(zh, 0x1ce4e5b9) + Math.imul(zl, 0xbf58476d)) >>> 0;
  // z = (z ^ (z >> 27)) * 0x94d049bb133111eb
  zl = (l ^ ((l >>> 27) | (h << 5))) >>> 0;
  zh = (h ^ (h >>> 27)) >>> 0;
  l = Math.imul(zl, 0x133111eb) >>> 0;
  h = (mulhi32(zl, 0x133111eb) + Math.imul(zh, 0x133111eb) + Math.imul(zl, 0x94d049bb)) >>> 0;
  // z ^ (z >> 31)
  out[0] = (h ^ (h >>> 31)) >>> 0;
  out[1] = (l ^ ((l >>> 31) | (h << 1))) >>> 0;
}

const scratch = new Uint32Array(2);
const TWO32 = 4294967296;

/**
 * Returns Mix64 of a team id: a safe integer >= 0 or a bigint (taken as
 * uint64, so a negative bigint wraps as in C++).
 */
export function mix64(x: number | bigint): bigint {
  if (typeof x === 'bigint') return mix64Big(x & MASK64);
  mix64Halves(Math.floor(x / TWO32) >>> 0, x >>> 0, scratch);
  return (BigInt(scratch[0]) << 32n) | BigInt(scratch[1]);
}

/** Returns the slot of a team: Mix64(team_id) >> 48. */
export function teamSlot(teamId: number | bigint): number {
  if (typeof teamId === 'bigint') return Number(mix64Big(teamId & MASK64) >> 48n);
  mix64Halves(Math.floor(teamId / TWO32) >>> 0, teamId >>> 0, scratch);
  return scratch[0] >>> 16;
}

export interface PlacementMember {
  bucketId: number;
  weight: number;
}

// The rendezvous score of one (slot, member) pair.
function score(slot: number, bucketId: number, weight: number): number {
  mix64Halves((bucketId ^ SALT_HI) >>> 0, (slot ^ SALT_LO) >>> 0, scratch);
  // h >> 11: the top 53 bits, exact as a double.
  const top = scratch[0] * 2097152 + (scratch[1] >>> 11);
  const u = (top + 0.5) * 1.1102230246251565e-16; // 2^-53
  return -weight / Math.log(u);
}

/** Slot -> bucket table of one pool. Immutable once built. */
export class PlacementTable {
  /** Members sorted by bucket id. */
  readonly members: readonly PlacementMember[];
  // SLOT_COUNT bucket ids, or null for an empty pool (every slot: 0).
  private readonly slots: Int32Array | null;

  private constructor(members: PlacementMember[], slots: Int32Array | null) {
    this.members = members;
    this.slots = slots;
  }

  /** The table of a pool with no placeable bucket. */
  static readonly EMPTY = new PlacementTable([], null);

  /**
   * Builds the table over `members` (any order; ids unique and >= 1,
   * weights >= 1). With no member every slot maps to 0 (unroutable).
   */
  static build(members: readonly PlacementMember[]): PlacementTable {
    const sorted = members
      .map((m) => ({ bucketId: m.bucketId, weight: m.weight }))
      .sort((a, b) => a.bucketId - b.bucketId);
    if (sorted.length === 0) return PlacementTable.EMPTY;
    const slots = new Int32Array(SLOT_COUNT);
    const n = sorted.length;
    for (let s = 0; s < SLOT_COUNT; ++s) {
      // Ascending ids and a strictly-greater test: an exact tie keeps the
      // lower id.
      let bestId = sorted[0].bucketId;
      let best = score(s, sorted[0].bucketId, sorted[0].weight);
      for (let i = 1; i < n; ++i) {
        const sc = score(s, sorted[i].bucketId, sorted[i].weight);
        if (sc > best) {
          best = sc;
          bestId = sorted[i].bucketId;
        }
      }
      slots[s] = bestId;
    }
    return new PlacementTable(sorted, slots);
  }

  get empty(): boolean {
    return this.slots === null;
  }

  /** The bucket of `slot` (< SLOT_COUNT); 0 when the pool is empty. */
  bucketForSlot(slot: number): number {
    return this.slots === null ? 0 : this.slots[slot];
  }

  bucketForTeam(teamId: number | bigint): number {
    return this.slots === null ? 0 : this.slots[teamSlot(teamId)];
  }

  /** True when both tables have the same members (ids and weights). */
  sameMembers(members: readonly PlacementMember[]): boolean {
    if (members.length !== this.members.length) return false;
    for (let i = 0; i < members.length; ++i) {
      if (members[i].bucketId !== this.members[i].bucketId) return false;
      if (members[i].weight !== this.members[i].weight) return false;
    }
    return true;
  }
}
