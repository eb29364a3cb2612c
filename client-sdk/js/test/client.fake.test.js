// Unit tests of TribuneClient against a scripted fake hub (a real websocket
// server on loopback whose frames the test writes): frame validation,
// continuity checks, resume, close codes, drain, heartbeats, requests.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { TribuneClient } from '../src/tribune.js';
import { startFakeHub } from './support/fake-hub.js';
import { makeDelta } from './support/make-delta.js';
import { eventually, waitFor } from './support/util.js';

const EPOCH = 'TRIBUNE@1';
const RESULTS = 'results.t.event';
const CLIPS = 'clips.t.sport';

function client(fake, extra = {}) {
  return new TribuneClient({ url: fake.url, WebSocket, backoff: { initialMs: 20, maxMs: 200 }, ...extra });
}

const msg = (topic, seq, prev, data = { n: seq }, extra = {}) => ({ type: 'message', topic, seq, prev, ts: 1000 + seq, data, ...extra });

/** Collects a subscription's events through its callbacks. */
function collect(c, topic, options = {}) {
  const events = [];
  const sub = c.subscribe(topic, { ...options, onEvent: (e) => events.push(e) });
  return { sub, events, messages: () => events.filter((e) => e.type === 'message') };
}

async function setup(t, hubOptions, clientOptions) {
  const fake = await startFakeHub(hubOptions);
  const c = client(fake, clientOptions);
  const errors = [];
  c.on('error', (e) => errors.push(e));
  t.after(async () => {
    c.close();
    await fake.close();
  });
  return { fake, c, errors };
}

test('subscribe sends one frame per topic, delivers ack and messages to iterators and callbacks', async (t) => {
  const { fake, c } = await setup(t);
  const sub = c.subscribe(RESULTS, { history: 1 });
  const second = collect(c, RESULTS);
  const conn = await fake.connection(0);
  assert.equal(conn.protocol, 'tribune.v1');
  const sf = await conn.next('subscribe');
  // A topic of unknown mode: the SDK asks for deltas (used on state topics).
  assert.deepEqual(sf, { type: 'subscribe', id: sf.id, topic: RESULTS, history: 1, delta: 'fossil' });
  conn.send({ type: 'ack', id: sf.id, topic: RESULTS, mode: 'state', epoch: EPOCH, seq: 7 });
  conn.send(msg(RESULTS, 7, 3, { status: 'live' }, { replay: true }));
  conn.send(msg(RESULTS, 9, 7, { status: 'final' }));
  const it = sub[Symbol.asyncIterator]();
  const a = (await it.next()).value;
  const b = (await it.next()).value;
  assert.deepEqual([a.seq, a.replay, a.data], [7, true, { status: 'live' }]);
  assert.deepEqual([b.seq, b.replay, b.data], [9, false, { status: 'final' }]);
  await eventually(() => second.messages().length === 2);
  assert.equal(conn.frames.filter((f) => f.type === 'subscribe').length, 1);
  // A handle joining later gets the latest state at once.
  const late = collect(c, RESULTS);
  await eventually(() => late.messages().length === 1);
  assert.equal(late.messages()[0].seq, 9);
  // Only the last handle leaving unsubscribes on the wire.
  sub.unsubscribe();
  second.sub.unsubscribe();
  assert.equal((await it.next()).done, true);
  late.sub.unsubscribe();
  const uf = await conn.next('unsubscribe');
  assert.equal(uf.topic, RESULTS);
});

test('bad frames from the hub are reported and ignored; the connection goes on', async (t) => {
  const { fake, c, errors } = await setup(t);
  const s = collect(c, CLIPS);
  const conn = await fake.connection(0);
  const sf = await conn.next('subscribe');
  conn.send({ type: 'ack', id: sf.id, topic: CLIPS, mode: 'feed', epoch: EPOCH, seq: 0 });
  const bad = [
    '{"type":',
    '[]',
    '{"type":"surprise","id":1}',
    '{"type":"message","topic":"clips.t.sport","seq":1,"prev":0,"ts":1}',
    '{"type":"message","topic":"clips.t.sport","seq":-1,"prev":0,"ts":1,"data":{}}',
    '{"type":"message","topic":"clips.t.sport","seq":2,"prev":9,"ts":1,"data":{}}',
    '{"type":"message","topic":"clips.t.sport","seq":"1","prev":0,"ts":1,"data":{}}',
    '{"type":"stats","topic":"clips.t.sport","audience":"many","reactions":{},"window_ms":1}',
    '{"type":"welcome","protocol":1}',
  ];
  for (const text of bad) conn.send(text);
  conn.sendBinary([1, 2, 3]);
  conn.send(msg(CLIPS, 1, 0, { title: 'ok' }));
  await eventually(() => s.messages().length === 1, { message: 'valid message after bad ones' });
  assert.deepEqual(s.messages()[0].data, { title: 'ok' });
  await eventually(() => errors.length === bad.length + 1);
  assert.ok(errors.every((e) => e.code === 'bad_frame'), JSON.stringify(errors.map((e) => e.message)));
  assert.equal(c.state, 'connected');
  assert.equal(fake.connections.length, 1);
});

