// The web widgets in real headless Chromium (Debian's /usr/bin/chromium driven
// by playwright-core) against the real hub binary: the demo page, live
// updates, text-only rendering of hostile payloads, reconnecting, 320 px
// layout, reactions and stats, embedding on a foreign origin, the notice
// where clips were lost (against the scripted fake hub), and the URL layout
// (/widget/ beside /sdk/) that the widget's imports rely on, and a widget
// with a token that never puts it in a URL (first-frame `auth`).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { startFakeHub } from '../../js/test/support/fake-hub.js';
import { addWidget, launchChromium, openPage as openPageOf } from './support/browser.js';
import { Hub, startProxy } from '../../js/test/support/hub.js';
import { eventually, repoRoot } from '../../js/test/support/util.js';

const ARTIFACTS = process.env.TRIBUNE_ARTIFACTS ?? path.join(repoRoot, 'test-artifacts');
const DEMO_RESULTS = 'results.demo2026.speed-skating.mixed-team-sprint';
const DEMO_CLIPS = 'clips.demo2026.speed-skating';

let demoHub; // runs the simulated event (--demo)
let hub; // quiet hub for scripted payloads, behind a proxy so it can restart
let tokenHub; // verifies tokens: a `premium` namespace needs one
const TOKEN_SECRET = 'a-browser-test-secret-long-enough-for-hs256';
let proxy;
let browser;
let context;
let unique = 0;
const topicFor = (ns) => `${ns}.browser${process.pid}.t${++unique}`;

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const tokenConfig = path.join(mkdtempSync(path.join(os.tmpdir(), 'tribune-widget-')), 'hub.toml');
  writeFileSync(
    tokenConfig,
    `[auth]\nsecret = "${TOKEN_SECRET}"\n[namespaces.premium]\nmode = "state"\nretained = 1\ntoken = true\n`,
  );
  [demoHub, hub, tokenHub] = await Promise.all([
    Hub.start(['--demo']),
    Hub.start(),
    Hub.start(['--config', tokenConfig]),
  ]);
  proxy = await startProxy(hub.port);
  browser = await launchChromium();
  context = browser.context;
});

after(async () => {
  await browser?.close();
  await proxy?.close();
  await Promise.all([demoHub?.stop(), hub?.stop(), tokenHub?.stop()]);
});

const openPage = (t, url, options) => openPageOf(context, t, url, options);

const shadowText = (page, id) => page.locator(`#${id}`).evaluate((el) => el.shadowRoot.textContent);

function board(name, rows, extra = {}) {
  return {
    kind: 'results',
    event: { id: 'x', name, venue: 'St. Moritz', phase: 'Heat 1', status: 'live', ...extra },
    rows,
  };
}

test('the demo page loads, shows the live event and its clips; screenshots', async (t) => {
  const { page, errors } = await openPage(t, `${demoHub.httpUrl}/`);
  assert.match(await page.title(), /Tribune/);
  const defined = await page.evaluate(() => [!!customElements.get('tribune-results'), !!customElements.get('tribune-clips')]);
  assert.deepEqual(defined, [true, true]);
  assert.equal(await page.locator('tribune-results').getAttribute('topic'), DEMO_RESULTS);
  assert.equal(await page.locator('tribune-clips').getAttribute('topic'), DEMO_CLIPS);
  await page.locator('tribune-results .conn[data-state="connected"]').waitFor({ timeout: 10000 });
  await page.locator('tribune-results tbody tr').first().waitFor({ timeout: 15000 });
  await page.locator('tribune-clips li').first().waitFor({ timeout: 20000 });
  // Table semantics and the live region are in place.
  assert.equal(await page.locator('tribune-results thead th[scope="col"]').count(), 4);
  assert.ok((await page.locator('tribune-results tbody th[scope="row"]').count()) >= 1);
  assert.equal(await page.locator('tribune-results [aria-live="polite"]').count(), 1);
  assert.equal(await page.locator('tribune-clips ol[aria-live="polite"]').count(), 1);
  assert.match(await page.locator('tribune-results .updated').textContent(), /^Updated /);
  const snippet = await page.locator('#snippet').textContent();
  assert.ok(snippet.includes(`${demoHub.httpUrl}/widget/tribune-widget.js`), snippet);
  // Let a few updates and a stats window land, then keep pictures of it.
  await page.locator('tribune-results .audience:not([hidden])').waitFor({ timeout: 10000 });
  // This page is in the audience: the count reaches at least 1.
  await page.waitForFunction(
    () => /^[1-9][\d,]* watching$/.test(document.querySelector('tribune-results').shadowRoot.querySelector('.audience').textContent),
    null,
    { timeout: 10000 },
  );
  // The demo's simulated crowd reacts: its counts reach the meters.
  await page.waitForFunction(
    () => [...document.querySelector('tribune-results').shadowRoot.querySelectorAll('.react .count')].some((c) => c.textContent !== '0'),
    null,
    { timeout: 15000 },
  );
  // Reduced motion: the pictures show settled meters and rows, not a frame
  // in the middle of a transition.
  await page.emulateMedia({ reducedMotion: 'reduce' });
  await page.screenshot({ path: path.join(ARTIFACTS, 'demo.png'), fullPage: true });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ path: path.join(ARTIFACTS, 'demo-dark.png'), fullPage: true });
  await page.emulateMedia({ colorScheme: 'light' });
  assert.deepEqual(errors, []);
});

