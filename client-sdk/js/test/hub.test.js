// The JS SDK against the real hub binary (embedded bus) on loopback: receive,
// seamless resume after a network drop, resume after a hub restart (new
// epoch: recovered:false), unrecoverable gaps, reactions and stats. A TCP
// proxy stands between SDK and hub so that a test can cut the network or move
// to a restarted hub behind one address.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { TribuneClient } from '../src/tribune.js';
import { Hub, startProxy } from './support/hub.js';
import { eventually } from './support/util.js';

let hub;
let proxy;
let unique = 0;
const topicFor = (ns) => `${ns}.jsit${process.pid}.t${++unique}`;

// A feed namespace that keeps little, so that a test can publish more than
// it retains (the built-in clips keep 10,000).
const SHORT_RETENTION = 100;
const config = join(mkdtempSync(join(tmpdir(), 'tribune-js-')), 'hub.toml');
writeFileSync(config, `[namespaces.short]\nmode = "feed"\nretained = ${SHORT_RETENTION}\n`);

before(async () => {
  hub = await Hub.start(['--config', config]);
  proxy = await startProxy(hub.port);
});

after(async () => {
  await proxy?.close();
  await hub?.stop();
});

function newClient(t, url = proxy.wsUrl) {
  const c = new TribuneClient({ url, WebSocket, backoff: { initialMs: 50, maxMs: 400 } });
  const errors = [];
  c.on('error', (e) => errors.push(e));
  t.after(() => c.close());
  return { c, errors };
}

function collect(c, topic, options = {}) {
  const events = [];
  const infos = [];
  const sub = c.subscribe(topic, {
    ...options,
    onEvent: (e) => events.push(e),
    onSubscribed: (i) => infos.push(i),
  });
  return {
    sub,
    events,
    infos,
    messages: () => events.filter((e) => e.type === 'message'),
    gaps: () => events.filter((e) => e.type === 'gap'),
  };
}

test('subscribe: state replays the latest, feed delivers every item in order', async (t) => {
  const { c, errors } = newClient(t, hub.wsUrl);
  const board = topicFor('results');
  const feed = topicFor('clips');
  await hub.publish(board, { v: 1 });
  const latest = await hub.publish(board, { v: 2 });
  const b = collect(c, board);
  const f = collect(c, feed);
  await eventually(() => b.messages().length === 1 && f.infos.length === 1, { message: 'ack and replay' });
  assert.deepEqual(b.messages()[0].data, { v: 2 });
  assert.equal(b.messages()[0].seq, latest);
  assert.equal(b.messages()[0].replay, true);
  assert.equal(b.infos[0].mode, 'state');
  assert.equal(f.infos[0].mode, 'feed');
  assert.match(f.infos[0].epoch, /./);
  const seqs = [];
  for (let i = 0; i < 5; i++) seqs.push(await hub.publish(feed, { kind: 'clip', id: `c${i}` }));
  await hub.publish(board, { v: 3 });
  await eventually(() => f.messages().length === 5 && b.messages().length === 2);
  assert.deepEqual(f.messages().map((m) => m.seq), seqs);
  assert.deepEqual(f.messages().map((m) => m.data.id), ['c0', 'c1', 'c2', 'c3', 'c4']);
  assert.ok(f.messages().every((m) => m.replay === false));
  assert.deepEqual(b.messages().at(-1).data, { v: 3 });
  assert.equal(c.welcome.protocol, 1);
  assert.deepEqual(errors, []);
});

test('iteration: for await over a subscription', async (t) => {
  const { c } = newClient(t, hub.wsUrl);
  const feed = topicFor('clips');
  const sub = c.subscribe(feed);
  await c.ready();
  await eventually(() => sub.mode === 'feed');
  for (let i = 0; i < 3; i++) await hub.publish(feed, { n: i });
  const got = [];
  for await (const ev of sub.messages()) {
    got.push(ev.data.n);
    if (got.length === 3) break;
  }
  assert.deepEqual(got, [0, 1, 2]);
  assert.equal(sub.closed, true);
});

