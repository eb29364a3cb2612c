// Tokens with the JS SDK against the real hub binary (embedded bus): a fan
// whose token provider hands out 6 s tokens (time compressed: the issue's
// 60 s tokens over 5 minutes become 6 s tokens over 60 s) on a 10 msg/s feed
// stays connected with every message in order through its refreshes; the
// token never appears in a URL; a refresh that grants less ends exactly
// the dropped subscription.

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

const SECRET = 'a-js-test-secret-that-is-long-enough-for-hs256';
const config = join(mkdtempSync(join(tmpdir(), 'tribune-js-tokens-')), 'hub.toml');
writeFileSync(
  config,
  `[auth]\nsecret = "${SECRET}"\nexpiry_grace_ms = 500\nmax_lifetime_secs = 10\n` +
    `[namespaces.premium]\nmode = "feed"\nretained = 2000\ntoken = true\n`,
);

let hub;
before(async () => {
  hub = await Hub.start(['--config', config]);
});
after(async () => {
  await hub?.stop();
});

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** An HS256 token for fan-1 granting `topics`, living `secs`. */
function token(topics, secs) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(JSON.stringify({ sub: 'fan-1', iat: now, exp: now + secs, topics }));
  const sig = createHmac('sha256', SECRET).update(`${head}.${claims}`).digest('base64url');
  return `${head}.${claims}.${sig}`;
}

/** A WebSocket constructor that records every URL it is given. */
function recordingWebSocket(urls) {
  return class extends WebSocket {
    constructor(url, protocols) {
      urls.push(String(url));
      super(url, protocols);
    }
  };
}

test('a fan with a token provider stays connected through many token lifetimes', async (t) => {
  const urls = [];
  let calls = 0;
  const c = new TribuneClient({
    url: hub.wsUrl,
    WebSocket: recordingWebSocket(urls),
    token: async () => {
      calls += 1;
      return token(['premium.final.'], 6);
    },
  });
  t.after(() => c.close());
  const states = [];
  const refreshes = [];
  const errors = [];
  c.on('state', (s) => states.push(s.state));
  c.on('token', (e) => refreshes.push(e));
  c.on('error', (e) => errors.push(e));
  const topic = `premium.final.js${process.pid}`;
  const events = [];
  c.subscribe(topic, { onEvent: (e) => events.push(e) });
  await c.ready();
  await eventually(() => refreshes.length === 1, { message: 'first token accepted' });
  const COUNT = 600;
  const seqs = [];
  const started = Date.now();
  for (let n = 0; n < COUNT; n++) {
    seqs.push(await hub.publish(topic, { n }));
    const next = started + (n + 1) * 100;
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, next - Date.now())));
  }
  await eventually(() => events.filter((e) => e.type === 'message').length === COUNT, {
    timeoutMs: 10000,
    message: 'every message',
  });
  const messages = events.filter((e) => e.type === 'message');
  assert.deepEqual(
    messages.map((m) => m.seq),
    seqs,
    'every message, once, in order',
  );
  assert.deepEqual(
    events.filter((e) => e.type === 'gap'),
    [],
    'zero gaps',
  );
  assert.deepEqual(states, ['connecting', 'connected'], 'zero closes');
  assert.deepEqual(errors, []);
  // The first token, then at least four refreshes on the same connection.
  assert.ok(refreshes.length >= 5, `${refreshes.length - 1} refreshes`);
  assert.equal(calls, refreshes.length);
  assert.ok(refreshes.every((r) => r.expiresAt > 0));
  assert.deepEqual(urls, [hub.wsUrl], 'one connection, no token in its URL');
});

test('first-frame auth reads a token topic; a narrowed refresh ends only the dropped topic', async (t) => {
  let calls = 0;
  const c = new TribuneClient({
    url: hub.wsUrl,
    WebSocket,
    token: async () => {
      calls += 1;
      return calls === 1 ? token(['premium.a.', 'premium.b.'], 3) : token(['premium.a.'], 3);
    },
  });
  t.after(() => c.close());
  const kept = [];
  const dropped = [];
  const ended = [];
  const a = `premium.a.js${process.pid}`;
  const b = `premium.b.js${process.pid}`;
  let acked = 0;
  const onSubscribed = () => (acked += 1);
  c.subscribe(a, { onEvent: (e) => kept.push(e), onSubscribed });
  c.subscribe(b, { onEvent: (e) => dropped.push(e), onUnsubscribed: (e) => ended.push(e), onError: () => {}, onSubscribed });
  // Both granted by the first token, sent in the first frame.
  await eventually(() => acked === 2, { message: 'both subscriptions acked' });
  const seqs = [];
  await hub.publish(b, { before: true });
  for (let n = 0; n < 30; n++) {
    seqs.push(await hub.publish(a, { n }));
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await eventually(() => kept.filter((e) => e.type === 'message').length === 30, { message: 'kept topic' });
  assert.deepEqual(
    kept.filter((e) => e.type === 'message').map((m) => m.seq),
    seqs,
  );
  assert.deepEqual(ended, [{ topic: b, code: 'forbidden' }]);
  assert.equal(dropped.filter((e) => e.type === 'message').length, 1, 'read before the narrowing');
  assert.ok(calls >= 2);
});
