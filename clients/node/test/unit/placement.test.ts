// The placement test vector (tests/testdata/placement_vector.txt): this
// library must reproduce it bit for bit, as every client must.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import { PlacementTable, mix64, mix64Big, mix64Halves, teamSlot } from '../../src/placement';
import { placementVectorPath } from '../support/paths';

interface Pool {
  name: string;
  members: Array<{ bucketId: number; weight: number }>;
  rows: Array<[number | bigint, number, number]>;
}

function parseVector(): { mix: Array<[bigint, bigint]>; pools: Pool[] } {
  const mix: Array<[bigint, bigint]> = [];
  const pools: Pool[] = [];
  for (const raw of fs.readFileSync(placementVectorPath(), 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const f = line.split(/\s+/);
    if (f[0] === 'mix64') {
      mix.push([BigInt('0x' + f[1]), BigInt('0x' + f[2])]);
    } else if (f[0] === 'pool') {
      pools.push({
        name: f[1],
        members: f.slice(2).map((m) => {
          const [b, w] = m.split(':').map(Number);
          return { bucketId: b, weight: w };
        }),
        rows: [],
      });
    } else {
      assert.equal(f.length, 3, `bad vector line: ${line}`);
      const id = BigInt(f[0]);
      const team = id <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(id) : id;
      pools[pools.length - 1].rows.push([team, Number(f[1]), Number(f[2])]);
    }
  }
  return { mix, pools };
}

const vector = parseVector();

test('vector: mix64 lines, on BigInt and on 32-bit halves', () => {
  assert.ok(vector.mix.length >= 6);
  const out = new Uint32Array(2);
  for (const [x, want] of vector.mix) {
    assert.equal(mix64Big(x), want, `mix64Big(${x.toString(16)})`);
    mix64Halves(Number(x >> 32n), Number(x & 0xffffffffn), out);
    assert.equal((BigInt(out[0]) << 32n) | BigInt(out[1]), want, `mix64Halves(${x.toString(16)})`);
  }
});

test('vector: every pool, every team (slot and bucket)', () => {
  assert.ok(vector.pools.length >= 7);
  let rows = 0;
  for (const pool of vector.pools) {
    const table = PlacementTable.build(pool.members);
    assert.equal(table.empty, pool.members.length === 0, pool.name);
    for (const [team, slot, bucket] of pool.rows) {
      assert.equal(teamSlot(team), slot, `${pool.name}: slot of team ${team}`);
      assert.equal(teamSlot(BigInt(team)), slot, `${pool.name}: slot of team ${team}n`);
      assert.equal(table.bucketForTeam(team), bucket, `${pool.name}: bucket of team ${team}`);
      ++rows;
    }
  }
  assert.ok(rows >= 300, `only ${rows} rows`);
});

test('mix64 on halves equals the BigInt reference (random and edge values)', () => {
  let seed = 0x12345678n;
  const values: bigint[] = [0n, 1n, (1n << 32n) - 1n, 1n << 32n, (1n << 53n) - 1n, (1n << 64n) - 1n, 1n << 63n];
  for (let i = 0; i < 20000; ++i) {
    seed = mix64Big(seed);
    values.push(seed);
  }
  const out = new Uint32Array(2);
  for (const x of values) {
    mix64Halves(Number(x >> 32n), Number(x & 0xffffffffn), out);
    assert.equal((BigInt(out[0]) << 32n) | BigInt(out[1]), mix64Big(x), x.toString(16));
  }
  // Team ids as numbers (safe integers) and as bigints agree.
  for (const t of [1, 2, 42, 4294967295, 4294967296, 4294967297, 2 ** 40 + 12345, Number.MAX_SAFE_INTEGER]) {
    assert.equal(mix64(t), mix64Big(BigInt(t)), `team ${t}`);
    assert.equal(teamSlot(t), Number(mix64Big(BigInt(t)) >> 48n), `slot of team ${t}`);
  }
});

test('placement: adding a bucket moves teams only into it; weights hold', () => {
  const members = (n: number) => Array.from({ length: n }, (_, i) => ({ bucketId: i + 1, weight: 100 }));
  const eight = PlacementTable.build(members(8));
  const nine = PlacementTable.build(members(9));
  let moved = 0;
  for (let s = 0; s < 65536; ++s) {
    if (eight.bucketForSlot(s) !== nine.bucketForSlot(s)) {
      assert.equal(nine.bucketForSlot(s), 9);
      ++moved;
    }
  }
  assert.ok(Math.abs(moved / 65536 - 1 / 9) < 0.02, `moved ${moved}`);
  const weighted = PlacementTable.build([
    { bucketId: 1, weight: 200 },
    { bucketId: 2, weight: 100 },
  ]);
  let heavy = 0;
  for (let s = 0; s < 65536; ++s) if (weighted.bucketForSlot(s) === 1) ++heavy;
  const ratio = heavy / (65536 - heavy);
  assert.ok(ratio > 1.9 && ratio < 2.1, `ratio ${ratio}`);
});