test('at 320 px wide the demo page has no horizontal scroll', async (t) => {
  const { page } = await openPage(t, `${demoHub.httpUrl}/`);
  await page.setViewportSize({ width: 320, height: 900 });
  await page.locator('tribune-results tbody tr').first().waitFor({ timeout: 15000 });
  await page.locator('tribune-clips li').first().waitFor({ timeout: 20000 });
  const sizes = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    client: document.documentElement.clientWidth,
    body: document.body.scrollWidth,
    results: document.querySelector('tribune-results').getBoundingClientRect().right,
    clips: document.querySelector('tribune-clips').getBoundingClientRect().right,
    table: document.querySelector('tribune-results').shadowRoot.querySelector('table').getBoundingClientRect().right,
  }));
  assert.equal(sizes.client, 320);
  assert.ok(sizes.scroll <= sizes.client, JSON.stringify(sizes));
  assert.ok(sizes.body <= 320, JSON.stringify(sizes));
  assert.ok(sizes.results <= 320 && sizes.clips <= 320 && sizes.table <= 320, JSON.stringify(sizes));
  await page.emulateMedia({ reducedMotion: 'reduce' });
  await page.screenshot({ path: path.join(ARTIFACTS, 'demo-320.png'), fullPage: true });
});

test('a result published through /v1/publish shows on the board within a second', async (t) => {
  const { page, errors } = await openPage(t, `${proxy.httpUrl}/`);
  const topic = topicFor('results');
  const id = await addWidget(page, 'tribune-results', { topic });
  await hub.publish(
    topic,
    board('Relay final', [
      { rank: 1, name: 'Team Alpha', members: ['A (NOR)', 'B (ITA)'], noc: 'MIX', result: '2:09.47', gap: null, status: 'ok' },
      { rank: 2, name: 'Team Beta', noc: 'MIX', result: '2:10.02', gap: '+0.55', status: 'ok' },
    ]),
  );
  await page.locator(`#${id} tbody tr`).nth(1).waitFor({ timeout: 5000 });
  const published = Date.now();
  await hub.publish(
    topic,
    board('Relay final', [
      { rank: 1, name: 'Team Beta', noc: 'MIX', result: '2:08.90', gap: null, status: 'ok' },
      { rank: 2, name: 'Team Alpha', noc: 'MIX', result: '2:09.47', gap: '+0.57', status: 'ok' },
      { rank: null, name: 'Team Gamma', noc: 'MIX', result: null, gap: null, status: 'dnf' },
    ]),
  );
  await page.waitForFunction(
    (id) => document.getElementById(id).shadowRoot.querySelector('tbody tr th')?.textContent.startsWith('Team Beta'),
    id,
    { timeout: 1000, polling: 20 },
  );
  const latencyMs = Date.now() - published;
  t.diagnostic(`publish → board: ${latencyMs} ms`);
  const rows = await page.locator(`#${id} tbody tr`).evaluateAll((trs) =>
    trs.map((tr) => [...tr.children].map((c) => c.textContent)),
  );
  assert.deepEqual(rows, [
    ['1', 'Team BetaMIX', '2:08.90', ''],
    ['2', 'Team AlphaMIX', '2:09.47', '+0.57'],
    ['', 'Team GammaMIX', 'DNF', ''],
  ]);
  // Changed rows flash; the status, meta and freshness are shown.
  assert.ok((await page.locator(`#${id} tbody tr.changed`).count()) >= 2);
  assert.equal(await page.locator(`#${id} .status`).textContent(), 'live');
  assert.equal(await page.locator(`#${id} .meta`).textContent(), 'St. Moritz · Heat 1');
  assert.equal(await page.locator(`#${id} h2`).textContent(), 'Relay final');
  assert.match(await page.locator(`#${id} .updated`).textContent(), /Updated just now|Updated \d s ago/);
  assert.deepEqual(errors, []);
});

