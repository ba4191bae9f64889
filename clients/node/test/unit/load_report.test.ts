// Load reports (client side; the server does not serve them yet): the
// windowing, the top-K selection, and the wire encoding.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import Long from 'long';
import { LoadReporter } from '../../src/load_report';
import { messageType, toInt, toTeamId } from '../../src/proto';

test('load: one report per window, top K ascending by team, the rest in other_*', () => {
  let now = 1000;
  const r = new LoadReporter({ windowMs: 10000, topK: 3, clock: () => now });
  assert.equal(r.endWindow(), null, 'an empty window sends nothing');
  for (let t = 1; t <= 6; ++t) r.recordEvents(t, t * 10);
  r.recordEvents(2n ** 60n, 1000);
  r.recordEvents(0, 5); // not a team: counted in other
  now += 10000;
  const w1 = r.endWindow()!;
  assert.equal(w1.window_ms, 10000);
  assert.deepEqual(w1.team_ids.map((t) => (typeof t === 'number' ? t : toTeamId(t as Long))), [5, 6, 2n ** 60n]);
  assert.deepEqual(w1.events, [50, 60, 1000]);
  assert.deepEqual(w1.processing_us, [], 'no processing column when nothing was timed');
  assert.equal(w1.other_events, 10 + 20 + 30 + 40 + 5);
  // The next window starts from zero.
  now += 2500;
  r.recordProcessing(9, 1234.4);
  r.recordProcessing(9, 10);
  r.recordEvents(8);
  const w2 = r.endWindow()!;
  assert.equal(w2.window_ms, 2500);
  assert.deepEqual(w2.team_ids, [8, 9]);
  assert.deepEqual(w2.events, [1, 0]);
  assert.deepEqual(w2.processing_us, [0, 1244]);
  assert.equal(w2.other_events, 0);
  // Windows are clamped to what the server accepts.
  now += 10;
  r.recordEvents(1);
  assert.equal(r.endWindow()!.window_ms, 1000);
  assert.throws(() => new LoadReporter({ windowMs: 999 }), RangeError);
  assert.throws(() => new LoadReporter({ topK: 1001 }), RangeError);
});

test('load: memory is bounded per window', () => {
  const r = new LoadReporter({ maxTeams: 100, clock: () => 0 });
  for (let t = 1; t <= 1000; ++t) r.recordEvents(t, 1);
  const w = r.endWindow()!;
  assert.equal(w.team_ids.length, 100);
  assert.equal(w.other_events, 900);
});

test('load: ranked by processing time, then events; 1,000 teams at most', () => {
  const r = new LoadReporter({ clock: () => 0 });
  for (let t = 1; t <= 1500; ++t) r.recordProcessing(t, t);
  const w = r.endWindow()!;
  assert.equal(w.team_ids.length, 1000);
  assert.equal(w.team_ids[0], 501);
  assert.equal(w.team_ids[999], 1500);
  assert.equal(w.other_processing_us, (500 * 501) / 2);
});

test('load: encodes as WatchRequest.load and decodes back', () => {
  let now = 0;
  const r = new LoadReporter({ clock: () => now });
  r.recordEvents(3, 7);
  r.recordEvents(2n ** 62n, 1);
  now = 10000;
  const report = r.endWindow()!;
  const type = messageType('WatchRequest');
  const bytes = type.encode(type.fromObject({ load: report })).finish();
  const back = type.decode(bytes) as unknown as { load: Record<string, unknown>; kind: string };
  assert.equal(back.kind, 'load');
  assert.equal(toInt(back.load.window_ms as Long), 10000);
  assert.deepEqual((back.load.team_ids as Long[]).map(toTeamId), [3, 2n ** 62n]);
  assert.deepEqual((back.load.events as Long[]).map(toInt), [7, 1]);
  assert.equal((back.load.processing_us as Long[]).length, 0);
});

test('load: the timer sends one report per window through the sink; dropped without a stream', async () => {
  const r = new LoadReporter({ windowMs: 1000 });
  const got: number[] = [];
  let accept = true;
  r.attach((rep) => {
    got.push(rep.team_ids.length);
    return accept;
  });
  r.recordEvents(1);
  r.tick();
  accept = false;
  r.recordEvents(2);
  r.tick();
  r.tick(); // nothing counted: nothing sent
  r.detach();
  assert.deepEqual(got, [1, 1]);
  assert.equal(r.sent, 1);
  assert.equal(r.dropped, 1);
});
