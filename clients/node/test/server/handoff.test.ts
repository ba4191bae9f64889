// A coordinated move end to end with Node on both sides: the real server
// and PostgreSQL, librdkafka's mock cluster in its helper process, two
// example producers (kafkajs, delivery tracker) and one example consumer
// per bucket (kafkajs, partition hold). Teams move between buckets while
// events flow; every event is processed, and per team the sequence is
// strictly increasing with none missing; every handoff completes.
import { after, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ExampleConsumer } from '../../examples/consumer';
import { ExampleProducer } from '../../examples/producer';
import { HandoffPhase } from '../../src/proto';
import { killChildren, Admin, KafkaMock, ServerProcess, env, sleep, waitFor } from '../support/stack';

const e = env();
after(killChildren);
const PARTITIONS = 3;

test('handoff: Node producers and consumers, teams moving mid-stream, no loss, no reordering', { timeout: 240000 }, async () => {
  const kafka = await KafkaMock.start(e, [
    ['node_ev_1', PARTITIONS],
    ['node_ev_2', PARTITIONS],
    ['bucketmap_changes', 1],
  ]);
  const server = await ServerProcess.start(e, [
    `--kafka_brokers=${kafka.bootstrap}`,
    '--kafka_create_topics=false',
    '--changes_topic=bucketmap_changes',
    '--handoffs=true',
    '--handoff_grace=60s',
    '--max_hold=5m',
    '--move_cooldown=0s',
    '--client_lease=3s',
    '--handoff_poll_interval=100ms',
    '--watch_heartbeat=1s',
  ]);
  const admin = new Admin(server.address);
  const order: Array<[number, number, number]> = []; // team, seq, bucket
  const producers: ExampleProducer[] = [];
  const consumers: ExampleConsumer[] = [];
  try {
    const b1 = await admin.createBucket('nb1', { topic: 'node_ev_1', group: 'node_g_1' });
    const b2 = await admin.createBucket('nb2', { topic: 'node_ev_2', group: 'node_g_2' });
    const teams = Array.from({ length: 16 }, (_, i) => i + 1);
    // Creating nb2 moved default-placed teams off nb1: that handoff must end
    // before they can be pinned.
    await waitFor('the first handoff to end', async () => (await admin.listHandoffs(false)).length === 0, 30000);
    for (const t of teams) await admin.assign(t, b1);
    await waitFor('the setup handoffs to end', async () => (await admin.listHandoffs(false)).length === 0, 30000);

    for (const [bucketId, topic] of [
      [b1, 'node_ev_1'],
      [b2, 'node_ev_2'],
    ] as const) {
      consumers.push(
        new ExampleConsumer({
          servers: [server.address],
          brokers: [kafka.bootstrap],
          clientId: `node-e2e-consumer-${bucketId}`,
          bucketId,
          topic,
          groupId: `node_g_${bucketId}`,
          onEvent: (team, m) => {
            const [t, seq] = m.value!.toString().split(':').map(Number);
            assert.equal(t, team);
            order.push([team, seq, bucketId]);
          },
        }),
      );
    }
    for (const c of consumers) await c.start();
    await waitFor('both consumers to get partitions', () => consumers.every((c) => c.assigned), 60000);
    producers.push(
      new ExampleProducer({ servers: [server.address], brokers: [kafka.bootstrap], clientId: 'node-e2e-producer-0', teams: teams.slice(0, 8), idempotent: false }),
      new ExampleProducer({ servers: [server.address], brokers: [kafka.bootstrap], clientId: 'node-e2e-producer-1', teams: teams.slice(8), idempotent: false }),
    );
    for (const p of producers) await p.start();
    await waitFor('events to flow', () => order.length > 200, 30000);

    // Move teams one way, in two waves (chains, no cycles: docs/handoff.md).
    for (const wave of [
      [1, 2, 9, 10],
      [3, 11, 12],
    ]) {
      for (const t of wave) await admin.assign(t, b2);
      await waitFor(
        `the handoffs of teams ${wave} to complete`,
        async () => (await admin.listHandoffs(false)).length === 0,
        90000,
      );
      await sleep(500);
    }
    for (const p of producers) await p.stop();
    const produced = new Map<number, number>();
    for (const p of producers) for (const [t, n] of p.produced()) produced.set(t, n);
    const total = [...produced.values()].reduce((a, b) => a + b, 0);
    await waitFor(`all ${total} events to be processed`, () => new Set(order.map(([t, s]) => `${t}:${s}`)).size >= total, 60000);

    // Per team: the distinct sequence in processing order is 0, 1, 2, ...
    for (const t of teams) {
      const seqs = order.filter(([team]) => team === t).map(([, s]) => s);
      let next = 0;
      for (const s of seqs) {
        if (s < next) {
          // A re-delivery (at least once) of an event already processed is
          // fine only if it is not a reordering: it must repeat the last one.
          assert.equal(s, next - 1, `team ${t}: seq ${s} after ${next - 1}`);
          continue;
        }
        assert.equal(s, next, `team ${t}: seq ${s} processed while ${next} was missing`);
        ++next;
      }
      assert.equal(next, produced.get(t), `team ${t}: processed ${next} of ${produced.get(t)}`);
    }
    // The moved teams ended in bucket 2, the others never left bucket 1.
    for (const [team, , bucket] of order.slice(-50)) {
      const moved = [1, 2, 3, 9, 10, 11, 12].includes(team);
      assert.equal(bucket, moved ? b2 : b1, `team ${team}`);
    }
    const ended = (await admin.listHandoffs(true)).filter((h) => Number(h.opened_version) > 0);
    const moves = ended.filter((h) => (h.team_ids as number[]).some((t) => [1, 2, 3, 9, 10, 11, 12].includes(Number(t))));
    assert.ok(moves.length >= 2, `handoffs of the moves: ${moves.length}`);
    for (const h of moves) assert.equal(h.state, HandoffPhase.COMPLETED, `handoff ${h.id}: ${h.end_reason}`);
    for (const p of producers) {
      assert.equal(p.failedSends, 0);
      assert.equal(p.tracker.inFlight, 0);
    }
    console.log(
      `handoff e2e: ${total} events, ${order.length} processed, holds ${consumers.map((c) => c.hold.stats.holds).join('/')}, ` +
        `held ${consumers.map((c) => c.hold.stats.heldMs).join('/')} ms, skipped ${consumers.map((c) => c.hold.stats.skipped).join('/')}`,
    );
  } finally {
    for (const p of producers) await p.stop().catch(() => undefined);
    for (const c of consumers) await c.stop().catch(() => undefined);
    admin.close();
    await server.kill();
    kafka.stop();
  }
});