/** A counter of the hub's /metrics (internal listener). */
async function metric(h, name) {
  const text = await (await fetch(`http://${h.internalAddr}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
}
const deltaFrames = (h) => metric(h, 'tribune_delta_deliveries_total');

test('the board follows a results board sent as deltas over deflate, names with diacritics and emoji exact', async (t) => {
  // Counted before the page opens: its one SDK client connects at once.
  const deflating = await metric(hub, 'tribune_deflate_connections_total');
  const { page, errors } = await openPage(t, `${proxy.httpUrl}/`);
  const topic = topicFor('results');
  const skaters = ['Martina Sáblíková', 'Zoë Ødegård', 'Jutta Leerdam 🇳🇱', 'Miho Takagi', 'Béatrice Lamarche', 'Kim Min-sun'];
  const rowsAfter = (heat) =>
    skaters
      .map((name, i) => ({ name, ms: i < heat ? 113_000 + ((i * 7919 + heat) % 3000) : null }))
      .sort((a, b) => (a.ms ?? 1e9) - (b.ms ?? 1e9))
      .map(({ name, ms }, i) => ({
        rank: ms === null ? null : i + 1,
        name,
        noc: 'ISU',
        result: ms === null ? null : `1:5${Math.floor(ms / 1000) % 10}.${String(Math.floor(ms / 10) % 100).padStart(2, '0')}`,
        gap: null,
        status: ms === null ? 'dns' : 'ok',
      }));
  await hub.publish(topic, board('1500 m', rowsAfter(0)));
  const id = await addWidget(page, 'tribune-results', { topic });
  await page.locator(`#${id} tbody tr`).nth(skaters.length - 1).waitFor({ timeout: 5000 });
  const before = await deltaFrames(hub);
  for (let heat = 1; heat <= skaters.length; heat++) {
    await hub.publish(topic, board('1500 m', rowsAfter(heat)));
    await new Promise((r) => setTimeout(r, 30));
  }
  const want = rowsAfter(skaters.length).map((r) => `${r.rank}|${r.name}ISU|${r.result}`);
  await page.waitForFunction(
    ({ id, want }) => {
      const trs = [...document.getElementById(id).shadowRoot.querySelectorAll('tbody tr')];
      const got = trs.map((tr) => [...tr.children].slice(0, 3).map((c) => c.textContent).join('|'));
      return JSON.stringify(got) === JSON.stringify(want);
    },
    { id, want },
    { timeout: 5000, polling: 20 },
  );
  const sent = (await deltaFrames(hub)) - before;
  assert.ok(sent >= skaters.length - 1, `the updates went as deltas (${sent})`);
  // Chromium offers permessage-deflate and the hub accepts it.
  assert.ok((await metric(hub, 'tribune_deflate_connections_total')) > deflating, 'Chromium negotiated deflate');
  assert.deepEqual(errors, []);
});

test('a widget with a token reads a token topic and no request it makes has the token in its URL', async (t) => {
  const now = Math.floor(Date.now() / 1000);
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const signed = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: 'fan-7', exp: now + 600, topics: ['premium.'] })}`;
  const token = `${signed}.${createHmac('sha256', TOKEN_SECRET).update(signed).digest('base64url')}`;
  const page = await context.newPage();
  t.after(() => page.close());
  // Chromium's network log: every request and every websocket of the page.
  const urls = [];
  page.on('request', (r) => urls.push(r.url()));
  page.on('websocket', (ws) => urls.push(ws.url()));
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  const res = await page.goto(`${tokenHub.httpUrl}/`);
  assert.equal(res.status(), 200);
  const topic = topicFor('premium');
  await tokenHub.publish(topic, board('Premium final', [{ rank: 1, name: 'Team Alpha', noc: 'MIX', result: '2:09.47', gap: null, status: 'ok' }]));
  const id = await addWidget(page, 'tribune-results', { topic, token });
  await page.locator(`#${id} tbody tr`).first().waitFor({ timeout: 5000 });
  assert.match(await shadowText(page, id), /Team Alpha/);
  assert.ok(urls.some((u) => u.startsWith('ws://') && u.endsWith('/v1/ws')), `a websocket: ${urls.join(' ')}`);
  const leaked = urls.filter((u) => u.includes(token) || /[?&]token=/.test(u) || u.includes(signed.slice(0, 24)));
  assert.deepEqual(leaked, [], 'no token in any URL');
  assert.deepEqual(errors, []);
});

