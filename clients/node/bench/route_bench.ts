// route_bench (Node): Client.route() against a plain Map.get() that holds
// every queried team's final route, with the same random query sequence,
// interleaved in one process (the Node counterpart of bench/route_bench.cc;
// same mapping shape: half the teams with an override, two thirds of those
// pins and one third pool assignments, half placed by default; 16 + 8 + 4
// buckets in three pools). Target: route() within 2x of Map.get at 100k
// teams. Also: what BigInt would cost on the hot path (the slot hash on
// BigInt against the 32-bit halves route() uses), and what applying a
// snapshot and a one-team delta costs.
//
//   node dist/bench/route_bench.js            # 1k, 100k and 1M teams
//   node dist/bench/route_bench.js --quick    # 1k and 100k, short; CI runs it
//
// Sanity checks (exit 1): route() answers what the map holds, no time is
// zero, every publication advances the version.
import { performance } from 'perf_hooks';
import { Client } from '../src/client';
import { silentLogger } from '../src/log';
import { Route } from '../src/model';
import { mix64Big, teamSlot } from '../src/placement';
import { messageType } from '../src/proto';
import type { MappingDeltaMsg, MappingSnapshotMsg } from '../src/proto';

const quick = process.argv.includes('--quick');
let failures = 0;

function expect(ok: boolean, what: string): void {
  if (!ok) {
    console.error(`route_bench: sanity check failed: ${what}`);
    ++failures;
  }
}

// xorshift64*-like deterministic generator on doubles (no BigInt).
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

function makeSnapshot(n: number, seed: number): { snapshot: MappingSnapshotMsg; teams: number[] } {
  const rand = rng(seed);
  const buckets: object[] = [];
  let id = 1;
  const add = (pool: string, weight: number) => {
    buckets.push({ id, name: `b${id}`, state: 1, weight, pool, topics: { ingestion: `events_plugin_ingestion_${id}` } });
    ++id;
  };
  for (let i = 0; i < 16; ++i) add('default', 100);
  for (let i = 0; i < 8; ++i) add('paid', 50 + 10 * i);
  for (let i = 0; i < 4; ++i) add('free', 100);
  const set = new Set<number>();
  while (set.size < n) set.add(1 + Math.floor(rand() * n * 20));
  const teams = [...set];
  for (let i = teams.length - 1; i > 0; --i) {
    const j = Math.floor(rand() * (i + 1));
    [teams[i], teams[j]] = [teams[j], teams[i]];
  }
  const pools = ['paid', 'free'];
  const rows: Array<[number, number]> = [];
  for (let i = 0; i < n / 2; ++i) {
    rows.push([teams[i], i % 3 === 2 ? (i % 2 ? -1 : -2) : 1 + Math.floor(rand() * (id - 1))]);
  }
  rows.sort((a, b) => a[0] - b[0]);
  const snapshot = messageType('MappingSnapshot').fromObject({
    version: 1,
    cluster_id: 'bench',
    buckets,
    pools,
    assignments: { team_ids: rows.map((r) => r[0]), targets: rows.map((r) => r[1]) },
  }) as unknown as MappingSnapshotMsg;
  return { snapshot, teams };
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s[s.length >> 1];
}

// One timed pass; returns ns/op and a checksum that keeps the work alive.
function timeRoute(client: Client, queries: Float64Array): [number, number] {
  let sum = 0;
  const t0 = performance.now();
  for (let i = 0; i < queries.length; ++i) sum += client.route(queries[i]).bucketId;
  return [((performance.now() - t0) * 1e6) / queries.length, sum];
}

function timeMap(map: Map<number, Route>, queries: Float64Array): [number, number] {
  let sum = 0;
  const t0 = performance.now();
  for (let i = 0; i < queries.length; ++i) sum += map.get(queries[i])!.bucketId;
  return [((performance.now() - t0) * 1e6) / queries.length, sum];
}