test('feed: a prev mismatch resubscribes with since; the replay fills the hole in order', async (t) => {
  const { fake, c, errors } = await setup(t);
  const s = collect(c, CLIPS);
  const conn = await fake.connection(0);
  const sf = await conn.next('subscribe');
  conn.send({ type: 'ack', id: sf.id, topic: CLIPS, mode: 'feed', epoch: EPOCH, seq: 10 });
  conn.send(msg(CLIPS, 12, 10));
  conn.send(msg(CLIPS, 20, 15)); // 15 never arrived
  const from = conn.frames.length;
  const unsub = await conn.next('unsubscribe', { from });
  const resub = await conn.next('subscribe', { from });
  assert.equal(unsub.topic, CLIPS);
  assert.deepEqual([resub.since, resub.epoch], [12, EPOCH]);
  assert.ok(conn.frames.indexOf(unsub) < conn.frames.indexOf(resub));
  // Old-subscription frames before the new ack are ignored.
  conn.send(msg(CLIPS, 21, 20));
  conn.send({ type: 'ack', id: unsub.id });
  conn.send({ type: 'ack', id: resub.id, topic: CLIPS, mode: 'feed', epoch: EPOCH, seq: 21, recovered: true });
  conn.send(msg(CLIPS, 15, 12, undefined, { replay: true }));
  conn.send(msg(CLIPS, 20, 15, undefined, { replay: true }));
  conn.send(msg(CLIPS, 21, 20, undefined, { replay: true }));
  conn.send(msg(CLIPS, 25, 21));
  await eventually(() => s.messages().length === 5);
  assert.deepEqual(s.messages().map((m) => m.seq), [12, 15, 20, 21, 25]);
  assert.equal(s.events.filter((e) => e.type === 'gap').length, 0);
  assert.deepEqual(errors.map((e) => e.code), ['discontinuity']);
});

test('feed: prev lower than expected is removal, not loss', async (t) => {
  const { fake, c } = await setup(t);
  const s = collect(c, CLIPS);
  const conn = await fake.connection(0);
  const sf = await conn.next('subscribe');
  conn.send({ type: 'ack', id: sf.id, topic: CLIPS, mode: 'feed', epoch: EPOCH, seq: 10 });
  conn.send(msg(CLIPS, 11, 10));
  conn.send(msg(CLIPS, 30, 0)); // everything before aged out on the bus
  await eventually(() => s.messages().length === 2);
  assert.equal(conn.frames.filter((f) => f.type === 'subscribe').length, 1);
});

/** Resolves once the fake hub has every frame the client sent before now (one socket keeps order). */
async function flushed(c, conn) {
  const from = conn.frames.length;
  const p = c.ping();
  const pf = await conn.next('ping', { from });
  conn.send({ type: 'pong', id: pf.id });
  await p;
}