test('hostile payload strings are shown as text and run nothing', async (t) => {
  const { page, errors } = await openPage(t, `${proxy.httpUrl}/`);
  const results = topicFor('results');
  const clips = topicFor('clips');
  const rid = await addWidget(page, 'tribune-results', { topic: results });
  const cid = await addWidget(page, 'tribune-clips', { topic: clips });
  const img = '<img src=x onerror="window.__pwned=1">';
  await hub.publish(
    results,
    board(img, [
      { rank: 1, name: '<script>window.__pwned=2</script>', members: ['<b>bold</b>'], noc: '<i>', result: '<svg onload="window.__pwned=3">', gap: img, status: 'ok' },
    ], { venue: '<iframe src="javascript:window.__pwned=6">', status: '<u>live</u>' }),
  );
  await hub.publish(clips, {
    kind: 'clip',
    id: 'evil-1',
    title: '<img src=x onerror="window.__pwned=4">',
    url: 'javascript:window.__pwned=5',
    thumbnail: 'javascript:window.__pwned=7',
    duration_s: 12,
    source: '<a href="javascript:alert(1)">x</a>',
  });
  await hub.publish(clips, {
    kind: 'clip',
    id: 'plain-http',
    title: 'Not over https',
    url: 'http://media.example.org/clip.mp4',
    thumbnail: 'http://media.example.org/clip.jpg',
  });
  await page.locator(`#${rid} tbody tr`).first().waitFor({ timeout: 5000 });
  await page.locator(`#${cid} li`).nth(1).waitFor({ timeout: 5000 });
  const text = await shadowText(page, rid);
  for (const s of [img, '<script>window.__pwned=2</script>', '<b>bold</b>', '<svg onload="window.__pwned=3">', '<u>live</u>']) {
    assert.ok(text.includes(s), `${s} shown as text in: ${text}`);
  }
  assert.ok((await shadowText(page, cid)).includes('<img src=x onerror="window.__pwned=4">'));
  const found = await page.evaluate(
    ([rid, cid]) => {
      const r = document.getElementById(rid).shadowRoot;
      const c = document.getElementById(cid).shadowRoot;
      return {
        pwned: window.__pwned,
        resultsElements: r.querySelectorAll('img, script, svg, b, i, u, iframe').length,
        clipsLinks: c.querySelectorAll('a').length,
        clipsImages: c.querySelectorAll('img').length,
        clipsScripts: c.querySelectorAll('script, iframe').length,
      };
    },
    [rid, cid],
  );
  assert.deepEqual(found, { pwned: undefined, resultsElements: 0, clipsLinks: 0, clipsImages: 0, clipsScripts: 0 });
  // Even a click on the (unlinked) title runs nothing.
  await page.locator(`#${cid} li .title`).last().click();
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  assert.deepEqual(errors, []);
});

