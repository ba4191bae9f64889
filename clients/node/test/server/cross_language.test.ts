// The Node and C++ libraries side by side (tests/node/cache_tool.cc is the
// C++ side): a cache file written by either is read by the other with the
// same routes, handoffs, version and confirmation time; and placement
// tables agree on all 65,536 slots for pools beyond the committed vector.
import { after, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as child_process from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { Client } from '../../src/client';
import { silentLogger } from '../../src/log';
import { BucketState } from '../../src/model';
import { PlacementTable } from '../../src/placement';
import { ClientRole } from '../../src/proto';
import { WatchConnection } from '../../src/watch';
import { killChildren, Admin, ServerProcess, env, tempDir, waitFor } from '../support/stack';

const e = env();
after(killChildren);

function tool(args: string[]): string {
  return child_process.execFileSync(e.cacheTool, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
}

interface Dumped {
  version: number;
  cluster: string;
  confirmedMs: number;
  routes: Map<number, { bucket: number; status: number; source: number; pool: string; handoff: boolean; ids: string }>;
}

function dump(file: string, teams: number[]): Dumped {
  // The C++ library's own log lines (spdlog) share stdout.
  const lines = tool(['dump', file, ...teams.map(String)])
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('version ') || l.startsWith('route '));
  const head = /^version (\d+) cluster (\S+) confirmed_ms (\d+)$/.exec(lines[0]);
  assert.ok(head, lines[0]);
  const routes: Dumped['routes'] = new Map();
  for (const line of lines.slice(1)) {
    const f = line.split(' ');
    assert.equal(f[0], 'route', line);
    routes.set(Number(f[1]), {
      bucket: Number(f[2]),
      status: Number(f[3]),
      source: Number(f[4]),
      pool: f[5] === '-' ? '' : f[5],
      handoff: f[6] === '1',
      ids: f[7],
    });
  }
  return { version: Number(head[1]), cluster: head[2], confirmedMs: Number(head[3]), routes };
}

// Node's answers for `teams` equal the C++ library's in `d`.
function sameRoutes(client: Client, d: Dumped, teams: number[]): void {
  assert.equal(client.version, d.version);
  assert.equal(client.clusterId, d.cluster);
  for (const t of teams) {
    const want = d.routes.get(t)!;
    const got = client.route(t);
    assert.deepEqual(
      { bucket: got.bucketId, status: got.status, source: got.source, pool: got.pool, handoff: got.handoff },
      { bucket: want.bucket, status: want.status, source: want.source, pool: want.pool, handoff: want.handoff },
      `team ${t}`,
    );
    const ids = client.handoffState(t).handoffs.map((h) => h.handoffId).join(',');
    assert.equal(ids === '' ? '-' : ids, want.ids, `handoffs of team ${t}`);
  }
}

test('placement: every slot of several pools equals the C++ library', () => {
  const pools: Array<Array<[number, number]>> = [
    [[1, 100]],
    [[1, 100], [2, 100], [3, 100], [4, 100], [5, 100], [6, 100], [7, 100], [8, 100], [9, 100], [10, 100], [11, 100]],
    [[3, 1], [17, 1000], [40, 999], [41, 2], [100000, 500]],
    [[2147483647, 7], [1, 7], [65536, 7]],
  ];
  for (const members of pools) {
    const want = tool(['placement', ...members.map(([b, w]) => `${b}:${w}`)]).trim().split('\n').map(Number);
    assert.equal(want.length, 65536);
    const table = PlacementTable.build(members.map(([bucketId, weight]) => ({ bucketId, weight })));
    for (let s = 0; s < 65536; ++s) assert.equal(table.bucketForSlot(s), want[s], `slot ${s} of ${JSON.stringify(members)}`);
  }
});

test('cache file: written by C++, read by Node; written by Node, read by C++', async () => {
  const server = await ServerProcess.start(e, ['--watch_heartbeat=1s', '--handoff_grace=10m', '--move_cooldown=0s']);
  const admin = new Admin(server.address);
  const dir = tempDir('bucketmap-node-cross-');
  // A leased producer that never reports drained versions keeps the
  // handoffs below open (SWITCHING) for the whole test.
  const producer = new Client({ addresses: [server.address], clientId: 'node-cross-producer', role: ClientRole.PRODUCER, logger: silentLogger });
  const producerConn = new WatchConnection(producer, { initialBackoffMs: 50 });
  try {
    const b1 = await admin.createBucket('x1');
    const b2 = await admin.createBucket('x2', { weight: 250 });
    const b3 = await admin.createBucket('x3', { pool: 'paid' });
    await admin.createBucket('x4', { pool: 'paid', weight: 50 });
    await admin.assign(10, b1);
    await admin.assign(11, 'paid');
    await producerConn.start();
    await waitFor('the producer lease', async () =>
      (await admin.listClients()).some((c) => c.client_id === 'node-cross-producer'),
    );
    // Handoffs: a pin move, and a default-pool change (pool_before).
    await admin.assign(10, b2);
    await admin.setState(b1, BucketState.DRAINING);
    await waitFor('open handoffs', async () => (await admin.listHandoffs(false)).length >= 2);
    const teams = [...Array.from({ length: 3000 }, (_, i) => i + 1), 2 ** 40 + 1];

    // C++ writes, Node reads.
    const cppFile = path.join(dir, 'cpp.cache');
    tool(['fetch', server.address, cppFile]);
    const fromCpp = new Client({ clientId: 'reader', logger: silentLogger });
    assert.equal(await fromCpp.loadCache(cppFile), true);
    const d1 = dump(cppFile, teams);
    sameRoutes(fromCpp, d1, teams);
    assert.ok(fromCpp.route(10).handoff);
    assert.ok(teams.some((t) => t > 11 && fromCpp.route(t).handoff), 'default-placed teams in the pool_before handoff');
    assert.ok(Math.abs(Date.now() - fromCpp.staleness() - d1.confirmedMs) < 2000);

    // Node writes (from its own watch), C++ reads.
    const nodeFile = path.join(dir, 'node.cache');
    const watcher = new Client({ addresses: [server.address], clientId: 'node-cross', role: ClientRole.OBSERVER, logger: silentLogger, cachePath: nodeFile });
    const conn = new WatchConnection(watcher, { initialBackoffMs: 50 });
    await conn.start();
    await waitFor('sync', () => conn.synced);
    await waitFor('the cache file', () => fs.existsSync(nodeFile));
    const d2 = dump(nodeFile, teams);
    sameRoutes(watcher, d2, teams);
    assert.equal(d2.version, d1.version);
    await conn.stop();
  } finally {
    await producerConn.stop();
    admin.close();
    await server.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