test('feed: a gap frame is one lost gap event; the message after it is taken whatever its prev', async (t) => {
  const { fake, c, errors } = await setup(t);
  const s = collect(c, CLIPS);
  const conn = await fake.connection(0);
  const sf = await conn.next('subscribe');
  conn.send({ type: 'ack', id: sf.id, topic: CLIPS, mode: 'feed', epoch: EPOCH, seq: 10 });
  conn.send(msg(CLIPS, 11, 10));
  // 12 to 19 aged out before the hub could repair; 20's prev is what the bus
  // knows (17, lost too), not 11.
  conn.send({ type: 'gap', topic: CLIPS, after: 11, before: 20 });
  conn.send(msg(CLIPS, 20, 17));
  conn.send(msg(CLIPS, 21, 20));
  await eventually(() => s.messages().length === 3);
  assert.deepEqual(
    s.events.map((e) => (e.type === 'gap' ? `gap:${e.reason}:${e.after}-${e.before}` : e.seq)),
    [11, 'gap:lost:11-20', 20, 21],
  );
  assert.deepEqual(s.events[1], { type: 'gap', topic: CLIPS, reason: 'lost', after: 11, before: 20 });
  assert.equal(s.sub.lastSeq, 21);
  await flushed(c, conn);
  assert.deepEqual(conn.frames.filter((f) => f.type === 'subscribe' || f.type === 'unsubscribe').map((f) => f.type), ['subscribe']);
  assert.deepEqual(errors, []);
  // Only the announced message is let through: after it, a skip resyncs again.
  const from = conn.frames.length;
  conn.send(msg(CLIPS, 30, 25));
  const resub = await conn.next('subscribe', { from });
  assert.deepEqual([resub.since, resub.epoch], [21, EPOCH]);
  assert.deepEqual(errors.map((e) => e.code), ['discontinuity']);
  assert.equal(s.events.filter((e) => e.type === 'gap').length, 1);
});

test('feed: a gap frame also reaches iterators, in its place between the messages', async (t) => {
  const { fake, c } = await setup(t);
  const sub = c.subscribe(CLIPS);
  const conn = await fake.connection(0);
  const sf = await conn.next('subscribe');
  conn.send({ type: 'ack', id: sf.id, topic: CLIPS, mode: 'feed', epoch: EPOCH, seq: 4 });
  conn.send({ type: 'gap', topic: CLIPS, after: 4, before: 8 });
  conn.send(msg(CLIPS, 8, 6));
  await eventually(() => sub.lastSeq === 8);
  // Bounded reads: a missing event fails the test instead of hanging it.
  const it = sub[Symbol.asyncIterator]();
  const next = () =>
    Promise.race([it.next(), new Promise((_, reject) => setTimeout(() => reject(new Error('no event within 2 s')), 2000))]);
  const got = [];
  for (let i = 0; i < 2; i++) {
    const { value: e } = await next();
    got.push(e.type === 'gap' ? `${e.reason}:${e.after}-${e.before}` : e.seq);
  }
  assert.deepEqual(got, ['lost:4-8', 8]);
  await it.return();
});

test('gap frames that do not fit: ignored on state topics and behind the position; ahead of it, a resync', async (t) => {
  const { fake, c, errors } = await setup(t);
  const board = collect(c, RESULTS);
  const feed = collect(c, CLIPS);
  const conn = await fake.connection(0);
  await eventually(() => conn.frames.filter((f) => f.type === 'subscribe').length === 2);
  for (const f of conn.frames) {
    conn.send({ type: 'ack', id: f.id, topic: f.topic, mode: f.topic === CLIPS ? 'feed' : 'state', epoch: EPOCH, seq: 10 });
  }
  // State topic: the latest message stands for all before it; nothing is said.
  conn.send(msg(RESULTS, 11, 10, { v: 'a' }));
  conn.send({ type: 'gap', topic: RESULTS, after: 11, before: 15 });
  conn.send(msg(RESULTS, 15, 13, { v: 'b' }));
  // Feed: a hole that ends at or before what we hold is old news.
  conn.send(msg(CLIPS, 12, 10));
  conn.send({ type: 'gap', topic: CLIPS, after: 5, before: 12 });
  conn.send(msg(CLIPS, 13, 12));
  await eventually(() => board.messages().length === 2 && feed.messages().length === 2);
  await flushed(c, conn);
  assert.deepEqual(board.messages().map((m) => m.data.v), ['a', 'b']);
  assert.equal(board.events.filter((e) => e.type === 'gap').length, 0);
  assert.equal(feed.events.filter((e) => e.type === 'gap').length, 0);
  assert.equal(conn.frames.filter((f) => f.type === 'subscribe').length, 2);
  assert.deepEqual(errors, []);
  // A gap after a seq we never got: those messages may still be stored, so
  // the feed resubscribes from what it holds instead of writing them off.
  const from = conn.frames.length;
  conn.send({ type: 'gap', topic: CLIPS, after: 16, before: 20 });
  const unsub = await conn.next('unsubscribe', { from });
  const resub = await conn.next('subscribe', { from });
  assert.equal(unsub.topic, CLIPS);
  assert.deepEqual([resub.topic, resub.since, resub.epoch], [CLIPS, 13, EPOCH]);
  assert.deepEqual(errors.map((e) => e.code), ['discontinuity']);
  assert.equal(feed.events.filter((e) => e.type === 'gap').length, 0);
});

