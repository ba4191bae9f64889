// The Client over hand-made snapshots and deltas: routes against the plain
// rules (Mapping.routeOf), the route index across deltas, errors naming
// the field, handoffs, listeners and the cache file.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Client } from '../../src/client';
import { BucketmapError } from '../../src/errors';
import { HandoffEnd } from '../../src/handoffs';
import { Mapping } from '../../src/mapping';
import { BucketState, RouteSource, RouteStatus, TeamId } from '../../src/model';
import { silentLogger } from '../../src/log';
import { decodeCacheFile, encodeCacheFile } from '../../src/cache_file';
import { HandoffPhase } from '../../src/proto';
import { delta, handoff, snapshot } from '../support/messages';

const BIG = 2n ** 60n + 7n;

function newClient(): Client {
  return new Client({ clientId: 'unit', logger: silentLogger });
}

// Every team of `teams` routes as the plain rules say.
function checkAgainstRules(client: Client, teams: Iterable<TeamId>): void {
  const view = client.current()!;
  for (const team of teams) {
    const want = view.mapping.routeOf(team);
    const got = client.route(team);
    assert.equal(got.bucketId, want.bucketId, `team ${team}`);
    assert.equal(got.version, view.version);
    assert.equal(got.status, want.bucketId > 0 ? RouteStatus.OK : RouteStatus.NO_PLACEABLE_BUCKET, `team ${team}`);
    if (want.pinned) assert.equal(got.source, RouteSource.PIN);
    else assert.equal(got.pool, want.pool, `team ${team}`);
  }
}

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}

const base = () =>
  snapshot({
    version: 5,
    buckets: [
      { id: 1 },
      { id: 2, weight: 300 },
      { id: 3, pool: 'paid' },
      { id: 4, pool: 'paid', state: BucketState.PAUSED },
      { id: 5, pool: 'gone', state: BucketState.DRAINING },
    ],
    pools: ['paid', 'gone'],
    teams: [7, 9, 11, 12, BIG],
    targets: [3, -1, -2, 2, 2],
  });

test('no mapping, invalid teams', () => {
  const c = newClient();
  assert.equal(c.route(1).status, RouteStatus.NO_MAPPING);
  assert.equal(c.version, 0);
  assert.equal(c.staleness(), Infinity);
  c.applySnapshot(base());
  for (const bad of [0, -3, 1.5, 2 ** 53, NaN, 0n, -1n, 2n ** 63n]) {
    assert.equal(c.route(bad as TeamId).status, RouteStatus.INVALID_TEAM, String(bad));
  }
});

test('snapshot: pins, pools, default placement, bigint teams', () => {
  const c = newClient();
  c.applySnapshot(base());
  assert.equal(c.version, 5);
  assert.equal(c.clusterId, 'cluster-a');
  checkAgainstRules(c, [...range(1, 3000), BIG, 2n ** 62n]);
  assert.equal(c.route(7).bucketId, 3);
  assert.equal(c.route(7).source, RouteSource.PIN);
  assert.equal(c.route(9).source, RouteSource.POOL);
  assert.equal(c.route(9).pool, 'paid');
  assert.equal(c.route(11).status, RouteStatus.NO_PLACEABLE_BUCKET);
  assert.equal(c.route(BIG).bucketId, 2);
  assert.equal(c.route(12).bucketId, 2);
  // Same object for the same route: no allocation per call.
  assert.equal(c.route(12), c.route(BIG));
  assert.equal(c.bucketState(4), BucketState.PAUSED);
  assert.equal(c.bucketState(99), undefined);
  const teams = c.teamsInBucket(2);
  assert.deepEqual(teams, [12, BIG]);
  assert.ok(c.owns(3, 7));
  // A default team is owned by its bucket.
  const r = c.route(100);
  assert.ok(c.owns(r.bucketId, 100));
  assert.ok(!c.owns(r.bucketId === 1 ? 2 : 1, 100));
  assert.equal(c.current()!.topic(3, 'ingestion'), 'events_3');
  assert.equal(c.current()!.topic(3, 'nope'), undefined);
  assert.ok(c.staleness() < 1000);
});

