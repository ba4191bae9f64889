// WatchConnection's ACK modes (docs/protocol.md, "ACK modes") against a
// scripted WatchMapping server (grpc-js, in this process), so that each
// message the client sends can be checked:
//   * it subscribes with ACK_REQUESTED; against a server that marks its
//     first push (one that knows ack modes) it ACKs the marked pushes at
//     once and the others lazily, coalesced, at the next heartbeat;
//   * against a server that marks nothing (one that predates ack modes) it
//     ACKs every push;
//   * after a NACK it drops the pushes already on their way, unanswered,
//     until the snapshot that answers it.
// The real server's side of the protocol is tested in test/server.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import Long from 'long';
import { Client } from '../../src/client';
import { silentLogger } from '../../src/log';
import { ClientRole, MappingDeltaMsg, messageType } from '../../src/proto';
import { WatchConnection } from '../../src/watch';
import { delta, snapshot } from '../support/messages';

const WatchRequest = messageType('WatchRequest');
const WatchResponse = messageType('WatchResponse');
const ACK_REQUESTED = 1;  // bucketmap.v1.AckMode

interface Request {
  subscribe?: { ack_mode: number } | null;
  ack?: { nonce: Long; applied_version: Long } | null;
  nack?: { nonce: Long } | null;
}

// One stream of the scripted server: what the client sent, in order.
class ScriptedStream {
  private readonly requests: Request[] = [];
  private waiter: (() => void) | null = null;

  constructor(readonly call: grpc.ServerDuplexStream<Request, object>) {
    call.on('data', (r: Request) => {
      this.requests.push(r);
      this.waiter?.();
    });
  }

  send(response: Record<string, unknown>): void {
    this.call.write(WatchResponse.fromObject(response));
  }

  // The next message the client sends (within 5 s).
  async next(): Promise<Request> {
    const give_up = Date.now() + 5000;
    while (this.requests.length === 0) {
      if (Date.now() > give_up) throw new Error('the client sent nothing in 5 s');
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, 50);
      });
      this.waiter = null;
    }
    return this.requests.shift() as Request;
  }

  // Whether the client sends nothing for `ms`.
  async quietFor(ms: number): Promise<boolean> {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return this.requests.length === 0;
  }
}