function timeSlots(queries: Float64Array, big: boolean): number {
  let sum = 0;
  const t0 = performance.now();
  if (big) for (let i = 0; i < queries.length; ++i) sum += Number(mix64Big(BigInt(queries[i])) >> 48n);
  else for (let i = 0; i < queries.length; ++i) sum += teamSlot(queries[i]);
  const ns = ((performance.now() - t0) * 1e6) / queries.length;
  expect(sum > 0, 'slot checksum');
  return ns;
}

function compare(n: number, queryCount: number, runs: number): void {
  const { snapshot, teams } = makeSnapshot(n, 1000 + n);
  const client = new Client({ clientId: 'bench', logger: silentLogger });
  const t0 = performance.now();
  client.applySnapshot(snapshot);
  const applyMs = performance.now() - t0;
  const map = new Map<number, Route>();
  for (const t of teams) map.set(t, client.route(t));
  const rand = rng(7 + n);
  const queries = new Float64Array(queryCount);
  for (let i = 0; i < queryCount; ++i) queries[i] = teams[Math.floor(rand() * teams.length)];
  let mismatches = 0;
  for (let i = 0; i < Math.min(queryCount, 100000); ++i) if (client.route(queries[i]) !== map.get(queries[i])) ++mismatches;
  expect(mismatches === 0, `${n} teams: route() differs from the map for ${mismatches} queries`);

  // Warm both up, then interleave.
  timeRoute(client, queries);
  timeMap(map, queries);
  const r: number[] = [];
  const m: number[] = [];
  for (let i = 0; i < runs; ++i) {
    const [rn, rs] = timeRoute(client, queries);
    const [mn, ms] = timeMap(map, queries);
    expect(rs === ms, `${n} teams: checksums differ`);
    r.push(rn);
    m.push(mn);
  }
  const rm = median(r);
  const mm = median(m);
  expect(rm > 0 && mm > 0, `${n} teams: a time is zero`);
  const ratios = r.map((x, i) => x / m[i]);
  timeSlots(queries, false); // warm-up
  timeSlots(queries, true);
  const slotHalves = median([0, 1, 2].map(() => timeSlots(queries, false)));
  const slotBig = median([0, 1, 2].map(() => timeSlots(queries, true)));

  // One-team deltas and their publication (median of the last 20 of 40:
  // the first ones run before V8 has optimized the code).
  const deltaType = messageType('MappingDelta');
  const deltaTimes: number[] = [];
  for (let i = 0; i < 40; ++i) {
    const version = client.version;
    const d = deltaType.fromObject({
      from_version: version,
      to_version: version + 1,
      set: { team_ids: [teams[i]], targets: [1 + (i % 16)] },
    }) as unknown as MappingDeltaMsg;
    const t1 = performance.now();
    client.applyDeltas([d]);
    if (i >= 20) deltaTimes.push(performance.now() - t1);
    expect(client.version === version + 1, 'a delta advanced the version');
  }
  const deltaMs = median(deltaTimes);

  console.log(
    `${String(n).padStart(7)} teams (${n / 2} overrides): route() ${rm.toFixed(1)} ns/op, Map.get ${mm.toFixed(1)} ns/op, ` +
      `ratio ${(rm / mm).toFixed(2)}x (runs ${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}x); ` +
      `slot hash on 32-bit halves ${slotHalves.toFixed(1)} ns, on BigInt ${slotBig.toFixed(1)} ns; ` +
      `applySnapshot ${applyMs.toFixed(1)} ms, one-team delta ${deltaMs.toFixed(2)} ms`,
  );
}

console.log(`route_bench (node ${process.version}), ${quick ? 'quick' : 'full'}: median of ${quick ? 3 : 7} runs`);
compare(1000, quick ? 200000 : 5000000, quick ? 3 : 7);
compare(100000, quick ? 1000000 : 5000000, quick ? 3 : 7);
if (!quick) compare(1000000, 5000000, 7);
process.exit(failures > 0 ? 1 : 0);