test('deltas: set, unset, bucket state, new pool; all or nothing; errors name the field', () => {
  const c = newClient();
  c.applySnapshot(base());
  const versions: number[] = [];
  c.onChange((e) => versions.push(e.newVersion));
  c.applyDeltas([
    delta({ from: 5, set: [3, 9, 2n ** 61n], targets: [1, 4, -1], pools: ['paid'], unset: [7, 12] }),
    delta({ from: 6, buckets: [{ id: 1, state: BucketState.PAUSED }] }),
    delta({ from: 7, buckets: [{ id: 6, pool: 'fresh' }], set: [20], targets: [-1], pools: ['fresh'] }),
  ]);
  assert.equal(c.version, 8);
  assert.deepEqual(versions, [8]);
  assert.equal(c.route(3).bucketId, 1);
  assert.ok(c.route(3).paused);
  assert.equal(c.route(7).source, RouteSource.DEFAULT);
  assert.equal(c.route(20).bucketId, 6);
  assert.equal(c.route(20).pool, 'fresh');
  checkAgainstRules(c, [...range(1, 2000), BIG, 2n ** 61n]);

  // A gap: FAILED_PRECONDITION, nothing changes.
  assert.throws(() => c.applyDeltas([delta({ from: 9 })]), (e: BucketmapError) => e.code === 'FAILED_PRECONDITION');
  // The second delta is bad: nothing of the first is applied either.
  assert.throws(
    () => c.applyDeltas([delta({ from: 8, set: [30], targets: [1] }), delta({ from: 9, set: [31], targets: [77] })]),
    (e: BucketmapError) => e.code === 'INVALID_ARGUMENT' && /deltas\[1\].*change\.set\[0\]\.bucket_id/.test(e.message),
  );
  assert.throws(
    () => c.applyDeltas([delta({ from: 8, to: 10 })]),
    (e: BucketmapError) => /deltas\[0\]\.to_version/.test(e.message),
  );
  assert.throws(
    () => c.applyDeltas([delta({ from: 8, set: [5, 4], targets: [1, 1] })]),
    (e: BucketmapError) => /ascending/.test(e.message),
  );
  assert.equal(c.version, 8);
  assert.equal(c.route(30).source, RouteSource.DEFAULT);
});

test('snapshot errors name the field; an older snapshot is refused; another cluster resets', () => {
  const c = newClient();
  const bad = [
    [snapshot({ version: 1, buckets: [{ id: 0 }] }), /snapshot\.buckets\[id=0\]\.id/],
    [snapshot({ version: 1, buckets: [{ id: 1 }, { id: 2, name: 'b1' }] }), /duplicate bucket name/],
    [snapshot({ version: 1, buckets: [{ id: 1 }], teams: [3], targets: [2] }), /assignments\[0\]\.bucket_id/],
    [snapshot({ version: 1, buckets: [{ id: 1 }], teams: [3], targets: [-2] }), /targets\[0\]/],
    [snapshot({ version: 1, buckets: [{ id: 1 }], teams: [4, 3], targets: [1, 1] }), /ascending/],
    [snapshot({ version: 1, clusterId: '', buckets: [] }), /cluster_id/],
    [snapshot({ version: 1, buckets: [{ id: 1 }], handoffs: [handoff({ id: 1, openedVersion: 1, source: 1, teams: [3] })] }), /snapshot\.handoffs\[0\]\.to_bucket_ids/],
  ] as const;
  for (const [msg, re] of bad) {
    assert.throws(() => c.applySnapshot(msg), (e: BucketmapError) => e.code === 'INVALID_ARGUMENT' && re.test(e.message));
  }
  assert.equal(c.version, 0);
  c.applySnapshot(base());
  assert.throws(() => c.applySnapshot(snapshot({ version: 4, buckets: [{ id: 1 }] })), (e: BucketmapError) => e.code === 'FAILED_PRECONDITION');
  let reset = false;
  c.onChange((e) => (reset = e.reset));
  c.applySnapshot(snapshot({ version: 2, clusterId: 'cluster-b', buckets: [{ id: 9 }] }));
  assert.ok(reset);
  assert.equal(c.version, 2);
  assert.equal(c.route(7).bucketId, 9);
});