// A MappingService whose WatchMapping streams are handed to `script`.
async function scriptedServer(
  script: (stream: ScriptedStream) => Promise<void>,
): Promise<{ address: string; done: Promise<void>; close: () => void }> {
  const server = new grpc.Server();
  let finished: (e?: unknown) => void = () => {};
  const done = new Promise<void>((resolve, reject) => {
    finished = (e?: unknown) => (e === undefined ? resolve() : reject(e));
  });
  server.register(
    '/bucketmap.v1.MappingService/WatchMapping',
    (call: grpc.ServerDuplexStream<Request, object>) => {
      script(new ScriptedStream(call)).then(
        () => finished(),
        (e) => finished(e),
      );
    },
    (m: object) => Buffer.from(WatchResponse.encode(m as never).finish()),
    (b: Buffer) => WatchRequest.decode(b) as unknown as Request,
    'bidi',
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return { address: `127.0.0.1:${port}`, done, close: () => server.forceShutdown() };
}

// A client that refuses the next `failNextDeltas` delta pushes.
class RefusingClient extends Client {
  failNextDeltas = 0;

  override applyDeltas(d: readonly MappingDeltaMsg[]): void {
    if (this.failNextDeltas > 0) {
      --this.failNextDeltas;
      throw new Error('test: refusing this delta push');
    }
    super.applyDeltas(d);
  }
}

const BUCKETS = [{ id: 1 }, { id: 2 }];

function push(p: {
  from: number;
  to: number;
  nonce: number;
  marked?: boolean;
  snapshot?: boolean;
}): Record<string, unknown> {
  const body = p.snapshot
    ? { snapshot: snapshot({ version: p.to, buckets: BUCKETS, teams: [7], targets: [p.to % 2 === 0 ? 2 : 1] }) }
    : {
        deltas: Array.from({ length: p.to - p.from }, (_, i) =>
          delta({ from: p.from + i, set: [7], targets: [(p.from + i + 1) % 2 === 0 ? 2 : 1] }),
        ),
      };
  return {
    push: { from_version: p.snapshot ? 0 : p.from, to_version: p.to, nonce: p.nonce, ack_requested: p.marked ?? false, ...body },
  };
}

function assertAck(r: Request, nonce: number, applied: number): void {
  assert.ok(r.ack, `an ACK, not ${JSON.stringify(r)}`);
  assert.equal(Long.fromValue(r.ack.nonce).toNumber(), nonce);
  assert.equal(Long.fromValue(r.ack.applied_version).toNumber(), applied);
}

function consumer(address: string): RefusingClient {
  return new RefusingClient({ addresses: [address], clientId: 'ack-test', role: ClientRole.CONSUMER, logger: silentLogger });
}

// Runs `script` on the stream of a client watching the scripted server;
// returns the client once the script is done.
async function run(
  script: (stream: ScriptedStream, client: RefusingClient) => Promise<void>,
): Promise<RefusingClient> {
  let client: RefusingClient | null = null;
  const server = await scriptedServer((s) => script(s, client as RefusingClient));
  client = consumer(server.address);
  const conn = new WatchConnection(client, { initialBackoffMs: 50, maxBackoffMs: 200 });
  try {
    await conn.start();
    await server.done;
  } finally {
    await conn.stop();
    server.close();
  }
  return client;
}

test('watch ACKs: marked pushes at once, the others lazily at the next heartbeat', async () => {
  const client = await run(async (s) => {
    const sub = await s.next();
    assert.equal(sub.subscribe?.ack_mode, ACK_REQUESTED);
    s.send(push({ from: 0, to: 1, nonce: 10, marked: true, snapshot: true }));
    s.send({ sync: { version: 1 } });
    assertAck(await s.next(), 10, 1);
    // Unmarked: applied, not ACKed.
    s.send(push({ from: 1, to: 2, nonce: 11 }));
    s.send(push({ from: 2, to: 3, nonce: 12 }));
    assert.ok(await s.quietFor(300), 'unmarked pushes are not ACKed at once');
    // The heartbeat brings one ACK covering both.
    s.send({ heartbeat: { version: 3 } });
    assertAck(await s.next(), 12, 3);
    s.send({ heartbeat: { version: 3 } });
    assert.ok(await s.quietFor(200), 'nothing new to ACK');
    s.send(push({ from: 3, to: 4, nonce: 13, marked: true }));
    assertAck(await s.next(), 13, 4);
  });
  assert.equal(client.version, 4);
  assert.equal(client.route(7).bucketId, 2);
});

test('watch ACKs: a server that marks no first push (it predates ack modes) gets every push ACKed', async () => {
  const client = await run(async (s) => {
    await s.next();
    s.send(push({ from: 0, to: 1, nonce: 20, snapshot: true }));
    assertAck(await s.next(), 20, 1);
    s.send({ sync: { version: 1 } });
    s.send(push({ from: 1, to: 2, nonce: 21 }));
    assertAck(await s.next(), 21, 2);
    s.send(push({ from: 2, to: 3, nonce: 22 }));
    assertAck(await s.next(), 22, 3);
  });
  assert.equal(client.version, 3);
});

test('watch ACKs: after a NACK, the pushes on their way are dropped until the snapshot', async () => {
  const client = await run(async (s, client) => {
    await s.next();
    s.send(push({ from: 0, to: 1, nonce: 30, marked: true, snapshot: true }));
    s.send({ sync: { version: 1 } });
    assertAck(await s.next(), 30, 1);
    client.failNextDeltas = 1;
    s.send(push({ from: 1, to: 2, nonce: 31 }));
    const nack = await s.next();
    assert.ok(nack.nack, `a NACK, not ${JSON.stringify(nack)}`);
    assert.equal(Long.fromValue(nack.nack.nonce).toNumber(), 31);
    // Built on the refused push: dropped, neither applied nor answered.
    s.send(push({ from: 2, to: 3, nonce: 32, marked: true }));
    assert.ok(await s.quietFor(300), 'a push after the NACK is dropped unanswered');
    s.send(push({ from: 0, to: 3, nonce: 33, marked: true, snapshot: true }));
    assertAck(await s.next(), 33, 3);
  });
  assert.equal(client.version, 3);
});