test('connection drop: resume with since/epoch per topic, recovered, no gap, no duplicate', async (t) => {
  const { fake, c } = await setup(t);
  const states = [];
  c.on('state', (s) => states.push(s.state));
  const feed = collect(c, CLIPS);
  const board = collect(c, RESULTS);
  const conn = await fake.connection(0);
  await eventually(() => conn.frames.filter((f) => f.type === 'subscribe').length === 2);
  for (const f of conn.frames) {
    const mode = f.topic === CLIPS ? 'feed' : 'state';
    conn.send({ type: 'ack', id: f.id, topic: f.topic, mode, epoch: EPOCH, seq: 4 });
  }
  conn.send(msg(RESULTS, 4, 0, { v: 'a' }, { replay: true }));
  conn.send(msg(CLIPS, 5, 4));
  conn.send(msg(RESULTS, 6, 4, { v: 'b' }));
  await eventually(() => feed.messages().length === 1 && board.messages().length === 2);
  conn.terminate();
  const conn2 = await fake.connection(1);
  await eventually(() => conn2.frames.filter((f) => f.type === 'subscribe').length === 2);
  const byTopic = Object.fromEntries(conn2.frames.map((f) => [f.topic, f]));
  assert.deepEqual([byTopic[CLIPS].since, byTopic[CLIPS].epoch], [5, EPOCH]);
  assert.deepEqual([byTopic[RESULTS].since, byTopic[RESULTS].epoch], [6, EPOCH]);
  conn2.send({ type: 'ack', id: byTopic[CLIPS].id, topic: CLIPS, mode: 'feed', epoch: EPOCH, seq: 9, recovered: true });
  conn2.send({ type: 'ack', id: byTopic[RESULTS].id, topic: RESULTS, mode: 'state', epoch: EPOCH, seq: 8, recovered: true });
  conn2.send(msg(CLIPS, 5, 4, undefined, { replay: true })); // overlap: dropped
  conn2.send(msg(CLIPS, 7, 5, undefined, { replay: true }));
  conn2.send(msg(RESULTS, 8, 6, { v: 'c' }, { replay: true }));
  conn2.send(msg(CLIPS, 9, 7, undefined, { replay: true }));
  await eventually(() => feed.messages().length === 3 && board.messages().length === 3);
  assert.deepEqual(feed.messages().map((m) => m.seq), [5, 7, 9]);
  assert.deepEqual(board.messages().at(-1).data, { v: 'c' });
  assert.equal(feed.events.filter((e) => e.type === 'gap').length, 0);
  assert.deepEqual(states.slice(0, 5), ['connecting', 'connected', 'reconnecting', 'connecting', 'connected']);
});

test('not recovered: feed gets a gap event, state goes on; a new epoch resets seqs', async (t) => {
  const { fake, c } = await setup(t);
  const feed = collect(c, CLIPS);
  const board = collect(c, RESULTS);
  const conn = await fake.connection(0);
  await eventually(() => conn.frames.filter((f) => f.type === 'subscribe').length === 2);
  for (const f of conn.frames) {
    conn.send({ type: 'ack', id: f.id, topic: f.topic, mode: f.topic === CLIPS ? 'feed' : 'state', epoch: EPOCH, seq: 50 });
  }
  conn.send(msg(CLIPS, 51, 50));
  conn.send(msg(RESULTS, 52, 40, { v: 'old' }));
  await eventually(() => feed.messages().length === 1 && board.messages().length === 1);
  conn.close(1011, 'boom');
  const conn2 = await fake.connection(1);
  await eventually(() => conn2.frames.filter((f) => f.type === 'subscribe').length === 2);
  for (const f of conn2.frames) {
    const mode = f.topic === CLIPS ? 'feed' : 'state';
    conn2.send({ type: 'ack', id: f.id, topic: f.topic, mode, epoch: 'TRIBUNE@2', seq: 0, recovered: false });
  }
  // The new epoch numbers from 1 again: lower seqs are new messages.
  conn2.send(msg(RESULTS, 1, 0, { v: 'new' }));
  conn2.send(msg(CLIPS, 2, 0));
  await eventually(() => feed.messages().length === 2 && board.messages().length === 2);
  const gaps = feed.events.filter((e) => e.type === 'gap');
  assert.equal(gaps.length, 1);
  assert.equal(gaps[0].reason, 'epoch_changed');
  assert.equal(gaps[0].after, 51);
  assert.equal(gaps[0].previousEpoch, EPOCH);
  assert.ok(feed.events.indexOf(gaps[0]) < feed.events.indexOf(feed.messages()[1]));
  assert.equal(board.events.filter((e) => e.type === 'gap').length, 0);
  assert.deepEqual(board.messages().at(-1).data, { v: 'new' });
  assert.equal(board.sub.latest.data.v, 'new');
});