// As the C++ client (client_delta_fuzzer found it there): ended handoffs
// are checked too, and no handoff id appears twice in one list.
test('malformed ended, unsorted or repeated handoffs are refused, naming the field', () => {
  const c = newClient();
  c.applySnapshot(base());
  const bad = [
    [[handoff({ id: 3, openedVersion: 1, source: 1, to: [2], state: HandoffPhase.COMPLETED })], /deltas\[0\]\.handoffs\[0\]\.to_bucket_ids/],
    [[handoff({ id: 4, openedVersion: 1, source: 1, teams: [9, 7], to: [2, 2] })], /deltas\[0\]\.handoffs\[0\]\.team_ids: not in ascending order/],
    [
      [
        handoff({ id: 5, openedVersion: 1, source: 1, teams: [7], to: [2] }),
        handoff({ id: 5, openedVersion: 1, source: 1, teams: [7], to: [2], state: HandoffPhase.CANCELLED }),
      ],
      /deltas\[0\]\.handoffs\[1\]\.id: handoff 5 appears twice/,
    ],
  ] as const;
  for (const [handoffs, re] of bad) {
    assert.throws(
      () => c.applyDeltas([delta({ from: 5, handoffs: [...handoffs] })]),
      (e: BucketmapError) => e.code === 'INVALID_ARGUMENT' && re.test(e.message),
    );
  }
  assert.equal(c.version, 5);
  assert.equal(c.handoffState(7).open, false);
});

test('route index across many random deltas matches the rules', () => {
  const c = newClient();
  c.applySnapshot(snapshot({ version: 1, buckets: [{ id: 1 }, { id: 2 }, { id: 3, pool: 'p' }], pools: ['p'] }));
  let seed = 7;
  const rand = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const present = new Map<number, number>();
  for (let v = 1; v < 400; ++v) {
    const set = new Map<number, number>();
    const unset = new Set<number>();
    for (let k = rand(40); k > 0; --k) {
      const team = 1 + rand(3000);
      if (rand(3) === 0 && present.has(team)) unset.add(team);
      else set.set(team, [1, 2, 3, -1][rand(4)]);
    }
    for (const t of unset) set.delete(t);
    const setTeams = [...set.keys()].sort((a, b) => a - b);
    const unsetTeams = [...unset].sort((a, b) => a - b);
    c.applyDeltas([delta({ from: v, set: setTeams, targets: setTeams.map((t) => set.get(t)!), pools: ['p'], unset: unsetTeams })]);
    for (const t of setTeams) present.set(t, set.get(t)!);
    for (const t of unsetTeams) present.delete(t);
  }
  assert.equal(c.current()!.mapping.assignmentCount, present.size);
  checkAgainstRules(c, range(1, 3100));
  // The same mapping built from scratch routes the same.
  const fresh = newClient();
  fresh.applySnapshot(snapshotOf(c));
  for (const t of range(1, 3100)) assert.equal(fresh.route(t).bucketId, c.route(t).bucketId);
});

// The client's view as a wire snapshot, through the cache file's encoding.
function snapshotOf(c: Client) {
  return decodeCacheFile(encodeCacheFile(c.current()!.toSnapshotObject(), Date.now())).snapshot;
}

