// Retractions and the spoiler shield in the web widgets, in real headless
// Chromium (PROTOCOL.md section 13): a clip an editor retracts through the
// real hub leaves <tribune-clips> while the feed goes on; the `delay`
// attribute subscribes with `delay_ms`, and the "synced to your stream"
// control renews the subscription where it is (`since`) with the new delay,
// keeping the clips shown (against the scripted fake hub, whose frames the
// test reads).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeHub } from '../../js/test/support/fake-hub.js';
import { addWidget, launchChromium, openPage as openPageOf } from './support/browser.js';
import { Hub } from '../../js/test/support/hub.js';

let hub;
let browser;
let unique = 0;
const topicFor = (ns) => `${ns}.retract${process.pid}.t${++unique}`;

before(async () => {
  hub = await Hub.start();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

const openPage = (t, url, options) => openPageOf(browser.context, t, url, options);
const clip = (i) => ({ kind: 'clip', id: `c${i}`, title: `Clip ${i}`, duration_s: 12 });
const titles = (page, id) =>
  page.locator(`#${id} ol > li.clip`).evaluateAll((lis) => lis.map((li) => li.querySelector('.title').textContent));

test('clips: a retracted clip leaves the list, and the feed goes on', async (t) => {
  const { page, errors } = await openPage(t, `http://127.0.0.1:${hub.port}/`);
  const topic = topicFor('clips');
  const seqs = [];
  for (let i = 1; i <= 3; i++) seqs.push(await hub.publish(topic, clip(i)));
  const id = await addWidget(page, 'tribune-clips', { topic, max: '5' });
  await page.locator(`#${id} li.clip`).nth(2).waitFor({ timeout: 5000 });
  await page.locator(`#${id}`).evaluate((el) => {
    window.__retracts = [];
    el.addEventListener('tribune-retract', (e) => window.__retracts.push(e.detail.seq));
  });
  assert.deepEqual(await titles(page, id), ['Clip 3', 'Clip 2', 'Clip 1']);
  await hub.retract(topic, seqs[1]);
  await page.waitForFunction((id) => document.getElementById(id).shadowRoot.querySelectorAll('li.clip').length === 2, id, { timeout: 5000 });
  assert.deepEqual(await titles(page, id), ['Clip 3', 'Clip 1']);
  assert.deepEqual(await page.evaluate(() => window.__retracts), [seqs[1]]);
  await hub.publish(topic, clip(4));
  await page.waitForFunction((id) => document.getElementById(id).shadowRoot.querySelector('li .title')?.textContent === 'Clip 4', id, { timeout: 5000 });
  assert.deepEqual(await titles(page, id), ['Clip 4', 'Clip 3', 'Clip 1']);
  // Without a `delay` attribute the synced-to-your-stream control stays hidden.
  assert.equal(await page.locator(`#${id} .sync`).isHidden(), true);
  // Retracting every clip leaves the empty state.
  for (const seq of [seqs[0], seqs[2]]) await hub.retract(topic, seq);
  await page.waitForFunction((id) => document.getElementById(id).shadowRoot.querySelectorAll('li.clip').length === 1, id, { timeout: 5000 });
  assert.deepEqual(errors, []);
});

test('delay: the widget subscribes with delay_ms and the sync control renews with since', async (t) => {
  const fake = await startFakeHub();
  t.after(() => fake.close());
  const { page, errors } = await openPage(t, `http://127.0.0.1:${hub.port}/`, { stripCsp: true });
  const topic = topicFor('clips');
  const id = await addWidget(page, 'tribune-clips', { topic, 'ws-url': fake.url, delay: '30000' });
  const conn = await fake.connection(0);
  const first = await conn.next('subscribe');
  assert.equal(first.delay_ms, 30000);
  conn.send({ type: 'ack', id: first.id, topic, mode: 'feed', epoch: 'TRIBUNE@1', seq: 4 });
  conn.send({ type: 'message', topic, seq: 6, prev: 4, ts: 1, data: clip(6) });
  await page.locator(`#${id} li.clip`).first().waitFor({ timeout: 5000 });
  const sync = page.locator(`#${id} .sync`);
  assert.equal(await sync.isVisible(), true);
  assert.match(await sync.textContent(), /Synced to your stream · 30 s behind/);

  await page.locator(`#${id} .sync button.earlier`).click();
  const renewed = await conn.next((f) => f.type === 'subscribe' && f.id !== first.id);
  assert.deepEqual([renewed.delay_ms, renewed.since, renewed.epoch], [15000, 6, 'TRIBUNE@1']);
  assert.ok(conn.frames.some((f) => f.type === 'unsubscribe' && f.topic === topic));
  assert.equal(await page.locator(`#${id}`).getAttribute('delay'), '15000');
  assert.match(await sync.textContent(), /15 s behind/);
  // The clips shown stay: the subscription moved, the list did not restart.
  assert.deepEqual(await titles(page, id), ['Clip 6']);
  conn.send({ type: 'ack', id: renewed.id, topic, mode: 'feed', epoch: 'TRIBUNE@1', seq: 6, recovered: true });

  await page.locator(`#${id} .sync button.later`).click();
  const later = await conn.next((f) => f.type === 'subscribe' && f.id !== first.id && f.id !== renewed.id);
  assert.deepEqual([later.delay_ms, later.since], [30000, 6]);
  await page.locator(`#${id}`).evaluate((el) => el.setAttribute('delay', '0'));
  const live = await conn.next((f) => f.type === 'subscribe' && ![first.id, renewed.id, later.id].includes(f.id));
  assert.equal(live.delay_ms, undefined);
  assert.match(await sync.textContent(), /live/);
  assert.equal(await page.locator(`#${id} .sync button.earlier`).isDisabled(), true);
  assert.deepEqual(errors, []);
});