test('close 1000 and 1008: no reconnect; 1008 makes iteration throw', async (t) => {
  for (const code of [1000, 1008]) {
    const { fake, c } = await setup(t);
    const sub = c.subscribe(CLIPS);
    const it = sub[Symbol.asyncIterator]();
    const conn = await fake.connection(0);
    await conn.next('subscribe');
    const closed = waitFor((r) => c.on('state', (s) => s.state === 'closed' && r(s)));
    conn.close(code, 'bye');
    const s = await closed;
    assert.equal(s.code, code);
    if (code === 1000) assert.equal((await it.next()).done, true);
    else await assert.rejects(it.next(), { code: 'closed' });
    // The backoff is 20 ms here: a reconnect would have come by now.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(fake.connections.length, 1, `close ${code}`);
    assert.equal(c.state, 'closed');
  }
});

test('close 4008 resumes at once; 4029 and 1011 back off with jitter', async (t) => {
  const { fake, c } = await setup(t, {}, { backoff: { initialMs: 200, maxMs: 400 }, random: () => 0.5 });
  const delays = [];
  c.on('state', (s) => s.state === 'reconnecting' && delays.push(s.delayMs));
  c.subscribe(CLIPS);
  const conn = await fake.connection(0);
  const sf = await conn.next('subscribe');
  conn.send({ type: 'ack', id: sf.id, topic: CLIPS, mode: 'feed', epoch: EPOCH, seq: 3 });
  await eventually(() => c.state === 'connected');
  conn.close(4008, 'slow consumer');
  const conn2 = await fake.connection(1);
  const resume = await conn2.next('subscribe');
  assert.deepEqual([resume.since, resume.epoch], [3, EPOCH]);
  conn2.close(4029, 'flood');
  const conn3 = await fake.connection(2);
  await conn3.next('subscribe');
  conn3.close(1011, 'internal');
  await fake.connection(3);
  assert.deepEqual(delays, [0, 100, 200]);
});

test('drain: reconnect after a random delay in [0, retry_ms), then resume', async (t) => {
  const { fake, c } = await setup(t, {}, { random: () => 0.5 });
  const drains = [];
  c.on('drain', (d) => drains.push(d));
  const feed = collect(c, CLIPS);
  const conn = await fake.connection(0);
  const sf = await conn.next('subscribe');
  conn.send({ type: 'ack', id: sf.id, topic: CLIPS, mode: 'feed', epoch: EPOCH, seq: 3 });
  conn.send(msg(CLIPS, 4, 3));
  await eventually(() => feed.messages().length === 1);
  const started = Date.now();
  conn.send({ type: 'drain', retry_ms: 400 });
  // Still served until the chosen moment.
  conn.send(msg(CLIPS, 5, 4));
  await eventually(() => feed.messages().length === 2);
  const conn2 = await fake.connection(1);
  const elapsed = Date.now() - started;
  assert.deepEqual(drains, [{ retry_ms: 400, delayMs: 200 }]);
  assert.ok(elapsed >= 190, `moved after ${elapsed} ms`);
  const closed = await conn.waitClosed();
  assert.equal(closed.code, 4000);
  const resume = await conn2.next('subscribe');
  assert.deepEqual([resume.since, resume.epoch], [5, EPOCH]);
});

