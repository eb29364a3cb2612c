// The hub's admin page (/admin on the internal listener) in real headless
// Chromium (Debian's /usr/bin/chromium driven by playwright-core, like the
// widget tests beside it, which is why it lives here) against two real hubs
// on one real nats-server: with the key it shows both nodes, the loaded
// topics by audience, and a live tail that shows a published message as
// text; without the key, or with a wrong one, 401; a hub without an
// admin_key has no admin page. Screenshot: test-artifacts/admin.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import { Hub } from '../../js/test/support/hub.js';
import { eventually, repoRoot } from '../../js/test/support/util.js';
import { CHROMIUM, CHROMIUM_ARGS } from './support/browser.js';
import { startNats } from './support/nats.js';

const ARTIFACTS = process.env.TRIBUNE_ARTIFACTS ?? path.join(repoRoot, 'test-artifacts');
const KEY = randomBytes(24).toString('hex');
const RESULTS = `results.admin${process.pid}.race`;
const CLIPS = `clips.admin${process.pid}.reel`;
const NODES = [`admin-a-${process.pid}`, `admin-b-${process.pid}`];

let dir;
let nats;
let hubs = [];
let plainHub; // no admin_key: no admin page
let browser;
const fans = [];

/** A fan subscribed to `topic` on `hub`; resolves once acked. */
function fan(hub, topic) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(hub.wsUrl, 'tribune.v1');
    fans.push(ws);
    ws.on('error', reject);
    ws.on('open', () => ws.send(JSON.stringify({ type: 'subscribe', id: 1, topic })));
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type === 'ack' && frame.topic === topic) resolve(ws);
    });
  });
}

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  dir = mkdtempSync(path.join(os.tmpdir(), 'tribune-admin-'));
  nats = startNats(dir);
  const url = await nats.url;
  const config = path.join(dir, 'hub.toml');
  // The cluster key: on NATS a node counts (and the page shows) only the
  // statistics partials sealed with it.
  writeFileSync(config, `admin_key = "${KEY}"\n[stats]\nwindow_ms = 250\nkey = "${KEY}-stats"\n`);
  hubs = await Promise.all(NODES.map((name) => Hub.start(['--nats', url, '--config', config, '--node-name', name])));
  plainHub = await Hub.start();
  // Audience: 3 + 1 on the results topic, 2 on the clips topic.
  await Promise.all([
    fan(hubs[0], RESULTS),
    fan(hubs[0], RESULTS),
    fan(hubs[0], RESULTS),
    fan(hubs[1], RESULTS),
    fan(hubs[1], CLIPS),
    fan(hubs[1], CLIPS),
  ]);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
});

after(async () => {
  for (const ws of fans) ws.terminate();
  await browser?.close();
  await Promise.all([...hubs.map((h) => h.stop()), plainHub?.stop()]);
  nats?.child.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A page in a fresh context (with `credentials`, or none), closed when the test ends. */
async function openPage(t, credentials) {
  const context = await browser.newContext({ httpCredentials: credentials, viewport: { width: 1100, height: 900 } });
  t.after(() => context.close());
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && !/401|Unauthorized/.test(m.text()) && errors.push(m.text()));
  return { page, errors };
}

test('without the key, or with a wrong one: 401; no admin_key: no page', async (t) => {
  const base = `http://${hubs[0].internalAddr}`;
  const none = await fetch(`${base}/admin`);
  assert.equal(none.status, 401);
  assert.match(none.headers.get('www-authenticate') ?? '', /^Basic realm="tribune admin"/);
  const wrong = await fetch(`${base}/admin/api/cluster`, { headers: { authorization: `Bearer ${KEY}x` } });
  assert.equal(wrong.status, 401);
  const tail = await fetch(`${base}/admin/api/tail?topic=${RESULTS}`);
  assert.equal(tail.status, 401);
  const right = await fetch(`${base}/admin/api/cluster`, { headers: { authorization: `Bearer ${KEY}` } });
  assert.equal(right.status, 200);

  // Chromium without the key: the navigation meets the challenge and, with
  // nobody to type a key in headless mode, fails on it (the 401 itself is
  // checked above, where nothing answers challenges).
  const { page } = await openPage(t, undefined);
  const navigation = await page.goto(`${base}/admin`).then(
    (r) => `HTTP ${r.status()}`,
    (e) => e.message,
  );
  assert.match(navigation, /HTTP 401|ERR_INVALID_AUTH_CREDENTIALS/);
  assert.equal(await page.locator('#nodes').count(), 0);

  const plain = await fetch(`http://${plainHub.internalAddr}/admin`, { headers: { authorization: `Bearer ${KEY}` } });
  assert.equal(plain.status, 404, 'no admin_key, no admin page');
});

test('with the key: both nodes, topics by audience, a live tail rendered as text', async (t) => {
  const { page, errors } = await openPage(t, { username: 'ops', password: KEY });
  const res = await page.goto(`http://${hubs[1].internalAddr}/admin`);
  assert.equal(res.status(), 200);

  // Both nodes, from the statistics partials, with their connections.
  await eventually(
    async () => {
      const rows = await page.locator('#nodes tbody tr').evaluateAll((trs) =>
        trs.map((tr) => [...tr.cells].map((c) => c.textContent)),
      );
      const byName = Object.fromEntries(rows.map((r) => [r[0], r]));
      // Topics counted are those whose namespace shows figures (clips has
      // neither audience nor reactions: the statistics leave it out).
      return byName[NODES[0]]?.[1] === '3' && byName[NODES[1]]?.[1] === '3' && byName[NODES[0]][2] === '1' && byName[NODES[1]][2] === '1';
    },
    { timeoutMs: 15000, message: 'both nodes with 3 connections each (one topic each)' },
  );

  // Topics by audience, summed across the nodes.
  const topicRows = await eventually(
    async () => {
      const rows = await page.locator('#topics tbody tr').evaluateAll((trs) =>
        trs.map((tr) => [...tr.cells].slice(0, 3).map((c) => c.textContent)),
      );
      const ours = rows.filter((r) => r[0] === RESULTS || r[0] === CLIPS);
      return ours.length === 1 && ours[0][1] === '4' ? ours : null;
    },
    { timeoutMs: 15000, message: 'the results topic with its audience of 4 across both nodes' },
  );
  assert.deepEqual(topicRows, [[RESULTS, '4', '2']]);

  // The live tail of the results topic shows what is published, as text.
  await page.locator(`#topics tbody tr[data-topic="${RESULTS}"] button`).click();
  await eventually(async () => /tailing/.test(await page.locator('#tail-state').textContent()), {
    timeoutMs: 10000,
    message: 'the tail is open',
  });
  const hostile = '<img src=x onerror="window.__pwned=1">';
  await hubs[0].publish(RESULTS, { lap: 7, note: hostile });
  const line = await eventually(
    async () => {
      const lines = await page.locator('#tail-lines li').allTextContents();
      return lines.find((l) => l.includes('"lap":7'));
    },
    { timeoutMs: 10000, message: 'the published message in the tail' },
  );
  assert.ok(line.includes(hostile.replaceAll('"', '\\"')), line);
  assert.equal(await page.locator('#tail-lines img').count(), 0, 'payloads are text, never markup');
  assert.equal(await page.evaluate(() => window.__pwned), undefined);

  await page.screenshot({ path: path.join(ARTIFACTS, 'admin.png'), fullPage: true });
  assert.deepEqual(errors, []);
});