test('clips: newest first, bounded, safe links and same-origin thumbnails', async (t) => {
  const { page } = await openPage(t, `${proxy.httpUrl}/`);
  const topic = topicFor('clips');
  // Published before the widget exists: the widget asks for history.
  for (let i = 1; i <= 3; i++) {
    await hub.publish(topic, { kind: 'clip', id: `c${i}`, title: `Clip ${i}`, url: `https://media.example.org/${i}.mp4`, thumbnail: '/demo/thumb.svg', duration_s: 18.5 });
  }
  const id = await addWidget(page, 'tribune-clips', { topic, max: '4' });
  await page.locator(`#${id} li`).nth(2).waitFor({ timeout: 5000 });
  for (let i = 4; i <= 7; i++) {
    await hub.publish(topic, { kind: 'clip', id: `c${i}`, title: `Clip ${i}`, url: `https://media.example.org/${i}.mp4`, thumbnail: '/demo/thumb.svg', duration_s: 65 });
  }
  await page.waitForFunction((id) => document.getElementById(id).shadowRoot.querySelector('li .title')?.textContent === 'Clip 7', id, { timeout: 5000 });
  const items = await page.locator(`#${id} li`).evaluateAll((lis) =>
    lis.map((li) => ({
      title: li.querySelector('.title').textContent,
      href: li.querySelector('a.title')?.href ?? null,
      rel: li.querySelector('a.title')?.rel ?? null,
      duration: li.querySelector('.duration')?.textContent ?? null,
      img: li.querySelector('img')?.getAttribute('src') ?? null,
    })),
  );
  assert.deepEqual(items.map((i) => i.title), ['Clip 7', 'Clip 6', 'Clip 5', 'Clip 4']);
  assert.equal(items[0].href, 'https://media.example.org/7.mp4');
  assert.equal(items[0].rel, 'noopener noreferrer');
  assert.equal(items[0].duration, '1:05');
  const origin = new URL(proxy.httpUrl).origin;
  assert.ok(items.every((i) => i.img === `${origin}/demo/thumb.svg`), JSON.stringify(items));
  await page.waitForFunction((id) => {
    const img = document.getElementById(id).shadowRoot.querySelector('img');
    return img && img.complete && img.naturalWidth > 0;
  }, id, { timeout: 5000 });
});