test('drain followed by the node closing: the drain delay governs the return', async (t) => {
  const { fake, c } = await setup(t, {}, { random: () => 0.5, backoff: { initialMs: 10000, maxMs: 10000 } });
  c.subscribe(CLIPS);
  const conn = await fake.connection(0);
  await conn.next('subscribe');
  conn.send({ type: 'drain', retry_ms: 200 });
  conn.close(1001, 'node draining');
  // With a 10 s backoff this only comes in time through the drain timer.
  await fake.connection(1, 3000);
});

test('react resolves on ack, rejects on error; stats reach subscriptions', async (t) => {
  const { fake, c } = await setup(t);
  const s = collect(c, RESULTS);
  const conn = await fake.connection(0);
  const sf = await conn.next('subscribe');
  conn.send({ type: 'ack', id: sf.id, topic: RESULTS, mode: 'state', epoch: EPOCH, seq: 0 });
  await eventually(() => c.state === 'connected');
  const p = s.sub.react('🔥');
  const rf = await conn.next('react');
  assert.deepEqual(rf, { type: 'react', id: rf.id, topic: RESULTS, reaction: '🔥' });
  conn.send({ type: 'ack', id: rf.id });
  await p;
  const p2 = c.react(RESULTS, '👏');
  const rf2 = await conn.next((f) => f.type === 'react' && f.reaction === '👏');
  conn.send({ type: 'error', id: rf2.id, code: 'rate_limited', message: 'slow down' });
  await assert.rejects(p2, { code: 'rate_limited' });
  conn.send({ type: 'stats', topic: RESULTS, audience: 42, reactions: { '🔥': 3 }, window_ms: 1000 });
  await eventually(() => s.events.some((e) => e.type === 'stats'));
  assert.deepEqual(s.events.find((e) => e.type === 'stats'), {
    type: 'stats',
    topic: RESULTS,
    audience: 42,
    reactions: { '🔥': 3 },
    windowMs: 1000,
  });
  assert.deepEqual(s.sub.stats.audience, 42);
  // Reactions while disconnected are refused at once, never queued. (Tried
  // from the state listener: the client is back within milliseconds.)
  const offline = waitFor((resolve) => c.on('state', (st) => st.state === 'reconnecting' && resolve(c.react(RESULTS, '🔥').catch((e) => e))));
  conn.terminate();
  const refused = await offline;
  assert.equal(refused.code, 'not_connected');
});

test('a refused subscription ends its handles with the error', async (t) => {
  const { fake, c } = await setup(t);
  const sub = c.subscribe('premium.t.x');
  const errs = [];
  sub.on('error', (e) => errs.push(e.code));
  const it = sub[Symbol.asyncIterator]();
  const conn = await fake.connection(0);
  const sf = await conn.next('subscribe');
  conn.send({ type: 'error', id: sf.id, code: 'forbidden', message: 'needs a token' });
  await assert.rejects(it.next(), { code: 'forbidden' });
  assert.deepEqual(errs, ['forbidden']);
  assert.throws(() => c.subscribe('bad topic'), { code: 'bad_topic' });
});

test('a transient subscribe error is retried', async (t) => {
  const { fake, c } = await setup(t);
  const s = collect(c, CLIPS);
  const conn = await fake.connection(0);
  const sf = await conn.next('subscribe');
  conn.send({ type: 'error', id: sf.id, code: 'unavailable', message: 'bus down' });
  const retry = await conn.next((f) => f.type === 'subscribe' && f.id !== sf.id);
  conn.send({ type: 'ack', id: retry.id, topic: CLIPS, mode: 'feed', epoch: EPOCH, seq: 0 });
  conn.send(msg(CLIPS, 1, 0));
  await eventually(() => s.messages().length === 1);
});

test('heartbeat: silence brings a ping, then a reconnect', async (t) => {
  const { fake, c } = await setup(t, { heartbeatMs: 100 });
  c.connect();
  const conn = await fake.connection(0);
  const ping = await conn.next('ping');
  conn.send({ type: 'pong', id: ping.id });
  // The hub goes silent for good: the client gives up on the socket.
  await fake.connection(1, 3000);
  assert.equal((await conn.waitClosed()).code, 4000);
});

