// TribuneClient.history() against the real hub binary (embedded bus):
// paging from the newest to the oldest returns every retained message once,
// in order, with the payloads as published; the token travels in the
// Authorization header (never the URL) and grants as for subscribe; the
// hub's refusals reject with its code.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { TribuneClient, historyUrl } from '../src/tribune.js';
import { Hub } from './support/hub.js';

const SECRET = 'a-js-history-secret-that-is-long-enough-for-hs256';
const config = join(mkdtempSync(join(tmpdir(), 'tribune-js-history-')), 'hub.toml');
writeFileSync(
  config,
  `[auth]\nsecret = "${SECRET}"\n` +
    `[namespaces.kept]\nmode = "feed"\nretained = 30\nretained_secs = 600\nexpected_rate = 1\n` +
    `[namespaces.premium]\nmode = "feed"\nretained = 10\ntoken = true\n`,
);

let hub;
before(async () => {
  hub = await Hub.start(['--config', config]);
});
after(async () => {
  await hub?.stop();
});

const b64url = (buf) => Buffer.from(buf).toString('base64url');

function token(topics) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(JSON.stringify({ sub: 'fan-h', iat: now, exp: now + 600, topics }));
  const sig = createHmac('sha256', SECRET).update(`${head}.${claims}`).digest('base64url');
  return `${head}.${claims}.${sig}`;
}

/** A fetch that records what it was asked, then asks the hub. */
function recordingFetch(calls) {
  return (url, init) => {
    calls.push({ url, headers: { ...(init?.headers ?? {}) } });
    return fetch(url, init);
  };
}

test('historyUrl follows the websocket URL', () => {
  assert.equal(historyUrl('wss://hub.example.org/v1/ws'), 'https://hub.example.org/v1/history');
  assert.equal(historyUrl('ws://127.0.0.1:8080/base/v1/ws?x=1'), 'http://127.0.0.1:8080/base/v1/history');
});

test('paging from the newest to the oldest returns every retained message once, in order', async (t) => {
  const topic = `kept.js${process.pid}.paging`;
  // 45 messages, above the count (30) but within the ten-minute window (and
  // its 600 × 1 depth): every one is retained.
  const stored = [];
  for (let i = 0; i < 45; i++) stored.push(await hub.publish(topic, { i, name: `Sáblíková ${i}` }));
  const calls = [];
  const client = new TribuneClient({ url: hub.wsUrl, WebSocket, token: () => token(['premium.']) });
  t.after(() => client.close());
  const pages = [];
  let before;
  for (let n = 0; n < 20; n++) {
    const page = await client.history(topic, { before, limit: 8, fetch: recordingFetch(calls) });
    assert.ok(page.messages.length <= 8);
    assert.deepEqual(page.gaps, []);
    assert.match(page.epoch, /^TRIBUNE@/);
    pages.unshift(page.messages);
    if (page.before === null) break;
    assert.equal(page.before, page.messages[0].seq, 'the next page starts before this one');
    before = page.before;
  }
  const all = pages.flat();
  assert.deepEqual(all.map((m) => m.seq), stored);
  all.forEach((m, i) => {
    assert.deepEqual(m.data, { i, name: `Sáblíková ${i}` });
    assert.equal(m.replay, true);
    assert.equal(m.prev, i === 0 ? 0 : stored[i - 1]);
  });
  // The token went in the header, never in the URL; no connection was opened.
  assert.ok(calls.length >= 6);
  for (const c of calls) {
    assert.ok(!c.url.includes('token'), c.url);
    assert.match(c.headers.authorization, /^Bearer ey/);
  }
  assert.equal(client.state, 'idle');
});

test('grants as for subscribe; refusals reject with the hub code', async (t) => {
  const topic = `premium.js${process.pid}.gold`;
  const seq = await hub.publish(topic, { medal: 'gold' });
  const granted = new TribuneClient({ url: hub.wsUrl, WebSocket, token: token(['premium.']) });
  const anonymous = new TribuneClient({ url: hub.wsUrl, WebSocket });
  const other = new TribuneClient({ url: hub.wsUrl, WebSocket, token: token(['kept.']) });
  t.after(() => [granted, anonymous, other].forEach((c) => c.close()));
  const page = await granted.history(topic);
  assert.deepEqual(page.messages.map((m) => [m.seq, m.data.medal]), [[seq, 'gold']]);
  assert.equal(page.before, null);
  await assert.rejects(anonymous.history(topic), (e) => e.code === 'unauthorized' && e.details.status === 401);
  await assert.rejects(other.history(topic), (e) => e.code === 'forbidden' && e.details.status === 403);
  await assert.rejects(anonymous.history('nowhere.x'), (e) => e.code === 'not_found');
  // Checked before anything is sent.
  const calls = [];
  const sent = recordingFetch(calls);
  await assert.rejects(anonymous.history(topic, { limit: 101, fetch: sent }), (e) => e.code === 'bad_request');
  await assert.rejects(anonymous.history(topic, { before: 0, fetch: sent }), (e) => e.code === 'bad_request');
  await assert.rejects(anonymous.history('Bad..topic', { fetch: sent }), (e) => e.code === 'bad_request');
  assert.deepEqual(calls, []);
});