test('clips: a gap frame puts a notice at the hole, readable at 320 px in both themes', async (t) => {
  // The real hub sends `gap` only when the bus lost messages: a scripted hub
  // makes one at will. The page and the widget still come from the real hub.
  const fake = await startFakeHub();
  t.after(() => fake.close());
  // The hub's page allows connections to its own origin only (its CSP); the
  // scripted hub is another origin, so this page alone goes without the CSP.
  const { page, errors } = await openPage(t, `${proxy.httpUrl}/`, { stripCsp: true });
  await page.setViewportSize({ width: 320, height: 900 });
  const topic = topicFor('clips');
  const id = await addWidget(page, 'tribune-clips', { topic, 'ws-url': fake.url, max: '5', theme: 'light' });
  await page.locator(`#${id}`).evaluate((el) => {
    window.__gaps = [];
    el.addEventListener('tribune-gap', (e) => window.__gaps.push(e.detail));
  });
  const conn = await fake.connection(0);
  const sf = await conn.next('subscribe');
  assert.equal(sf.history, 5);
  const clip = (seq, prev, extra = {}) => ({
    type: 'message',
    topic,
    seq,
    prev,
    ts: Date.now(),
    data: { kind: 'clip', id: `c${seq}`, title: `Clip ${seq}`, duration_s: 20 },
    ...extra,
  });
  conn.send({ type: 'ack', id: sf.id, topic, mode: 'feed', epoch: 'TRIBUNE@1', seq: 3 });
  conn.send(clip(2, 0, { replay: true }));
  conn.send(clip(3, 2, { replay: true }));
  // 4 to 8 are lost; 9 carries the prev the bus knows (7), not 3.
  conn.send({ type: 'gap', topic, after: 3, before: 9 });
  conn.send(clip(9, 7));
  conn.send(clip(10, 9));
  await page.waitForFunction((id) => document.getElementById(id).shadowRoot.querySelector('li .title')?.textContent === 'Clip 10', id, {
    timeout: 5000,
  });
  const items = await page.locator(`#${id} ol > li`).evaluateAll((lis) =>
    lis.map((li) => (li.classList.contains('missed') ? `notice: ${li.textContent}` : li.querySelector('.title').textContent)),
  );
  assert.deepEqual(items, ['Clip 10', 'Clip 9', 'notice: Some clips were missed here', 'Clip 3', 'Clip 2']);
  assert.deepEqual(await page.evaluate(() => window.__gaps), [{ type: 'gap', topic, reason: 'lost', after: 3, before: 9 }]);
  // The SDK took 9 as announced: no resubscribe went out.
  assert.equal(conn.frames.filter((f) => f.type === 'subscribe' || f.type === 'unsubscribe').length, 1);

  // Visible, inside 320 px, in the list's live region, readable in both themes.
  const view = async () =>
    page.locator(`#${id}`).evaluate((el) => {
      const notice = el.shadowRoot.querySelector('li.missed');
      const box = notice.getBoundingClientRect();
      const style = getComputedStyle(notice);
      const rgb = (c) => c.match(/[\d.]+/g).slice(0, 3).map(Number);
      const luminance = (c) => {
        const [r, g, b] = rgb(c).map((v) => {
          const s = v / 255;
          return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
        });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
      };
      const [hi, lo] = [luminance(style.color), luminance(style.backgroundColor)].sort((a, b) => b - a);
      return {
        width: box.width,
        height: box.height,
        right: box.right,
        contrast: (hi + 0.05) / (lo + 0.05),
        color: style.color,
        live: notice.closest('[aria-live]')?.getAttribute('aria-live') ?? null,
        scroll: document.documentElement.scrollWidth,
      };
    });
  const light = await view();
  assert.ok(light.width > 100 && light.height > 10 && light.right <= 320, JSON.stringify(light));
  assert.ok(light.scroll <= 320, JSON.stringify(light));
  assert.equal(light.live, 'polite');
  assert.ok(light.contrast >= 4.5, JSON.stringify(light));
  await page.emulateMedia({ reducedMotion: 'reduce' });
  await page.locator(`#${id}`).screenshot({ path: path.join(ARTIFACTS, 'clips-gap.png') });
  await page.locator(`#${id}`).evaluate((el) => el.setAttribute('theme', 'dark'));
  const dark = await view();
  assert.notEqual(dark.color, light.color, 'the dark theme has its own notice colours');
  assert.ok(dark.contrast >= 4.5 && dark.right <= 320, JSON.stringify(dark));
  await page.locator(`#${id}`).screenshot({ path: path.join(ARTIFACTS, 'clips-gap-dark.png') });

  // `max` counts clips, not notices; once the clips below the hole are cut,
  // the notice would mark a hole next to nothing shown, and goes with them.
  const titles = (lis) => lis.map((li) => (li.classList.contains('missed') ? 'notice' : li.querySelector('.title').textContent));
  const expectAfter = async (seq, expected) => {
    conn.send(clip(seq, seq - 1));
    await page.waitForFunction(
      ([id, title]) => document.getElementById(id).shadowRoot.querySelector('li .title')?.textContent === title,
      [id, `Clip ${seq}`],
      { timeout: 5000 },
    );
    assert.deepEqual(await page.locator(`#${id} ol > li`).evaluateAll(titles), expected, `after clip ${seq}`);
  };
  await expectAfter(11, ['Clip 11', 'Clip 10', 'Clip 9', 'notice', 'Clip 3', 'Clip 2']);
  await expectAfter(12, ['Clip 12', 'Clip 11', 'Clip 10', 'Clip 9', 'notice', 'Clip 3']);
  await expectAfter(13, ['Clip 13', 'Clip 12', 'Clip 11', 'Clip 10', 'Clip 9']);
  assert.deepEqual(errors, []);
});

