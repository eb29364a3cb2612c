// The widget behind a proxy that refuses websocket upgrades (an office's or a
// hotel's), in real headless Chromium, with two real hubs on one real
// nats-server behind the proxy's round robin (no stickiness): the unchanged
// widget goes live over the HTTP fallback (PROTOCOL.md section 11) within
// 5 s, 100 feed messages arrive with their prev chain whole, a reaction is
// counted; once the proxy lets upgrades through, the next reconnect is a
// websocket again. And the browser's own EventSource (no SDK) resumes by
// itself on the other node after a cut, with Last-Event-ID: exactly the
// missed messages, `recovered` true.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { addWidget, launchChromium, openPage } from './support/browser.js';
import { startBlockingProxy } from './support/blocking-proxy.js';
import { Hub } from '../../js/test/support/hub.js';
import { repoRoot } from '../../js/test/support/util.js';
import { startNats } from './support/nats.js';

const ARTIFACTS = process.env.TRIBUNE_ARTIFACTS ?? path.join(repoRoot, 'test-artifacts');
const RESULTS = `results.fallback${process.pid}.race`;
const CLIPS = `clips.fallback${process.pid}.reel`;

let dir;
let nats;
let hubs = [];
let proxy;
let browser;

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  dir = mkdtempSync(path.join(os.tmpdir(), 'tribune-fallback-'));
  nats = startNats(dir);
  const url = await nats.url;
  const config = path.join(dir, 'hub.toml');
  // The cluster key: stream reaction keys and statistics partials are
  // checked with it on every node.
  writeFileSync(config, `[stats]\nwindow_ms = 250\nkey = "${randomBytes(24).toString('hex')}"\n`);
  hubs = await Promise.all(
    ['a', 'b'].map((n) => Hub.start(['--nats', url, '--config', config, '--node-name', `fallback-${n}-${process.pid}`])),
  );
  proxy = await startBlockingProxy(hubs.map((h) => h.port));
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await proxy?.close();
  await Promise.all(hubs.map((h) => h.stop()));
  nats?.child.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The page's shared SDK client (the one the widgets use): its transport and state. */
const clientView = (page, wsUrl) =>
  page.evaluate(async (wsUrl) => {
    const { sharedClient } = await import('/sdk/tribune.js');
    const c = sharedClient(wsUrl);
    return { transport: c.transport, state: c.state };
  }, wsUrl);

test('behind a proxy that refuses upgrades the widget is live over HTTP, whole, and moves back', async (t) => {
  const { page, errors } = await openPage(browser.context, t, `${proxy.httpUrl}/`);
  const started = Date.now();
  const results = await addWidget(page, 'tribune-results', { topic: RESULTS });
  const tookMs = Date.now() - started;
  t.diagnostic(`behind the blocking proxy: Live after ${tookMs} ms`);
  assert.ok(tookMs < 5000, `live after ${tookMs} ms`);
  assert.equal(await page.locator(`#${results} .conn`).textContent(), 'Live');
  assert.ok(proxy.stats.refusedUpgrades >= 2, `upgrades refused: ${proxy.stats.refusedUpgrades}`);
  assert.equal(proxy.stats.upgrades, 0);
  assert.deepEqual(await clientView(page, proxy.wsUrl), { transport: 'http', state: 'connected' });

  // A feed through the fallback: every message, in order, the prev chain whole.
  const clips = await addWidget(page, 'tribune-clips', { topic: CLIPS, max: '5' });
  await page.evaluate(
    async ({ wsUrl, topic }) => {
      const { sharedClient } = await import('/sdk/tribune.js');
      const c = sharedClient(wsUrl);
      window.feed = { got: [], errors: [], acked: false, client: c };
      c.on('error', (e) => window.feed.errors.push(`${e.code}: ${e.message}`));
      c.subscribe(topic, {
        onMessage: (m) => window.feed.got.push({ seq: m.seq, prev: m.prev, n: m.data.n }),
        onGap: (g) => window.feed.errors.push(`gap ${JSON.stringify(g)}`),
        onSubscribed: () => {
          window.feed.acked = true;
        },
      });
    },
    { wsUrl: proxy.wsUrl, topic: CLIPS },
  );
  await page.waitForFunction(() => window.feed.acked, null, { timeout: 10000 });
  const published = [];
  for (let n = 0; n < 100; n++) {
    const hub = hubs[n % 2];
    published.push(
      await hub.publish(CLIPS, { kind: 'clip', id: `c${n}`, title: `Clip ${n}`, n, url: 'https://example.org/c.mp4' }),
    );
  }
  await page.waitForFunction(() => window.feed.got.length >= 100, null, { timeout: 20000 });
  const feed = await page.evaluate(() => ({ got: window.feed.got, errors: window.feed.errors }));
  assert.deepEqual(feed.errors, []);
  assert.deepEqual(
    feed.got.map((m) => m.seq),
    published,
    'every message once, in order',
  );
  assert.deepEqual(
    feed.got.map((m) => m.n),
    [...Array(100).keys()],
  );
  for (let i = 1; i < feed.got.length; i++) {
    assert.equal(feed.got[i].prev, feed.got[i - 1].seq, `prev of ${feed.got[i].seq}`);
  }
  await page.waitForFunction(
    (id) => document.getElementById(id).shadowRoot.textContent.includes('Clip 99'),
    clips,
    { timeout: 5000 },
  );

  // A reaction goes out as POST /v1/react (to either node) and is counted.
  await page.locator(`#${results} button.react[data-reaction="🔥"]`).click();
  await page.waitForFunction(
    (id) => Number(document.getElementById(id).shadowRoot.querySelector('button[data-reaction="🔥"] .count').textContent) >= 1,
    results,
    { timeout: 10000 },
  );
  await page.screenshot({ path: path.join(ARTIFACTS, 'fallback.png'), fullPage: true });

  // The proxy is gone from the path: the next reconnect is a websocket.
  proxy.allowUpgrades();
  proxy.dropAll();
  // (A synchronous check: the client was kept on the window above.)
  await page.waitForFunction(
    () => window.feed.client.transport === 'websocket' && window.feed.client.state === 'connected',
    null,
    { timeout: 15000, polling: 100 },
  );
  assert.ok(proxy.stats.upgrades >= 1, 'a websocket went through');
  await page.locator(`#${results} .conn[data-state="connected"]`).waitFor({ timeout: 10000 });
  // Still whole on the websocket: the next message continues the chain.
  const next = await hubs[0].publish(CLIPS, { kind: 'clip', id: 'c100', title: 'Clip 100', n: 100, url: 'https://example.org/c.mp4' });
  await page.waitForFunction((seq) => window.feed.got.some((m) => m.seq === seq), next, { timeout: 10000 });
  const after = await page.evaluate(() => ({ got: window.feed.got, errors: window.feed.errors }));
  assert.deepEqual(after.errors, []);
  assert.equal(after.got.at(-1).seq, next);
  assert.equal(after.got.at(-1).prev, published.at(-1));
  assert.equal(after.got.length, 101, 'nothing twice across the move');
  // The browser logs each refused upgrade itself; nothing else went wrong.
  assert.deepEqual(
    errors.filter((e) => !/WebSocket connection to .* failed: .*403/.test(e)),
    [],
  );
});