test('the token travels in the first frame, never in the URL; ping measures a round trip', async (t) => {
  const { fake, c } = await setup(t, {}, { token: async () => 'abc.def.ghi' });
  const s = collect(c, CLIPS);
  c.connect();
  const conn = await fake.connection(0);
  assert.equal(conn.url, '/v1/ws');
  await conn.next('subscribe');
  // `auth` goes before the subscriptions it may grant.
  assert.deepEqual(conn.frames[0], { type: 'auth', id: conn.frames[0].id, token: 'abc.def.ghi' });
  assert.equal(conn.frames[1].type, 'subscribe');
  conn.send({ type: 'ack', id: conn.frames[0].id });
  await c.ready();
  const p = c.ping();
  const pf = await conn.next('ping');
  conn.send({ type: 'pong', id: pf.id });
  assert.ok((await p) >= 0);
  assert.equal(s.messages().length, 0);
});

test('a provider refreshes ahead of exp, jittered; a failed refresh is said and retried', async (t) => {
  let calls = 0;
  const provider = async () => {
    calls += 1;
    if (calls === 3) throw new Error('login service down');
    return `tok.${calls}.x`;
  };
  // random() = 0: the refresh comes at half the token's remaining life.
  const { fake, c, errors } = await setup(t, {}, { token: provider, random: () => 0 });
  const tokens = [];
  c.on('token', (e) => tokens.push(e));
  c.connect();
  const conn = await fake.connection(0);
  const first = await conn.next('auth');
  assert.equal(first.token, 'tok.1.x');
  const exp = () => Math.floor(Date.now() / 1000) + 2;
  conn.send({ type: 'ack', id: first.id, expires_at: exp() });
  await c.ready();
  // Refreshed on the same connection, about 1 s in.
  const auth = (token) => conn.next((f) => f.type === 'auth' && f.token === token, { timeoutMs: 3000 });
  const second = await auth('tok.2.x');
  conn.send({ type: 'ack', id: second.id, expires_at: exp() });
  // The provider fails once: an error, then another try before exp.
  await eventually(() => errors.some((e) => e.code === 'token_refresh_failed'));
  const third = await auth('tok.4.x');
  // The hub refuses it: said too, and the connection stays.
  conn.send({ type: 'error', id: third.id, code: 'forbidden', message: 'token revoked' });
  await eventually(() => errors.filter((e) => e.code === 'token_refresh_failed').length === 2);
  assert.ok(errors.some((e) => /token revoked/.test(e.message)));
  assert.equal(tokens.length, 2);
  assert.equal(fake.connections.length, 1, 'no reconnect');
  assert.ok(errors.every((e) => !/tok\./.test(e.message)), 'no token in errors');
});

test('unsubscribed ends exactly that subscription, with the code', async (t) => {
  const { fake, c } = await setup(t);
  const ended = [];
  const kept = collect(c, CLIPS);
  const dropped = collect(c, 'premium.t.sport', { onUnsubscribed: (e) => ended.push(e), onError: () => {} });
  const conn = await fake.connection(0);
  for (const topic of [CLIPS, 'premium.t.sport']) {
    const sf = await conn.next((f) => f.type === 'subscribe' && f.topic === topic);
    conn.send({ type: 'ack', id: sf.id, topic, mode: 'feed', epoch: EPOCH, seq: 0 });
  }
  conn.send({ type: 'unsubscribed', topic: 'premium.t.sport', code: 'forbidden' });
  conn.send(msg(CLIPS, 1, 0));
  conn.send(msg('premium.t.sport', 2, 0));
  await eventually(() => kept.messages().length === 1);
  assert.deepEqual(ended, [{ topic: 'premium.t.sport', code: 'forbidden' }]);
  assert.equal(dropped.messages().length, 0);
  const it = dropped.sub[Symbol.asyncIterator]();
  await assert.rejects(it.next(), { code: 'forbidden' });
});

test('frames over the size limit are refused before sending', async (t) => {
  const { c } = await setup(t);
  await c.ready();
  await assert.rejects(c.publish('cheers.a', { x: 'y'.repeat(5000) }), { code: 'payload_too_large' });
});

