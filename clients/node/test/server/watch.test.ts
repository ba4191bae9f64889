// The watch protocol against the real bucketmap-server and PostgreSQL:
// subscribe, snapshot, deltas and ACKs; resume after a server restart; a
// NACK answered by the snapshot; a cluster reset; the cache file at start;
// several addresses; bearer tokens and TLS; load reports reaching GetLoad.
import { after, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as child_process from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { Client, ClientOptions } from '../../src/client';
import { silentLogger } from '../../src/log';
import { BucketState, RouteSource } from '../../src/model';
import { DeliveryTracker } from '../../src/delivery_tracker';
import { LoadReporter } from '../../src/load_report';
import { ClientRole, MappingDeltaMsg, MappingSnapshotMsg } from '../../src/proto';
import { WatchConnection, WatchConnectionOptions } from '../../src/watch';
import { killChildren, Admin, ServerProcess, env, freePort, sleep, tempDir, waitFor } from '../support/stack';

const FAST = ['--watch_heartbeat=1s'];
const e = env();
after(killChildren);

// A client that counts what it applies.
class CountingClient extends Client {
  snapshots = 0;
  deltaPushes = 0;
  failNextDeltas = 0;

  override applySnapshot(s: MappingSnapshotMsg): void {
    super.applySnapshot(s);
    ++this.snapshots;
  }

  override applyDeltas(d: readonly MappingDeltaMsg[]): void {
    if (this.failNextDeltas > 0) {
      --this.failNextDeltas;
      throw new Error('test: refusing this delta push');
    }
    super.applyDeltas(d);
    ++this.deltaPushes;
  }
}

function newClient(addresses: string[], extra: Partial<ClientOptions> = {}): CountingClient {
  return new CountingClient({
    addresses,
    clientId: `node-watch-${crypto.randomBytes(4).toString('hex')}`,
    role: ClientRole.CONSUMER,
    logger: silentLogger,
    ...extra,
  });
}

function watch(client: Client, options: WatchConnectionOptions = {}): WatchConnection {
  return new WatchConnection(client, { initialBackoffMs: 50, maxBackoffMs: 500, ...options });
}

// Every team of 1..n routes as the server's GetTeam says.
async function sameAsServer(admin: Admin, client: Client, teams: number[]): Promise<void> {
  for (const t of teams) {
    const want = await admin.getTeam(t);
    const got = client.route(t);
    assert.equal(got.bucketId, want.bucket_id, `team ${t}`);
    const source = got.source === RouteSource.PIN ? 'pin' : got.source === RouteSource.POOL ? `pool:${got.pool}` : 'default';
    assert.equal(source, want.source, `team ${t}`);
  }
}

test('watch: snapshot, SYNC, deltas, ACKs; ListClients shows the applied version', async () => {
  const server = await ServerProcess.start(e, FAST);
  const admin = new Admin(server.address);
  try {
    const b1 = await admin.createBucket('w1');
    const b2 = await admin.createBucket('w2', { weight: 300 });
    const b3 = await admin.createBucket('w3', { pool: 'paid' });
    await admin.assign(42, b2);
    const client = newClient([server.address]);
    const conn = watch(client);
    await conn.start();
    await waitFor('sync', () => conn.synced);
    assert.equal(client.snapshots, 1);
    const v = await admin.assign(43, 'paid');
    assert.ok(await client.waitForVersion(v, 10000));
    await admin.setState(b1, BucketState.PAUSED);
    const v2 = await admin.assign(44, b3);
    assert.ok(await client.waitForVersion(v2, 10000));
    assert.ok(client.deltaPushes >= 1, 'live versions arrive as deltas');
    assert.equal(client.snapshots, 1);
    assert.equal(client.bucketState(b1), BucketState.PAUSED);
    await sameAsServer(admin, client, [42, 43, 44, ...Array.from({ length: 60 }, (_, i) => 1000 + i)]);
    assert.ok(client.staleness() < 5000);
    await waitFor('ListClients to show the applied version', async () => {
      const c = (await admin.listClients()).find((x) => x.client_id === client.options.clientId);
      return c !== undefined && c.applied_version === v2 && c.role === ClientRole.CONSUMER && c.nacks === 0;
    });
    await conn.stop();
    assert.ok(!conn.synced);
  } finally {
    admin.close();
    await server.kill();
  }
});

test('watch: resume after a server restart (deltas, not a snapshot); the cache file while it is down', async () => {
  const server = await ServerProcess.start(e, FAST);
  const admin = new Admin(server.address);
  const dir = tempDir('bucketmap-node-cache-');
  try {
    const b1 = await admin.createBucket('r1');
    await admin.createBucket('r2');
    const client = newClient([server.address], { cachePath: path.join(dir, 'mapping.cache') });
    const conn = watch(client);
    await conn.start();
    await waitFor('sync', () => conn.synced);
    const v = await admin.assign(7, b1);
    assert.ok(await client.waitForVersion(v, 10000));
    await waitFor('the cache file at the version', () => {
      const c = new Client({ clientId: 'reader', logger: silentLogger });
      try {
        return c.loadCacheBytes(fs.readFileSync(path.join(dir, 'mapping.cache'))) && c.version === v;
      } catch {
        return false;
      }
    });

    await server.kill('SIGKILL');
    await waitFor('the stream to end', () => !conn.synced);
    // A producer restarted during the outage routes from the cache file.
    const restarted = newClient([server.address], { cachePath: path.join(dir, 'mapping.cache') });
    const conn2 = watch(restarted);
    await conn2.start();
    assert.equal(restarted.version, v);
    assert.equal(restarted.route(7).bucketId, b1);
    assert.ok(restarted.staleness() >= 0 && restarted.staleness() < 60000);
    assert.ok(!conn2.synced);

    await server.launch();
    const v2 = await admin.assign(8, b1);
    assert.ok(await client.waitForVersion(v2, 15000), 'the first client resumed');
    assert.ok(await restarted.waitForVersion(v2, 15000), 'the client started from the cache resumed');
    assert.ok(conn.streamsOpened >= 2);
    assert.equal(client.snapshots, 1, 'resumed with deltas, not a snapshot');
    assert.equal(restarted.snapshots, 0, 'resumed from the cache with deltas, not a snapshot');
    await sameAsServer(admin, restarted, [7, 8, 9, 10]);
    await conn.stop();
    await conn2.stop();
  } finally {
    admin.close();
    await server.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('watch: a NACKed push is answered with the snapshot; the server counts the NACK', async () => {
  const server = await ServerProcess.start(e, FAST);
  const admin = new Admin(server.address);
  try {
    const b1 = await admin.createBucket('n1');
    const client = newClient([server.address]);
    const conn = watch(client);
    await conn.start();
    await waitFor('sync', () => conn.synced);
    client.failNextDeltas = 1;
    const v = await admin.assign(5, b1);
    assert.ok(await client.waitForVersion(v, 10000), 'recovered through the snapshot');
    assert.equal(client.snapshots, 2, 'the NACK was answered with a snapshot');
    assert.equal(client.route(5).bucketId, b1);
    await waitFor('ListClients to count the NACK', async () => {
      const c = (await admin.listClients()).find((x) => x.client_id === client.options.clientId);
      return c !== undefined && c.nacks === 1 && /refusing this delta push/.test(String(c.last_nack_error));
    });
    // The stream goes on: the next version arrives as a delta.
    const v2 = await admin.assign(6, b1);
    assert.ok(await client.waitForVersion(v2, 10000));
    assert.equal(conn.streamsOpened, 1);
    await conn.stop();
  } finally {
    admin.close();
    await server.kill();
  }
});

test('watch: a server of another cluster resets the client; several addresses, the dead one skipped', async () => {
  const dead = `127.0.0.1:${await freePort()}`;
  const server = await ServerProcess.start(e, FAST);
  const admin = new Admin(server.address);
  let other: ServerProcess | null = null;
  try {
    await admin.createBucket('c1');
    await admin.createBucket('c2');
    const client = newClient([dead, server.address]);
    const conn = watch(client);
    await conn.start();
    await waitFor('sync', () => conn.synced, 20000);
    assert.equal(conn.address, server.address);
    const before = client.clusterId;
    let reset = false;
    client.onChange((ev) => (reset = reset || ev.reset));
    // The database is replaced: a server on a fresh one, at the same address.
    await server.kill();
    other = await ServerProcess.start(e, FAST, undefined, server.port);
    await waitFor('the reset', () => reset, 20000);
    assert.notEqual(client.clusterId, before);
    assert.equal(client.current()!.buckets.length, 0);
    assert.equal(client.snapshots, 2);
    await conn.stop();
  } finally {
    admin.close();
    await server.kill();
    await other?.kill();
  }
});

test('watch: drained_version is exact: an ACK of nonce 0 after a SYNC with no push, a re-ACK when old events are delivered', async () => {
  const server = await ServerProcess.start(e, FAST);
  const admin = new Admin(server.address);
  const dir = tempDir('bucketmap-node-drained-');
  const cachePath = path.join(dir, 'mapping.cache');
  try {
    const b1 = await admin.createBucket('d1');
    const v1 = await admin.assign(3, b1);
    // Another client leaves a cache file at v1.
    const writer = newClient([server.address], { cachePath });
    const w = watch(writer);
    await w.start();
    assert.ok(await writer.waitForVersion(v1, 10000));
    await waitFor('the cache file', () => fs.existsSync(cachePath));
    await w.stop();

    // A producer starts from that file: it subscribes at the server's
    // version, gets SYNC and no push, and reports drained_version anyway.
    const producer = newClient([server.address], { cachePath, role: ClientRole.PRODUCER });
    const tracker = new DeliveryTracker(producer);
    const conn = watch(producer, { deliveryTracker: tracker });
    await conn.start();
    const record = async () => (await admin.listClients()).find((c) => c.client_id === producer.options.clientId);
    await waitFor('drained_version v1 from the ACK of nonce 0', async () => {
      const c = await record();
      return c !== undefined && c.drained_version === v1 && c.applied_version === v1;
    });
    assert.equal(producer.snapshots + producer.deltaPushes, 0, 'no push came');

    // An event routed at v1 is still in flight when v2 arrives: the ACK of
    // v2 says drained v1; its delivery report re-ACKs drained v2.
    const { ticket } = tracker.route(3);
    const v2 = await admin.assign(4, b1);
    assert.ok(await producer.waitForVersion(v2, 10000));
    await waitFor('applied v2, drained v1', async () => {
      const c = await record();
      return c !== undefined && c.applied_version === v2 && c.drained_version === v1;
    });
    await sleep(1500);
    assert.equal((await record())!.drained_version, v1, 'not drained while the event is in flight');
    tracker.done(ticket);
    await waitFor('drained v2 from the re-ACK', async () => (await record())?.drained_version === v2);
    assert.equal(conn.streamsOpened, 1, 'the server accepted every ACK');
    await conn.stop();
  } finally {
    admin.close();
    await server.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

function openssl(dir: string, args: string): void {
  child_process.execSync(`openssl ${args}`, { cwd: dir, stdio: 'ignore' });
}

test('watch: bearer token and TLS', async () => {
  const dir = tempDir('bucketmap-node-tls-');
  const key = '-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes';
  openssl(dir, `req -x509 ${key} -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca`);
  fs.writeFileSync(path.join(dir, 'server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  openssl(dir, `req ${key} -keyout server.key -out server.csr -subj /CN=localhost`);
  openssl(dir, 'x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out server.pem -extfile server.ext');
  const token = crypto.randomBytes(16).toString('hex');
  const sha = crypto.createHash('sha256').update(token).digest('hex');
  fs.writeFileSync(path.join(dir, 'tokens'), `node-reader reader ${sha}\n`);
  const server = await ServerProcess.start(
    e,
    [
      ...FAST,
      `--auth_tokens_file=${path.join(dir, 'tokens')}`,
      `--tls_cert=${path.join(dir, 'server.pem')}`,
      `--tls_key=${path.join(dir, 'server.key')}`,
    ],
    undefined,
    undefined,
    { caFile: path.join(dir, 'ca.pem'), token },
  );
  const tls = { enabled: true, rootCaFile: path.join(dir, 'ca.pem') };
  try {
    // No token: refused, retried, never synced.
    const anonymous = newClient([server.address]);
    const a = watch(anonymous, { tls });
    await a.start();
    await sleep(1500);
    assert.ok(!a.synced);
    assert.ok(a.streamsOpened >= 2, 'a refused stream is retried');
    assert.equal(anonymous.version, 0);
    await a.stop();
    // No TLS against a TLS port: never synced.
    const plain = newClient([server.address], { bearerToken: token });
    const p = watch(plain);
    await p.start();
    await sleep(1000);
    assert.ok(!p.synced);
    await p.stop();
    // Token and TLS: synced.
    const client = newClient([server.address], { bearerToken: token });
    const conn = watch(client, { tls });
    await conn.start();
    await waitFor('sync over TLS with the token', () => conn.synced, 20000);
    assert.ok(client.version >= 0);
    await conn.stop();
  } finally {
    await server.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('load: a producer\'s LoadReporter reaches the server, and GetLoad reports its teams', async () => {
  const server = await ServerProcess.start(e, [...FAST, '--load_window=1s']);
  const admin = new Admin(server.address);
  const reporter = new LoadReporter({ windowMs: 1000 });
  const client = newClient([server.address], { role: ClientRole.PRODUCER });
  const conn = watch(client, { loadReporter: reporter });
  let timer: NodeJS.Timeout | null = null;
  try {
    const b1 = await admin.createBucket('l1');
    await conn.start();
    await waitFor('sync', () => conn.synced);
    // Team t sends 100 × t events per second, in ticks of 100 ms.
    timer = setInterval(() => {
      for (const t of [1, 2, 3]) reporter.recordEvents(t, 10 * t);
    }, 100);
    type Load = {
      windows: number;
      buckets: Array<{ bucket_id: number; top_teams: Array<{ team_id: number; rate: { events_per_second: number } }> }>;
    };
    let load: Load | null = null;
    await waitFor(
      'GetLoad to fold two windows',
      async () => {
        load = await admin.call<Load>('MappingService', 'GetLoad', 'GetLoadRequest', 'GetLoadResponse', { top_teams: 10 });
        return load.windows >= 2;
      },
      30000,
    );
    assert.ok(reporter.sent >= 2, `reports sent: ${reporter.sent}`);
    const bucket = load!.buckets.find((b) => b.bucket_id === b1);
    assert.ok(bucket !== undefined);
    const rates = new Map(bucket.top_teams.map((t) => [t.team_id, t.rate.events_per_second]));
    assert.deepEqual([...rates.keys()].sort(), [1, 2, 3]);
    // Every tick counts all three teams: their ratios are exact whatever
    // the timer's jitter; the rates themselves are loosely 100 × t.
    assert.ok(Math.abs(rates.get(2)! / rates.get(1)! - 2) < 0.01, `rates ${[...rates]}`);
    assert.ok(Math.abs(rates.get(3)! / rates.get(1)! - 3) < 0.01, `rates ${[...rates]}`);
    assert.ok(rates.get(1)! > 50 && rates.get(1)! < 150, `team 1: ${rates.get(1)} events/s`);
    assert.ok(conn.synced, 'the server kept the stream');
  } finally {
    if (timer !== null) clearInterval(timer);
    await conn.stop();
    admin.close();
    await server.kill();
  }
});