test('the reaction bar sends a react and the meter follows the hub stats', async (t) => {
  const { page, errors } = await openPage(t, `${proxy.httpUrl}/`);
  const topic = topicFor('results');
  const id = await addWidget(page, 'tribune-results', { topic });
  const buttons = page.locator(`#${id} button.react`);
  assert.equal(await buttons.count(), 4);
  assert.deepEqual(await buttons.evaluateAll((bs) => bs.map((b) => b.dataset.reaction)), ['🔥', '👏', '😮', '😢']);
  await page.locator(`#${id} button.react[data-reaction="🔥"]`).click();
  // Only this page reacts on this topic: a count can only come from our react.
  await page.waitForFunction(
    (id) => Number(document.getElementById(id).shadowRoot.querySelector('button[data-reaction="🔥"] .count').textContent) >= 1,
    id,
    { timeout: 8000 },
  );
  const view = await page.locator(`#${id}`).evaluate((el) => {
    const r = el.shadowRoot;
    const fill = (e) => r.querySelector(`button[data-reaction="${e}"] .fill`).style.transform;
    return {
      audience: r.querySelector('.audience').textContent,
      audienceHidden: r.querySelector('.audience').hidden,
      fire: fill('🔥'),
      cry: fill('😢'),
      cryCount: r.querySelector('button[data-reaction="😢"] .count').textContent,
      label: r.querySelector('button[data-reaction="🔥"]').getAttribute('aria-label'),
    };
  });
  assert.equal(view.audienceHidden, false);
  assert.match(view.audience, /^[1-9]\d* watching$/);
  // The meter's full scale never drops below a few reactions: one tap shows
  // as a part of the bar, not the whole of it.
  const fire = Number(/^scaleX\(([\d.]+)\)$/.exec(view.fire)?.[1]);
  assert.ok(fire > 0 && fire <= 1, view.fire);
  assert.match(view.cry, /^scaleX\(0(\.0+)?\)$/);
  assert.equal(view.cryCount, '0');
  assert.match(view.label, /^Send 🔥 \([1-9]/);
  assert.deepEqual(errors, []);
});

test('the widget says reconnecting while the hub is away and shows the latest state after', async (t) => {
  const { page } = await openPage(t, `${proxy.httpUrl}/`);
  const topic = topicFor('results');
  const id = await addWidget(page, 'tribune-results', { topic });
  await hub.publish(topic, board('Before', [{ rank: 1, name: 'Team Before', result: '1:00.00', status: 'ok' }]));
  await page.locator(`#${id} tbody tr`).first().waitFor({ timeout: 5000 });

  await hub.stop();
  const conn = page.locator(`#${id} .conn`);
  await page.locator(`#${id} .conn[data-state="reconnecting"]`).waitFor({ timeout: 10000 });
  assert.equal(await conn.textContent(), 'Reconnecting…');
  await page.screenshot({ path: path.join(ARTIFACTS, 'reconnecting.png') });
  // The last board stays visible while reconnecting.
  assert.ok((await shadowText(page, id)).includes('Team Before'));

  await hub.restart();
  proxy.setTarget(hub.port);
  await page.locator(`#${id} .conn[data-state="connected"]`).waitFor({ timeout: 20000 });
  assert.equal(await conn.textContent(), 'Live');
  await hub.publish(topic, board('After', [{ rank: 1, name: 'Team After', result: '0:59.00', status: 'ok' }]));
  await page.waitForFunction((id) => document.getElementById(id).shadowRoot.textContent.includes('Team After'), id, { timeout: 5000 });
  assert.equal(await page.locator(`#${id} h2`).textContent(), 'After');
});

test('offline and online: the widget follows the browser network state', async (t) => {
  const { page } = await openPage(t, `${proxy.httpUrl}/`);
  const topic = topicFor('results');
  const id = await addWidget(page, 'tribune-results', { topic });
  await context.setOffline(true);
  try {
    await page.locator(`#${id} .conn[data-state="reconnecting"]`).waitFor({ timeout: 5000 });
  } finally {
    await context.setOffline(false);
  }
  await page.locator(`#${id} .conn[data-state="connected"]`).waitFor({ timeout: 10000 });
  await hub.publish(topic, board('Back online', [{ rank: 1, name: 'Team Online', result: '1:01.00', status: 'ok' }]));
  await page.waitForFunction((id) => document.getElementById(id).shadowRoot.textContent.includes('Team Online'), id, { timeout: 5000 });
});

test('one script tag embeds the widget on a page of another origin', async (t) => {
  const topic = topicFor('results');
  const hostPage = `<!doctype html><html><head><meta charset="utf-8">
<script type="module" src="${hub.httpUrl}/widget/tribune-widget.js"></script></head>
<body><main><tribune-results id="embedded" topic="${topic}" style="--tribune-accent:#e00"></tribune-results>
<tribune-results id="elsewhere" topic="${topic}" hub="http://127.0.0.1:9"></tribune-results>
<tribune-clips id="proxied" topic="${topicFor('clips')}" ws-url="${proxy.wsUrl}"></tribune-clips></main></body></html>`;
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(hostPage);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    // Chromium keeps its connection alive: close it, or close() waits on it.
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  });
  const { page, errors } = await openPage(t, `http://127.0.0.1:${server.address().port}/`);
  await page.locator('#embedded .conn[data-state="connected"]').waitFor({ timeout: 10000 });
  await hub.publish(topic, board('Embedded', [{ rank: 1, name: 'Team Embedded', result: '1:02.00', status: 'ok' }]));
  await page.waitForFunction(() => document.getElementById('embedded').shadowRoot.textContent.includes('Team Embedded'), null, {
    timeout: 5000,
  });
  // The attributes override the hub found from the script's URL.
  await page.locator('#proxied .conn[data-state="connected"]').waitFor({ timeout: 10000 });
  const urls = await page.evaluate(async () => {
    const { resolveWsUrl } = await import(document.querySelector('script[type=module]').src);
    return ['embedded', 'elsewhere', 'proxied'].map((id) => resolveWsUrl(document.getElementById(id)));
  });
  assert.deepEqual(urls, [hub.wsUrl, 'ws://127.0.0.1:9/v1/ws', proxy.wsUrl]);
  assert.notEqual(await page.locator('#elsewhere .conn').getAttribute('data-state'), 'connected');
  assert.ok(!(await page.locator('#elsewhere').evaluate((el) => el.shadowRoot.textContent)).includes('Team Embedded'));
  assert.deepEqual(errors.filter((e) => !e.includes('127.0.0.1:9/')), []);
});

