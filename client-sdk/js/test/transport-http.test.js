// The JS SDK's HTTP fallback (PROTOCOL.md section 11) in Node against the
// real hub binary (embedded bus), behind a proxy that refuses websocket
// upgrades: the client moves to HTTP after two refused opens, and state
// deltas, feed continuity, reactions and a resume after the streams are cut
// behave as on the websocket; a stream that goes silent is noticed within
// two heartbeats; `transport: 'websocket'` never falls back; a token
// travels in `Authorization` only and its refreshes lose nothing.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { TribuneClient } from '../src/tribune.js';
import { Hub } from './support/hub.js';
import { eventually } from './support/util.js';
import { startBlockingProxy } from '../../widget/test/support/blocking-proxy.js';

let hub;
let proxy;
let unique = 0;
const topicFor = (ns) => `${ns}.http${process.pid}.t${++unique}`;

before(async () => {
  hub = await Hub.start([]);
  proxy = await startBlockingProxy([hub.port]);
});

after(async () => {
  await proxy?.close();
  await hub?.stop();
});

function newClient(t, options = {}) {
  const c = new TribuneClient({ url: proxy.wsUrl, WebSocket, backoff: { initialMs: 50, maxMs: 400 }, ...options });
  const errors = [];
  c.on('error', (e) => errors.push(e));
  t.after(() => c.close());
  return { c, errors };
}

async function follow(c, topic) {
  const messages = [];
  await new Promise((resolve, reject) => {
    c.subscribe(topic, { onMessage: (m) => messages.push(m), onSubscribed: resolve, onError: reject });
  });
  return messages;
}

test('refused upgrades: HTTP after two, with deltas, continuity, reactions and resume', async (t) => {
  // The test holds the client's HTTP requests while the streams are cut,
  // so that the messages published then are missed for sure (the client
  // is back within a backoff of at most 100 ms otherwise).
  let hold = null;
  const held = async (url, init) => {
    await hold;
    return fetch(url, init);
  };
  const { c, errors } = newClient(t, { fetch: held });
  const states = [];
  c.on('state', ({ state }) => states.push(state));
  const board = topicFor('results');
  const feed = topicFor('clips');
  const refusedBefore = proxy.stats.refusedUpgrades;
  const boards = await follow(c, board);
  assert.equal(c.transport, 'http');
  assert.equal(c.state, 'connected');
  assert.equal(proxy.stats.refusedUpgrades - refusedBefore, 2, 'two refused opens, then HTTP');
  const clips = await follow(c, feed);

  // State topics get Fossil deltas over SSE too; each board is rebuilt exact.
  const rows = (n) => Array.from({ length: 20 }, (_, i) => ({ rank: i + 1, name: `Team ${i}`, result: `${n}:${i}` }));
  for (let n = 0; n < 5; n++) await hub.publish(board, { kind: 'results', n, rows: rows(n) });
  await eventually(() => boards.length === 5, { message: 'five boards' });
  boards.forEach((m, n) => assert.deepEqual(m.data, { kind: 'results', n, rows: rows(n) }));

  const seqs = [];
  for (let n = 0; n < 10; n++) seqs.push(await hub.publish(feed, { n }));
  await eventually(() => clips.length === 10, { message: 'ten clips' });
  assert.deepEqual(
    clips.map((m) => m.seq),
    seqs,
  );

  // A reaction: POST /v1/react with the stream's key.
  await c.react(board, '🔥');
  await assert.rejects(c.react(board, '🍕'), (e) => e.code === 'bad_request');

  // The streams are cut: the client comes back (the websocket is tried
  // once, refused, then HTTP) and resumes exactly. `reconnecting` lasts
  // the backoff's draw (0 to 100 ms here): the states are recorded, not
  // polled, or a short draw is missed and the client is seen connected.
  let release;
  hold = new Promise((r) => (release = r));
  states.length = 0;
  proxy.dropAll();
  await eventually(() => states.includes('reconnecting'), { message: 'noticed the cut' });
  const missed = [];
  for (let n = 10; n < 13; n++) missed.push(await hub.publish(feed, { n }));
  assert.equal(clips.length, 10, 'nothing comes while the requests are held');
  release();
  hold = null;
  await eventually(() => clips.length === 13 && c.state === 'connected', { message: 'resumed', timeoutMs: 10000 });
  assert.equal(c.transport, 'http');
  assert.deepEqual(
    clips.slice(10).map((m) => m.seq),
    missed,
    'exactly the missed messages',
  );
  assert.deepEqual(
    errors.map((e) => e.code),
    [],
  );
});

