// Retractions and the spoiler shield in the JS SDK (PROTOCOL.md section 13):
// against the real hub binary (embedded bus), a retraction reaches handles as
// a `retract` event, the iteration buffer drops the retracted item, and the
// chain goes on without a resync; against the scripted fake hub, `delayMs`
// is sent as `delay_ms`, `setDelay` renews the subscription with `since` and
// the new delay, and out-of-range delays are refused before anything is sent.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { TribuneClient } from '../src/tribune.js';
import { decodeServerFrame } from '../src/protocol.js';
import { startFakeHub } from './support/fake-hub.js';
import { Hub } from './support/hub.js';
import { eventually } from './support/util.js';

let hub;
let unique = 0;
const topicFor = (ns) => `${ns}.jsretract${process.pid}.t${++unique}`;

before(async () => {
  hub = await Hub.start();
});

after(async () => {
  await hub?.stop();
});

function newClient(t, url) {
  const c = new TribuneClient({ url, WebSocket, backoff: { initialMs: 50, maxMs: 400 } });
  const errors = [];
  c.on('error', (e) => errors.push(e));
  t.after(() => c.close());
  return { c, errors };
}

test('a retraction is a retract event, the buffered item is dropped, the chain goes on', async (t) => {
  const { c, errors } = newClient(t, `ws://127.0.0.1:${hub.port}/v1/ws`);
  const topic = topicFor('clips');
  const heard = [];
  const sub = c.subscribe(topic);
  sub.on('retract', (e) => heard.push(e));
  const subscribed = new Promise((resolve) => sub.on('subscribed', resolve));
  await subscribed;
  const a = await hub.publish(topic, { clip: 'a' });
  const b = await hub.publish(topic, { clip: 'b' });
  const marker = await hub.retract(topic, b);
  const d = await hub.publish(topic, { clip: 'd' });
  await eventually(() => sub.lastSeq === d);
  // Nothing was read yet: the buffer no longer holds b.
  const events = [];
  for await (const e of sub) {
    events.push(e);
    if (e.type === 'message' && e.seq === d) break;
  }
  assert.deepEqual(
    events.map((e) => [e.type, e.seq]),
    [
      ['message', a],
      ['retract', b],
      ['message', d],
    ],
  );
  assert.equal(events[1].at, marker);
  assert.equal(heard.length, 1, 'listeners hear it too');
  assert.deepEqual(errors, [], 'no discontinuity, no resync');

  // A state topic refuses retractions at the hub.
  await assert.rejects(hub.retract(topicFor('results'), 1), /HTTP 409/);
});

test('retract frames are validated', () => {
  const ok = decodeServerFrame('{"type":"retract","topic":"clips.a.b","seq":4,"at":9,"prev":7,"ts":1}');
  assert.deepEqual(ok, { type: 'retract', topic: 'clips.a.b', seq: 4, at: 9, prev: 7, ts: 1, replay: false });
  for (const bad of [
    '{"type":"retract","topic":"clips.a.b","seq":9,"at":4,"prev":1,"ts":1}',
    '{"type":"retract","topic":"clips.a.b","seq":4,"at":9,"prev":9,"ts":1}',
    '{"type":"retract","topic":"clips.a.b","seq":4,"prev":1,"ts":1}',
  ]) {
    assert.throws(() => decodeServerFrame(bad), { code: 'bad_frame' }, bad);
  }
});

test('delayMs is sent as delay_ms; setDelay renews with since and the new delay', async (t) => {
  const fake = await startFakeHub();
  const { c } = newClient(t, fake.url);
  t.after(() => fake.close());
  const topic = 'clips.t.delay';
  assert.throws(() => c.subscribe(topic, { delayMs: 120001 }), { code: 'bad_request' });
  assert.throws(() => c.subscribe(topic, { delayMs: -1 }), { code: 'bad_request' });
  const events = [];
  const sub = c.subscribe(topic, { delayMs: 30000, onEvent: (e) => events.push(e) });
  assert.equal(sub.delayMs, 30000);
  const conn = await fake.connection(0);
  const first = await conn.next('subscribe');
  assert.equal(first.delay_ms, 30000);
  conn.send({ type: 'ack', id: first.id, topic, mode: 'feed', epoch: 'E1', seq: 4 });
  conn.send({ type: 'message', topic, seq: 6, prev: 4, ts: 1, data: { n: 6 } });
  conn.send({ type: 'retract', topic, seq: 6, at: 8, prev: 6, ts: 2 });
  await eventually(() => events.length === 2);
  assert.throws(() => sub.setDelay(200000), { code: 'bad_request' });
  sub.setDelay(15000);
  const from = conn.frames.indexOf(first) + 1;
  await conn.next('unsubscribe', { from });
  const renewed = await conn.next((f) => f.type === 'subscribe' && f.id !== first.id);
  assert.deepEqual([renewed.delay_ms, renewed.since, renewed.epoch], [15000, 8, 'E1']);
  sub.setDelay(0);
  const live = await conn.next((f) => f.type === 'subscribe' && f.id !== first.id && f.id !== renewed.id);
  assert.equal(live.delay_ms, undefined, 'no delay_ms when live');
});