test('an unbounded reader is bounded: overflow is said with a gap', async (t) => {
  const { fake, c } = await setup(t);
  const sub = c.subscribe(CLIPS, { bufferSize: 3 });
  const conn = await fake.connection(0);
  const sf = await conn.next('subscribe');
  conn.send({ type: 'ack', id: sf.id, topic: CLIPS, mode: 'feed', epoch: EPOCH, seq: 0 });
  for (let i = 1; i <= 6; i++) conn.send(msg(CLIPS, i, i - 1));
  await eventually(() => sub.lastSeq === 6);
  const got = [];
  for await (const e of sub) {
    got.push(e.type === 'gap' ? `gap:${e.dropped}` : e.seq);
    if (got.length === 3) break;
  }
  assert.deepEqual(got, ['gap:4', 5, 6]);
});

test('a subscription made between socket open and welcome is sent, and so is its unsubscribe', async (t) => {
  const { fake, c } = await setup(t, { welcome: false });
  const first = c.subscribe(CLIPS);
  const conn = await fake.connection(0);
  await conn.next('subscribe');
  assert.equal(c.state, 'connecting');
  const second = c.subscribe(RESULTS);
  const sf = await conn.next((f) => f.type === 'subscribe' && f.topic === RESULTS);
  assert.equal(sf.topic, RESULTS);
  second.unsubscribe();
  await conn.next((f) => f.type === 'unsubscribe' && f.topic === RESULTS);
  conn.send({ type: 'welcome', protocol: 1, node: 'fake', conn: 'c-0', heartbeat_ms: 25000 });
  await eventually(() => c.state === 'connected');
  first.unsubscribe();
});

test('state deltas: rebuilt byte for byte from the raw payload, a bad one resubscribes and is never shown', async (t) => {
  const { fake, c, errors } = await setup(t);
  const { events, messages } = collect(c, RESULTS);
  const conn = await fake.connection(0);
  const sf = await conn.next('subscribe');
  assert.equal(sf.delta, 'fossil');
  conn.send({ type: 'ack', id: sf.id, topic: RESULTS, mode: 'state', epoch: EPOCH, seq: 0, delta: true });
  // The base is the payload as the hub wrote it (spacing, key order and
  // escapes included), not JSON.stringify of the parsed value.
  const rows = (t) => Array.from({ length: 30 }, (_, i) => `{"name": "Skåter ${i} 🇳🇴", "time":"${t}"}`).join(',');
  const a = `{"rows":[${rows('1:55.01')}], "venue":"Milano"}`;
  const b = `{"rows":[${rows('1:54.99')}], "venue":"Milano"}`;
  const cc = `{"rows":[${rows('1:54.80')}], "venue":"Milano"}`;
  const frame = (seq, prev, delta, data) =>
    `{"type":"message","topic":"${RESULTS}","seq":${seq},"prev":${prev},"ts":1${delta ? ',"delta":true' : ''},"data":${data}}`;
  conn.send(frame(1, 0, false, a));
  conn.send(frame(2, 1, true, JSON.stringify(makeDelta(a, b))));
  await eventually(() => messages().length === 2);
  assert.deepEqual(messages()[1].data, JSON.parse(b));
  assert.equal(messages()[1].delta, undefined, 'applications never see the delta');
  // A delta made from a board this client never held: checksum fails.
  const other = a.replaceAll('Skåter', 'Skater');
  conn.send(frame(3, 2, true, JSON.stringify(makeDelta(other, cc))));
  const unsub = await conn.next('unsubscribe');
  const again = await conn.next((f) => f.type === 'subscribe' && f.id !== sf.id);
  assert.equal(unsub.topic, RESULTS);
  assert.deepEqual([again.since, again.epoch, again.delta], [2, EPOCH, 'fossil']);
  assert.deepEqual(errors.map((e) => e.code), ['discontinuity']);
  conn.send({ type: 'ack', id: again.id, topic: RESULTS, mode: 'state', epoch: EPOCH, seq: 3, recovered: true, delta: true });
  conn.send(frame(3, 2, false, cc).replace('"ts":1', '"ts":1,"replay":true'));
  await eventually(() => messages().length === 3);
  assert.deepEqual(messages().map((m) => m.seq), [1, 2, 3]);
  assert.deepEqual(messages()[2].data, JSON.parse(cc));
  assert.equal(events.filter((e) => e.type === 'message' && e.seq === 3).length, 1);
});

test('deltas: false asks for full messages', async (t) => {
  const { fake, c } = await setup(t, undefined, { deltas: false });
  collect(c, RESULTS);
  const conn = await fake.connection(0);
  const sf = await conn.next('subscribe');
  assert.equal(sf.delta, undefined);
});