test('a stream that goes silent (no FIN, no error) ends the transport within two heartbeats', async (t) => {
  // A connection that a NAT or a proxy forgets fails no `fetch` body: its
  // bytes just stop. The test's fetch stops passing the bytes of one
  // stream on request (later streams flow); the other topic's stream stays
  // busy, so only the transport's per-stream rule can notice.
  const dir = mkdtempSync(join(tmpdir(), 'tribune-js-http-hb-'));
  const config = join(dir, 'hub.toml');
  const HEARTBEAT_MS = 200;
  writeFileSync(config, `heartbeat_ms = ${HEARTBEAT_MS}\n`);
  const hbHub = await Hub.start(['--config', config]);
  t.after(() => hbHub.stop());
  const silencers = new Map();
  const silenceable = async (url, init) => {
    const res = await fetch(url, init);
    const topic = new URL(url).searchParams.get('topic');
    if (!topic || !res.ok || !res.body) return res;
    let silent = false;
    silencers.set(topic, () => (silent = true));
    const body = res.body.pipeThrough(
      new TransformStream({
        transform(chunk, out) {
          if (!silent) out.enqueue(chunk);
        },
      }),
    );
    return new Response(body, { status: res.status, headers: res.headers });
  };
  const c = new TribuneClient({
    url: hbHub.wsUrl,
    WebSocket,
    transport: 'http',
    fetch: silenceable,
    backoff: { initialMs: 50, maxMs: 400 },
  });
  t.after(() => c.close());
  const errors = [];
  c.on('error', (e) => errors.push(e));
  const reasons = [];
  c.on('state', ({ state, reason }) => state === 'reconnecting' && reasons.push(reason));
  const quiet = topicFor('clips');
  const busy = topicFor('clips');
  const got = await follow(c, quiet);
  const other = await follow(c, busy);
  const before = await hbHub.publish(quiet, { n: 0 });
  await eventually(() => got.length === 1, { message: 'first message' });

  silencers.get(quiet)();
  const cutAt = Date.now();
  let busyRunning = true;
  const busyLoop = (async () => {
    while (busyRunning) {
      await hbHub.publish(busy, { tick: true });
      await new Promise((r) => setTimeout(r, 20));
    }
  })().catch(() => {}); // a failed test stops the hub under it
  t.after(() => {
    busyRunning = false;
    return busyLoop;
  });
  const missed = [await hbHub.publish(quiet, { n: 1 })];
  await eventually(() => reasons.length > 0, { message: 'noticed the silent stream' });
  const noticedMs = Date.now() - cutAt;
  busyRunning = false;
  await busyLoop;
  // Two heartbeats and one check's interval, plus slack for a loaded machine.
  assert.ok(noticedMs <= 2 * HEARTBEAT_MS + HEARTBEAT_MS / 2 + 1000, `noticed after ${noticedMs} ms`);
  assert.match(reasons[0], /no sign of life/);
  assert.ok(other.length > 0, 'the other stream was busy');
  missed.push(await hbHub.publish(quiet, { n: 2 }));
  await eventually(() => got.length === 3 && c.state === 'connected', { message: 'resumed', timeoutMs: 10000 });
  assert.deepEqual(
    got.map((m) => m.seq),
    [before, ...missed],
  );
  assert.deepEqual(
    errors.map((e) => e.code),
    [],
  );
});

test("transport: 'websocket' never falls back", async (t) => {
  const { c } = newClient(t, { transport: 'websocket' });
  c.subscribe(topicFor('results'));
  c.connect();
  await eventually(() => proxy.stats.refusedUpgrades >= 3, { message: 'retries' });
  assert.equal(c.transport, 'websocket');
  assert.notEqual(c.state, 'connected');
});