// Static imports and re-exports of a module: `import … from '…'`,
// `export … from '…'`, `import '…'` (the widget uses no dynamic import).
const IMPORT_RE = /^(?:import|export)\s+(?:[\w$*{},\s]+?\s+from\s+)?['"]([^'"]+)['"]/gm;

test('the hub serves /widget/ beside /sdk/: every import of the widget resolves to the repository files', async () => {
  // Where each URL folder of the hub comes from in the repository.
  const folders = {
    '/widget/': path.join(repoRoot, 'client-sdk/widget/src'),
    '/sdk/': path.join(repoRoot, 'client-sdk/js/src'),
  };
  const seen = new Set();
  const queue = [new URL('/widget/tribune-widget.js', hub.httpUrl)];
  const edges = [];
  // Bounded: the graph has a handful of files; more means imports went astray.
  while (queue.length > 0 && seen.size < 50) {
    const url = queue.shift();
    if (seen.has(url.pathname)) continue;
    seen.add(url.pathname);
    const res = await fetch(url);
    assert.equal(res.status, 200, `GET ${url.pathname} (imported by the widget)`);
    assert.match(res.headers.get('content-type'), /^text\/javascript/, url.pathname);
    const body = await res.text();
    const folder = Object.keys(folders).find((f) => url.pathname.startsWith(f));
    assert.ok(folder, `${url.pathname} is outside /widget/ and /sdk/`);
    const file = path.join(folders[folder], url.pathname.slice(folder.length));
    assert.equal(body, readFileSync(file, 'utf8'), `${url.pathname} is served as ${path.relative(repoRoot, file)} (an older hub binary? cargo build -p tribune-hub)`);
    for (const [, specifier] of body.matchAll(IMPORT_RE)) {
      assert.ok(specifier.startsWith('./') || specifier.startsWith('../'), `${url.pathname} imports ${specifier}`);
      const target = new URL(specifier, url);
      edges.push(`${url.pathname} -> ${target.pathname}`);
      queue.push(target);
    }
  }
  assert.equal(queue.length, 0, 'the import graph is larger than 50 files');
  // The one crossing from the widget to the SDK goes through the layout.
  assert.ok(edges.includes('/widget/shared.js -> /sdk/tribune.js'), edges.join('\n'));
  // Every file of the SDK folder is served and reached from the entry (a new
  // SDK file the hub did not embed, or one nothing imports, shows here).
  const sdkFiles = readdirSync(folders['/sdk/']).filter((f) => f.endsWith('.js'));
  const reached = [...seen].filter((p) => p.startsWith('/sdk/')).map((p) => p.slice('/sdk/'.length));
  assert.deepEqual(reached.sort(), sdkFiles.sort());
});

test('SDK in the browser: the served module speaks to the hub', async (t) => {
  const { page } = await openPage(t, `${proxy.httpUrl}/`);
  const topic = topicFor('clips');
  const seq = await hub.publish(topic, { hello: 'browser' });
  const got = await page.evaluate(async (topic) => {
    const { TribuneClient } = await import('/sdk/tribune.js');
    const client = new TribuneClient({ url: new URL('/v1/ws', location.href.replace(/^http/, 'ws')).href });
    const sub = client.subscribe(topic, { history: 1 });
    for await (const ev of sub) {
      if (ev.type === 'message') {
        client.close();
        return { seq: ev.seq, data: ev.data, replay: ev.replay };
      }
    }
    return null;
  }, topic);
  assert.deepEqual(got, { seq, data: { hello: 'browser' }, replay: true });
});
