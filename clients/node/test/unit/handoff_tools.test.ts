// The delivery tracker (drained_version), the handoff gate and the kafkajs
// partition hold, over a client fed by hand.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Client } from '../../src/client';
import { DeliveryTracker } from '../../src/delivery_tracker';
import { GateReason, HandoffGate, parseVersionHeader } from '../../src/gate';
import { KafkaPartitionHold, stampedVersion, versionHeaders } from '../../src/kafka';
import { silentLogger } from '../../src/log';
import { HandoffPhase } from '../../src/proto';
import { delta, handoff, snapshot } from '../support/messages';

function fed(): Client {
  const c = new Client({ clientId: 'unit', logger: silentLogger });
  c.applySnapshot(snapshot({ version: 3, buckets: [{ id: 1 }, { id: 2 }], teams: [5, 6], targets: [1, 1] }));
  return c;
}

test('tracker: drained_version is the lowest version in flight, or the applied one', async () => {
  const c = fed();
  const t = new DeliveryTracker(c);
  assert.equal(t.drainedVersion(3), 3);
  const a = t.route(5);
  assert.equal(a.ticket.version, 3);
  assert.equal(a.route.bucketId, 1);
  c.applyDeltas([delta({ from: 3 })]);
  const b = t.current();
  assert.equal(b.ticket.version, 4);
  assert.equal(t.inFlight, 2);
  assert.equal(t.drainedVersion(4), 3);
  t.done(a.ticket);
  t.done(a.ticket); // a second done() is ignored
  assert.equal(t.inFlight, 1);
  assert.equal(t.drainedVersion(4), 4);
  assert.equal(t.drainedVersion(10), 4);
  // Progress is signalled (once, coalesced) when the last event below the
  // reported applied version is done.
  let signals = 0;
  t.onProgress(() => ++signals);
  const old = t.begin(); // at 4
  c.applyDeltas([delta({ from: 4 })]);
  t.setReported(4, 5);
  await new Promise((r) => setImmediate(r));
  signals = 0;
  t.done(b.ticket);
  t.done(old);
  await new Promise((r) => setImmediate(r));
  assert.equal(signals, 1);
  assert.equal(t.drainedVersion(5), 5);
  // track(): settles with the send, success or failure.
  const x = t.begin();
  await assert.rejects(t.track(x, Promise.reject(new Error('broker down'))));
  assert.equal(t.inFlight, 0);
  // rebind never lowers a ticket.
  const y = t.begin();
  t.rebind(y, 2);
  assert.equal(y.version, 5);
  t.done(y);
});

test('gate: hold while behind the stamp and on the target of an open ordered handoff', () => {
  const c = fed();
  const gate = new HandoffGate(c);
  assert.equal(gate.check(5, 1, 0).reason, GateReason.NO_HANDOFF);
  const behind = gate.check(5, 1, 9);
  assert.deepEqual([behind.process, behind.reason, behind.waitVersion], [false, GateReason.CLIENT_BEHIND, 9]);
  // Team 5 moves 1 -> 2 at version 4; team 6 moves unordered.
  c.applyDeltas([
    delta({
      from: 3,
      set: [5, 6],
      targets: [2, 2],
      handoffs: [
        handoff({ id: 7, openedVersion: 4, source: 1, teams: [5], to: [2] }),
        handoff({ id: 8, openedVersion: 4, source: 1, teams: [6], to: [2], ordered: false }),
      ],
    }),
  ]);
  const target = gate.check(5, 2, 4);
  assert.deepEqual([target.process, target.reason, target.handoffId], [false, GateReason.TARGET_OF_OPEN_HANDOFF, 7]);
  assert.equal(gate.check(5, 1, 3).reason, GateReason.SOURCE);
  assert.ok(gate.check(5, 1, 3).process);
  assert.equal(gate.check(5, 3, 0).reason, GateReason.OTHER_BUCKET);
  assert.equal(gate.check(6, 2, 4).reason, GateReason.UNORDERED);
  assert.ok(gate.check(6, 2, 4).process);
  c.applyDeltas([delta({ from: 4, handoffs: [handoff({ id: 7, openedVersion: 4, source: 1, teams: [5], to: [2], state: HandoffPhase.COMPLETED })] })]);
  assert.ok(gate.check(5, 2, 4).process);
  assert.equal(parseVersionHeader(Buffer.from('42')), 42);
  assert.equal(parseVersionHeader('x1'), 0);
  assert.equal(parseVersionHeader(undefined), 0);
  assert.equal(parseVersionHeader([Buffer.from('1'), Buffer.from('7')]), 7);
});

test('partition hold: pauses at the first held offset, skips the rest, resumes on the version that opens the gate', () => {
  const c = fed();
  const calls: string[] = [];
  const consumer = {
    pause: (t: Array<{ topic: string; partitions?: number[] }>) => calls.push(`pause ${t[0].topic}[${t[0].partitions}]`),
    resume: (t: Array<{ topic: string; partitions?: number[] }>) => calls.push(`resume ${t[0].topic}[${t[0].partitions}]`),
  };
  const hold = new KafkaPartitionHold(consumer, c);
  c.applyDeltas([delta({ from: 3, set: [5], targets: [2], handoffs: [handoff({ id: 7, openedVersion: 4, source: 1, teams: [5], to: [2] })] })]);
  const msg = (offset: number, version = 4) => ({ offset: String(offset), headers: versionHeaders({ version } as never) });
  assert.equal(stampedVersion(msg(1, 4)), 4);
  assert.equal(hold.admit('t2', 0, msg(10), 6, 2), 'process');
  assert.equal(hold.admit('t2', 0, msg(11), 5, 2), 'held');
  assert.deepEqual(calls, ['pause t2[0]']);
  assert.equal(hold.admit('t2', 0, msg(12), 6, 2), 'skip');
  assert.equal(hold.admit('t2', 1, msg(3), 6, 2), 'process');
  assert.equal(hold.heldCount, 1);
  // A version that does not end the handoff: still held.
  c.applyDeltas([delta({ from: 4 })]);
  assert.equal(hold.heldCount, 1);
  c.applyDeltas([delta({ from: 5, handoffs: [handoff({ id: 7, openedVersion: 4, source: 1, teams: [5], to: [2], state: HandoffPhase.COMPLETED })] })]);
  assert.equal(hold.heldCount, 0);
  assert.deepEqual(calls, ['pause t2[0]', 'resume t2[0]']);
  // A stale message beyond the held offset is skipped; the held one comes again first.
  assert.equal(hold.admit('t2', 0, msg(12), 6, 2), 'skip');
  assert.equal(hold.admit('t2', 0, msg(11), 5, 2), 'process');
  assert.equal(hold.admit('t2', 0, msg(12), 6, 2), 'process');
  assert.equal(hold.stats.holds, 1);
  assert.equal(hold.stats.resumes, 1);
  assert.equal(hold.stats.skipped, 2);
  // Behind the stamp: held until the client catches up.
  assert.equal(hold.admit('t2', 2, msg(1, 8), 6, 2), 'held');
  c.applyDeltas([delta({ from: 6 }), delta({ from: 7 })]);
  assert.equal(hold.heldCount, 0);
  hold.close();
});