test('handoffs: listed teams, pool_before, state, completion callbacks', () => {
  const c = newClient();
  // Team 7 pinned 3 -> 1 at version 6; the default pool gained bucket 2 at
  // version 6, so default teams placed on 1 before and on 2 now moved.
  c.applySnapshot(
    snapshot({
      version: 6,
      buckets: [{ id: 1 }, { id: 2 }, { id: 3 }],
      teams: [7],
      targets: [1],
      handoffs: [
        handoff({ id: 4, openedVersion: 6, source: 3, teams: [7], to: [1] }),
        handoff({ id: 5, openedVersion: 6, source: 1, sourcePool: 'default', poolBefore: [[1, 100], [3, 100]], ordered: false }),
      ],
    }),
  );
  const s7 = c.handoffState(7);
  assert.ok(s7.open);
  assert.equal(s7.handoffs.length, 1);
  assert.deepEqual({ ...s7.handoffs[0] }, { handoffId: 4, phase: HandoffPhase.SWITCHING, openedVersion: 6, sourceBucketId: 3, targetBucketId: 1, ordered: true });
  assert.ok(c.route(7).handoff);
  // Default teams: moving iff placement over {1, 3} gave 1 and now it is not 1.
  const before = Mapping.fromSnapshot(snapshot({ version: 1, buckets: [{ id: 1 }, { id: 3 }] }));
  let moving = 0;
  for (const t of range(8, 3000)) {
    const was = before.poolTable('default').bucketForTeam(t);
    const now = c.route(t).bucketId;
    const expect = was === 1 && now !== 1;
    assert.equal(c.route(t).handoff, expect, `team ${t}`);
    assert.equal(c.handoffState(t).open, expect, `team ${t}`);
    if (expect) {
      ++moving;
      assert.equal(c.handoffState(t).handoffs[0].targetBucketId, now);
      assert.equal(c.handoffState(t).handoffs[0].ordered, false);
    }
  }
  assert.ok(moving > 100, `${moving}`);

  const ends: HandoffEnd[] = [];
  assert.equal(c.onHandoffDone(1000000 + 1, () => undefined) === 0, !c.handoffState(1000001).open);
  assert.ok(c.onHandoffDone(7, (e) => ends.push(e)) > 0);
  // Phase change: still open.
  c.applyDeltas([delta({ from: 6, handoffs: [handoff({ id: 4, openedVersion: 6, source: 3, teams: [7], to: [1], state: HandoffPhase.DRAINING })] })]);
  assert.equal(c.handoffState(7).handoffs[0].phase, HandoffPhase.DRAINING);
  assert.equal(ends.length, 0);
  c.applyDeltas([delta({ from: 7, handoffs: [handoff({ id: 4, openedVersion: 6, source: 3, teams: [7], to: [1], state: HandoffPhase.FORCED, endReason: 'max_hold: x' })] })]);
  assert.equal(ends.length, 1);
  assert.equal(ends[0].endState, HandoffPhase.FORCED);
  assert.equal(ends[0].endReason, 'max_hold: x');
  assert.equal(ends[0].handoffId, 4);
  assert.equal(ends[0].version, 8);
  assert.ok(!c.route(7).handoff);
  assert.ok(!c.handoffState(7).open);
  // A handoff that vanishes in a snapshot ends UNSPECIFIED.
  const t = range(8, 3000).find((x) => c.route(x).handoff)!;
  const ends2: HandoffEnd[] = [];
  c.onHandoffDone(t, (e) => ends2.push(e));
  c.applySnapshot(snapshot({ version: 9, buckets: [{ id: 1 }, { id: 2 }, { id: 3 }], teams: [7], targets: [1] }));
  assert.equal(ends2.length, 1);
  assert.equal(ends2[0].endState, HandoffPhase.UNSPECIFIED);
  assert.equal(ends2[0].handoffId, 5);
});

test('unpinned listed team keeps the handoff bit on its default route', () => {
  const c = newClient();
  c.applySnapshot(snapshot({ version: 3, buckets: [{ id: 1 }, { id: 2 }], teams: [5], targets: [2] }));
  const to = c.current()!.mapping.poolTable('default').bucketForTeam(5);
  c.applyDeltas([delta({ from: 3, unset: [5], handoffs: [handoff({ id: 1, openedVersion: 4, source: 2, teams: [5], to: [to] })] })]);
  assert.equal(c.route(5).source, RouteSource.DEFAULT);
  assert.equal(c.route(5).bucketId, to);
  assert.ok(c.route(5).handoff);
  assert.equal(c.handoffState(5).handoffs[0].targetBucketId, to);
  c.applyDeltas([delta({ from: 4, handoffs: [handoff({ id: 1, openedVersion: 4, source: 2, teams: [5], to: [to], state: HandoffPhase.COMPLETED })] })]);
  assert.ok(!c.route(5).handoff);
});