test('on HTTP a token stays in Authorization and a refresh carries the streams over without loss', async (t) => {
  const SECRET = 'a-js-http-test-secret-long-enough-for-hs256';
  const dir = mkdtempSync(join(tmpdir(), 'tribune-js-http-'));
  const config = join(dir, 'hub.toml');
  writeFileSync(
    config,
    `[auth]\nsecret = "${SECRET}"\nexpiry_grace_ms = 500\n[namespaces.premium]\nmode = "feed"\nretained = 100\ntoken = true\n`,
  );
  const tokenHub = await Hub.start(['--config', config]);
  t.after(() => tokenHub.stop());
  const token = (secs) => {
    const now = Math.floor(Date.now() / 1000);
    const head = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');
    const claims = Buffer.from(JSON.stringify({ sub: 'fan-1', iat: now, exp: now + secs, topics: ['premium.'] })).toString(
      'base64url',
    );
    const sig = createHmac('sha256', SECRET).update(`${head}.${claims}`).digest('base64url');
    return `${head}.${claims}.${sig}`;
  };
  const urls = [];
  const fetchSpy = (url, init) => {
    urls.push(String(url));
    return fetch(url, init);
  };
  let issued = 0;
  const c = new TribuneClient({
    url: tokenHub.wsUrl,
    WebSocket,
    transport: 'http',
    fetch: fetchSpy,
    token: () => {
      issued += 1;
      return token(3);
    },
  });
  t.after(() => c.close());
  const topic = `premium.http${process.pid}.feed`;
  const got = await follow(c, topic);
  const seqs = [];
  // Through at least two refreshes (3 s tokens, refreshed in their second half).
  const until = Date.now() + 4500;
  while (Date.now() < until) {
    seqs.push(await tokenHub.publish(topic, { n: seqs.length }));
    await new Promise((r) => setTimeout(r, 100));
  }
  await eventually(() => got.length === seqs.length, { message: 'every message', timeoutMs: 10000 });
  assert.deepEqual(
    got.map((m) => m.seq),
    seqs,
    'every message once, in order, across refreshes',
  );
  assert.ok(issued >= 2, `tokens issued: ${issued}`);
  assert.equal(c.state, 'connected');
  assert.ok(urls.some((u) => u.includes('/v1/sse')));
  assert.ok(!urls.some((u) => u.includes('token') || u.includes('eyJ')), `a token in a URL: ${urls.join(' ')}`);
});

test('on the fallback the websocket is probed again, and the client moves back when it works', async (t) => {
  const own = await startBlockingProxy([hub.port]);
  t.after(() => own.close());
  const c = new TribuneClient({ url: own.wsUrl, WebSocket, backoff: { initialMs: 50, maxMs: 400 }, wsProbeMs: 300 });
  t.after(() => c.close());
  const topic = topicFor('clips');
  const got = await follow(c, topic);
  assert.equal(c.transport, 'http');
  // Still blocked: probes fail, the client stays on HTTP and keeps working.
  await new Promise((r) => setTimeout(r, 700));
  assert.equal(c.transport, 'http');
  assert.ok(own.stats.refusedUpgrades >= 3, `probes: ${own.stats.refusedUpgrades - 2}`);
  const first = await hub.publish(topic, { n: 1 });
  await eventually(() => got.length === 1, { message: 'over HTTP' });
  // The proxy lets upgrades through: the next probe moves the client back
  // (no stream was cut), and the feed goes on without a hole or a repeat.
  own.allowUpgrades();
  await eventually(() => c.transport === 'websocket' && c.state === 'connected', {
    message: 'back on the websocket',
    timeoutMs: 10000,
  });
  assert.ok(own.stats.upgrades >= 2, 'the probe and the connection');
  const second = await hub.publish(topic, { n: 2 });
  await eventually(() => got.length === 2, { message: 'over the websocket' });
  assert.deepEqual(
    got.map((m) => m.seq),
    [first, second],
  );
});