test('network drop: the SDK resumes with since and loses nothing', async (t) => {
  const { c, errors } = newClient(t);
  const board = topicFor('results');
  const feed = topicFor('clips');
  const b = collect(c, board);
  const f = collect(c, feed);
  await eventually(() => b.infos.length === 1 && f.infos.length === 1);
  const before = [];
  for (let i = 0; i < 3; i++) before.push(await hub.publish(feed, { n: i }));
  await hub.publish(board, { v: 'before' });
  await eventually(() => f.messages().length === 3 && b.messages().length === 1);

  const states = [];
  c.on('state', (s) => states.push(s.state));
  proxy.block();
  proxy.dropAll();
  await eventually(() => c.state === 'reconnecting' || c.state === 'connecting', { message: 'client notices the drop' });
  const during = [];
  for (let i = 3; i < 8; i++) during.push(await hub.publish(feed, { n: i }));
  await hub.publish(board, { v: 'during' });
  proxy.unblock();

  await eventually(() => f.messages().length === 8 && b.messages().at(-1)?.data.v === 'during', {
    timeoutMs: 10000,
    message: 'resumed messages',
  });
  assert.deepEqual(f.messages().map((m) => m.seq), [...before, ...during]);
  assert.deepEqual(f.messages().map((m) => m.data.n), [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(f.gaps(), []);
  assert.deepEqual(f.infos.at(-1), { ...f.infos.at(-1), resumed: true, recovered: true });
  assert.deepEqual(b.infos.at(-1), { ...b.infos.at(-1), resumed: true, recovered: true });
  assert.equal(f.infos.at(-1).epoch, f.infos[0].epoch);
  assert.ok(states.includes('connected'));
  // After the resume, live delivery goes on.
  const next = await hub.publish(feed, { n: 8 });
  await eventually(() => f.messages().at(-1)?.seq === next);
  assert.deepEqual(errors, []);
});

test('client-side reconnect resumes seamlessly too', async (t) => {
  const { c } = newClient(t, hub.wsUrl);
  const feed = topicFor('clips');
  const f = collect(c, feed);
  await eventually(() => f.infos.length === 1);
  await hub.publish(feed, { n: 0 });
  await eventually(() => f.messages().length === 1);
  c.reconnect();
  const s1 = await hub.publish(feed, { n: 1 });
  const s2 = await hub.publish(feed, { n: 2 });
  await eventually(() => f.messages().length === 3, { timeoutMs: 10000 });
  assert.deepEqual(f.messages().slice(1).map((m) => m.seq), [s1, s2]);
  assert.equal(f.infos.length, 2);
  assert.equal(f.infos[1].recovered, true);
  assert.deepEqual(f.gaps(), []);
});

test('more lost than retained: recovered:false gives the feed a gap event, then live again', async (t) => {
  const { c } = newClient(t);
  const feed = topicFor('short');
  const f = collect(c, feed);
  await eventually(() => f.infos.length === 1);
  const first = await hub.publish(feed, { n: 0 });
  await eventually(() => f.messages().length === 1);
  proxy.block();
  proxy.dropAll();
  await eventually(() => c.state !== 'connected');
  // More than the namespace retains per topic cannot all be replayed.
  for (let i = 1; i <= SHORT_RETENTION + 20; i++) await hub.publish(feed, { n: i });
  proxy.unblock();
  await eventually(() => f.gaps().length === 1, { timeoutMs: 10000, message: 'gap event' });
  const gap = f.gaps()[0];
  assert.equal(gap.reason, 'not_recovered');
  assert.equal(gap.after, first);
  assert.equal(f.infos.at(-1).recovered, false);
  const live = await hub.publish(feed, { n: SHORT_RETENTION + 21 });
  await eventually(() => f.messages().at(-1)?.seq === live);
  assert.equal(f.messages().length, 2);
});

test('hub restart: a new epoch; state ends on the latest, feed says gap', async (t) => {
  const { c } = newClient(t);
  const board = topicFor('results');
  const feed = topicFor('clips');
  const b = collect(c, board);
  const f = collect(c, feed);
  await eventually(() => b.infos.length === 1 && f.infos.length === 1);
  await hub.publish(board, { v: 'old' });
  await hub.publish(feed, { n: 'old' });
  await eventually(() => b.messages().length === 1 && f.messages().length === 1);
  const oldEpoch = f.infos[0].epoch;

  await hub.restart();
  proxy.setTarget(hub.port);
  await eventually(() => f.infos.length === 2 && b.infos.length === 2, { timeoutMs: 15000, message: 'resubscribed' });
  assert.notEqual(f.infos[1].epoch, oldEpoch);
  assert.equal(f.infos[1].recovered, false);
  assert.equal(b.infos[1].recovered, false);
  await eventually(() => f.gaps().length === 1);
  assert.equal(f.gaps()[0].reason, 'epoch_changed');
  assert.equal(f.gaps()[0].previousEpoch, oldEpoch);
  assert.equal(b.gaps().length, 0);

  // The new epoch numbers from scratch: its lower seqs must still arrive.
  const s1 = await hub.publish(board, { v: 'new' });
  const s2 = await hub.publish(feed, { n: 'new' });
  await eventually(() => b.messages().at(-1)?.data.v === 'new' && f.messages().at(-1)?.data.n === 'new');
  assert.equal(b.sub.latest.seq, s1);
  assert.equal(f.messages().at(-1).seq, s2);
});

test('reactions: ack, refusal where not allowed, and stats with audience and counts', async (t) => {
  const { c } = newClient(t, hub.wsUrl);
  const board = topicFor('results');
  const feed = topicFor('clips');
  const b = collect(c, board);
  collect(c, feed);
  await eventually(() => b.infos.length === 1);
  await c.react(board, '🔥');
  await c.react(board, '🔥');
  await c.react(board, '👏');
  await assert.rejects(c.react(board, '🍕'), { code: 'bad_request' });
  await assert.rejects(c.react(feed, '🔥'), { code: 'forbidden' });
  // Counts are per window: the three reactions may straddle two windows.
  const stats = await eventually(
    () => b.events.find((e) => e.type === 'stats' && e.reactions['🔥'] >= 1),
    { timeoutMs: 8000, message: 'stats with the reactions sent' },
  );
  await eventually(() => b.events.some((e) => e.type === 'stats' && e.reactions['👏'] >= 1));
  const all = b.events.filter((e) => e.type === 'stats');
  assert.ok(all.every((e) => (e.reactions['🔥'] ?? 0) <= 2 && (e.reactions['👏'] ?? 0) <= 1), JSON.stringify(all));
  assert.ok(stats.audience >= 1);
  assert.ok(stats.windowMs > 0);
});

test('refused subscriptions end with the hub error', async (t) => {
  const { c } = newClient(t, hub.wsUrl);
  const sub = c.subscribe('nosuchns.a.b');
  await assert.rejects(sub[Symbol.asyncIterator]().next(), { code: 'unknown_namespace' });
});

test('state deltas from the real hub: every board exact, live, across a network cut and its resume', async (t) => {
  const { c, errors } = newClient(t);
  const board = topicFor('results');
  const names = ['Martina Sáblíková', 'Zoë Ødegård', 'Jutta Leerdam 🇳🇱', 'Miho Takagi', 'Béatrice Lamarche'];
  const state = (n) => ({
    heat: n,
    rows: Array.from({ length: 30 }, (_, i) => ({
      rank: i < n ? i + 1 : null,
      name: `${names[i % names.length]} ${i}`,
      time: i < n ? `1:5${i % 10}.${String((i * 37 + n) % 100).padStart(2, '0')}` : null,
    })),
  });
  const published = new Map();
  const publish = async (n) => {
    const seq = await hub.publish(board, state(n));
    published.set(seq, state(n));
    return seq;
  };
  await publish(0);
  const b = collect(c, board);
  await eventually(() => b.messages().length === 1);
  let last = 0;
  for (let n = 1; n <= 10; n++) last = await publish(n);
  await eventually(() => b.messages().at(-1)?.seq === last, { message: 'live boards' });
  proxy.block();
  proxy.dropAll();
  await eventually(() => c.state !== 'connected');
  for (let n = 11; n <= 14; n++) last = await publish(n);
  proxy.unblock();
  await eventually(() => b.messages().at(-1)?.seq === last, { timeoutMs: 10000, message: 'resumed' });
  for (let n = 15; n <= 29; n++) last = await publish(n);
  await eventually(() => b.messages().at(-1)?.seq === last, { message: 'live again' });
  for (const m of b.messages()) assert.deepEqual(m.data, published.get(m.seq), `seq ${m.seq}`);
  assert.deepEqual(b.infos.at(-1), { ...b.infos.at(-1), resumed: true, recovered: true });
  assert.deepEqual(errors, [], 'no delta failed');
  const metrics = await (await fetch(`http://${hub.internalAddr}/metrics`)).text();
  const metric = (name) => Number(new RegExp(`^${name} (\\d+)`, 'm').exec(metrics)?.[1] ?? 0);
  assert.ok(metric('tribune_delta_deliveries_total') >= 20, `the boards travelled as deltas (${metrics})`);
  // Node's ws offers permessage-deflate: the full boards went compressed.
  assert.ok(metric('tribune_deflate_connections_total') >= 1, 'deflate negotiated');
  assert.ok(metric('tribune_compressions_total') >= 1, 'full boards compressed');
});