test('waitForVersion, confirmCurrent and staleness', async () => {
  let now = 1_000_000;
  const c = new Client({ clientId: 'unit', logger: silentLogger, clock: () => now });
  const waiting = c.waitForVersion(6, 5000);
  assert.equal(await c.waitForVersion(6, 10), false);
  c.applySnapshot(base());
  c.applyDeltas([delta({ from: 5 })]);
  assert.equal(await waiting, true);
  now += 5000;
  assert.equal(c.staleness(), 5000);
  c.confirmCurrent(7); // the server is ahead: not current
  assert.equal(c.staleness(), 5000);
  c.confirmCurrent(6);
  assert.equal(c.staleness(), 0);
});

test('cache file: round trip, atomic write, corrupt and foreign files', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bucketmap-node-'));
  const file = path.join(dir, 'mapping.cache');
  let now = 1_700_000_000_000;
  const c = new Client({ clientId: 'unit', logger: silentLogger, clock: () => now, cachePath: file });
  await assert.rejects(c.writeCache(), (e: BucketmapError) => e.code === 'FAILED_PRECONDITION');
  c.applySnapshot(
    snapshot({
      version: 5,
      buckets: [{ id: 1 }, { id: 2 }, { id: 3, pool: 'paid' }],
      pools: ['paid'],
      teams: [7, 9, BIG],
      targets: [3, -1, 2],
      handoffs: [handoff({ id: 2, openedVersion: 5, source: 1, teams: [7], to: [3] })],
    }),
  );
  await c.writeCache();
  assert.deepEqual(fs.readdirSync(dir), ['mapping.cache']);
  now += 60_000;
  const d = new Client({ clientId: 'unit2', logger: silentLogger, clock: () => now, cachePath: file });
  assert.equal(await d.loadCache(), true);
  assert.equal(d.version, 5);
  assert.equal(d.staleness(), 60_000);
  for (const t of [...range(1, 500), BIG]) assert.deepEqual(d.route(t), c.route(t));
  assert.ok(d.route(7).handoff);
  assert.equal(d.handoffState(7).handoffs[0].handoffId, 2);
  // Not newer: not loaded, no error.
  assert.equal(await d.loadCache(), false);

  const bytes = fs.readFileSync(file);
  const flipped = Buffer.from(bytes);
  flipped[bytes.length - 3] ^= 1;
  fs.writeFileSync(file, flipped);
  await assert.rejects(newClient().loadCache(file), (e: BucketmapError) => e.code === 'DATA_LOSS' && /checksum/.test(e.message));
  fs.writeFileSync(file, bytes.subarray(0, bytes.length - 1));
  await assert.rejects(newClient().loadCache(file), (e: BucketmapError) => e.code === 'DATA_LOSS' && /truncated/.test(e.message));
  const future = Buffer.from(bytes);
  future.writeUInt32LE(2, 8);
  fs.writeFileSync(file, future);
  await assert.rejects(newClient().loadCache(file), (e: BucketmapError) => e.code === 'FAILED_PRECONDITION');
  fs.writeFileSync(file, 'not a cache file at all, really not');
  await assert.rejects(newClient().loadCache(file), (e: BucketmapError) => e.code === 'DATA_LOSS' && /magic/.test(e.message));
  await assert.rejects(newClient().loadCache(path.join(dir, 'none')), (e: BucketmapError) => e.code === 'NOT_FOUND');
  // Another cluster than the loaded mapping.
  fs.writeFileSync(file, bytes);
  const other = newClient();
  other.applySnapshot(snapshot({ version: 1, clusterId: 'other', buckets: [{ id: 1 }] }));
  await assert.rejects(other.loadCache(file), (e: BucketmapError) => e.code === 'FAILED_PRECONDITION');
  fs.rmSync(dir, { recursive: true });
});
