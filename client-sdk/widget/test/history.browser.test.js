// <tribune-clips>'s "More clips" button in real headless Chromium against the
// real hub binary: each click adds the page of clips before the oldest shown
// (GET /v1/history through the SDK's history()), newest of it first, under
// the list; the button goes away once nothing older is retained; live clips
// still arrive on top.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { addWidget, launchChromium, openPage as openPageOf } from './support/browser.js';
import { Hub } from '../../js/test/support/hub.js';

let hub;
let browser;

before(async () => {
  hub = await Hub.start();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

const clip = (i) => ({ kind: 'clip', id: `c${i}`, title: `Clip ${i}`, url: `https://media.example.org/${i}.mp4`, duration_s: 10 + i });

/** The titles the widget shows, notices as `notice`, top to bottom. */
const titles = (page, id) =>
  page.locator(`#${id}`).evaluate((el) =>
    [...el.shadowRoot.querySelectorAll('ol > li')].map((li) => (li.classList.contains('missed') ? 'notice' : li.querySelector('.title').textContent)),
  );

test('clips: "More clips" pages back through the retained history, then goes away', async (t) => {
  const topic = `clips.more${process.pid}.heat`;
  for (let i = 1; i <= 10; i++) await hub.publish(topic, clip(i));
  const { page, errors } = await openPageOf(browser.context, t, `${hub.httpUrl}/`);
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  const id = await addWidget(page, 'tribune-clips', { topic, max: '4' });
  await page.locator(`#${id} li`).nth(3).waitFor({ timeout: 5000 });
  assert.deepEqual(await titles(page, id), ['Clip 10', 'Clip 9', 'Clip 8', 'Clip 7']);
  const more = page.locator(`#${id} .more`);
  await more.waitFor({ state: 'visible', timeout: 5000 });
  assert.equal(await more.textContent(), 'More clips');

  await more.click();
  await page.locator(`#${id} li`).nth(7).waitFor({ timeout: 5000 });
  assert.deepEqual(await titles(page, id), ['Clip 10', 'Clip 9', 'Clip 8', 'Clip 7', 'Clip 6', 'Clip 5', 'Clip 4', 'Clip 3']);

  // A live clip goes on top; the list keeps its size (`max` and the clips
  // loaded), so the oldest shown goes, and "more" can bring it back.
  await hub.publish(topic, clip(11));
  await page.waitForFunction((id) => document.getElementById(id).shadowRoot.querySelector('li .title')?.textContent === 'Clip 11', id, {
    timeout: 5000,
  });
  assert.deepEqual(await titles(page, id), ['Clip 11', 'Clip 10', 'Clip 9', 'Clip 8', 'Clip 7', 'Clip 6', 'Clip 5', 'Clip 4']);

  // The last page: three clips, and nothing older is retained.
  await more.click();
  await page.locator(`#${id} li`).nth(10).waitFor({ timeout: 5000 });
  assert.deepEqual((await titles(page, id)).slice(-4), ['Clip 4', 'Clip 3', 'Clip 2', 'Clip 1']);
  await more.waitFor({ state: 'hidden', timeout: 5000 });

  const history = requests.filter((u) => u.includes('/v1/history'));
  assert.equal(history.length, 2, history.join('\n'));
  assert.ok(history.every((u) => new URL(u).searchParams.get('topic') === topic && !u.includes('token')), history.join('\n'));
  assert.deepEqual(errors, []);
});