test("a browser's own EventSource resumes by itself on the other node with Last-Event-ID", async (t) => {
  const { page, errors } = await openPage(browser.context, t, `${proxy.httpUrl}/`);
  const topic = `clips.fallback${process.pid}.es`;
  t.after(() => proxy.only(null));
  proxy.only(hubs[0].port);
  await page.evaluate((topic) => {
    window.es = { messages: [], acks: [], welcomes: [] };
    const source = new EventSource(`/v1/sse?topic=${encodeURIComponent(topic)}`);
    window.es.source = source;
    source.onmessage = (e) => window.es.messages.push({ id: e.lastEventId, frame: JSON.parse(e.data) });
    source.addEventListener('ack', (e) => window.es.acks.push(JSON.parse(e.data)));
    source.addEventListener('welcome', (e) => window.es.welcomes.push(JSON.parse(e.data).node));
  }, topic);
  await page.waitForFunction(() => window.es.acks.length === 1, null, { timeout: 10000 });
  const seqs = [];
  for (let n = 0; n < 5; n++) seqs.push(await hubs[0].publish(topic, { n }));
  await page.waitForFunction(() => window.es.messages.length === 5, null, { timeout: 10000 });
  // The stream is cut (a proxy restart, a node gone): messages are
  // published meanwhile; the browser reconnects on its own (the stream's
  // `retry: 1000`), through the round robin to the other node, sending
  // Last-Event-ID.
  proxy.only(hubs[1].port);
  proxy.dropAll();
  for (let n = 5; n < 10; n++) seqs.push(await hubs[1].publish(topic, { n }));
  await page.waitForFunction(() => window.es.acks.length === 2 && window.es.messages.length >= 10, null, {
    timeout: 15000,
  });
  const es = await page.evaluate(() => ({ messages: window.es.messages, acks: window.es.acks, welcomes: window.es.welcomes }));
  await page.evaluate(() => window.es.source.close());
  assert.equal(es.acks[1].recovered, true, JSON.stringify(es.acks[1]));
  assert.deepEqual(
    es.welcomes,
    hubs.map((_, i) => `fallback-${'ab'[i]}-${process.pid}`),
    'resumed on the other node',
  );
  assert.deepEqual(
    es.messages.map((m) => m.frame.seq),
    seqs,
    'exactly once, in order',
  );
  assert.deepEqual(
    es.messages.map((m) => m.frame.data.n),
    [...Array(10).keys()],
  );
  assert.equal(es.messages[9].id, `${es.acks[0].epoch}:${seqs[9]}`);
  assert.deepEqual(errors, []);
});
