// docs/PAYLOADS.md against the widget: every ```json example of the page is
// published to the real hub and rendered by <tribune-results> or
// <tribune-clips> in headless Chromium, and what the widget shows is checked
// field by field against the page's rules (text as written, `m:ss`
// durations, `source · hh:mm`, https-only links and images, status flags).
// The examples are read from the document itself, so the page and the
// widget cannot drift apart unnoticed.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Hub } from '../../js/test/support/hub.js';
import { addWidget, launchChromium, openPage as openPageOf } from './support/browser.js';
import { repoRoot } from '../../js/test/support/util.js';

const DOC = path.join(repoRoot, 'docs/PAYLOADS.md');
// A zone away from UTC: `published_at` must be shown in the fan's time.
const TIME_ZONE = 'Europe/Zurich';
const LOCALE = 'en-GB';
// Served in place of the examples' https media: the test stays on loopback,
// and a thumbnail the widget accepts visibly loads.
const THUMBNAIL_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" width="160" height="90"><rect width="160" height="90" fill="#36c"/></svg>';

/** The ```json blocks of a markdown text, parsed, with their line numbers. */
function jsonExamples(markdown) {
  const out = [];
  for (const m of markdown.matchAll(/^```json\n([\s\S]*?)^```$/gm)) {
    const line = markdown.slice(0, m.index).split('\n').length;
    out.push({ line, payload: JSON.parse(m[1]) });
  }
  return out;
}

const examples = jsonExamples(readFileSync(DOC, 'utf8'));
const boards = examples.filter((e) => e.payload.kind === 'results');
const clips = examples.filter((e) => e.payload.kind === 'clip');

// What the page says a text field shows: strings, and finite numbers as
// JavaScript writes them; anything else is absent.
const text = (v) => (typeof v === 'string' ? v : typeof v === 'number' && Number.isFinite(v) ? String(v) : null);

let hub;
let browser;
let context;
let unique = 0;

before(async () => {
  hub = await Hub.start();
  browser = await launchChromium({
    timezoneId: TIME_ZONE,
    locale: LOCALE,
    viewport: { width: 1000, height: 900 },
    offLoopback: (route, url) => {
      if (url.protocol === 'https:' && /\.(jpg|jpeg|png|webp|svg)$/.test(url.pathname)) {
        route.fulfill({ status: 200, contentType: 'image/svg+xml', body: THUMBNAIL_SVG });
        return true;
      }
      return false;
    },
  });
  context = browser.context;
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

const openPage = (t) => openPageOf(context, t, `${hub.httpUrl}/`);

test('docs/PAYLOADS.md has examples of both shapes, each of a known kind', () => {
  assert.ok(boards.length >= 1, 'at least one results example');
  assert.ok(clips.length >= 1, 'at least one clip example');
  // A block of another kind would go untested: extend this file with it.
  const other = examples.filter((e) => !['results', 'clip'].includes(e.payload.kind));
  assert.deepEqual(other.map((e) => `line ${e.line}`), []);
});

test('every results example of docs/PAYLOADS.md renders as the page says', async (t) => {
  const { page, errors } = await openPage(t);
  for (const { line, payload } of boards) {
    const where = `PAYLOADS.md line ${line}`;
    const topic = `results.payloads${process.pid}.b${++unique}`;
    // Published before the widget exists: a state topic hands a late fan the
    // latest board at once.
    await hub.publish(topic, payload);
    const id = await addWidget(page, 'tribune-results', { topic });
    const event = payload.event ?? {};
    const rows = Array.isArray(payload.rows) ? payload.rows.filter((r) => r && typeof r === 'object') : [];
    // The board has rendered once the message's time shows.
    await page.locator(`#${id} .updated`).filter({ hasText: /^Updated / }).waitFor({ timeout: 5000 });

    const shown = await page.locator(`#${id}`).evaluate((el) => {
      const r = el.shadowRoot;
      const q = (s) => r.querySelector(s);
      return {
        title: q('h2').textContent,
        caption: q('caption').textContent,
        meta: q('.meta').textContent,
        status: q('.status').textContent,
        statusStyle: q('.status').dataset.status,
        tableHidden: q('table').hidden,
        empty: q('.empty').hidden ? null : q('.empty').textContent,
        rows: [...r.querySelectorAll('tbody tr')].map((tr) => ({
          rank: tr.querySelector('.c-rank').textContent,
          name: tr.querySelector('.name').textContent,
          noc: tr.querySelector('.noc')?.textContent ?? null,
          members: tr.querySelector('.members')?.textContent ?? null,
          result: tr.querySelector('.c-result').textContent,
          flagged: tr.querySelector('.c-result .flag') !== null,
          gap: tr.querySelector('.c-gap').textContent,
        })),
        all: r.textContent,
      };
    });

    const name = text(event.name);
    assert.equal(shown.title, name ?? 'Live results', `${where}: event.name is the title`);
    if (name) assert.equal(shown.caption, `Results: ${name}`, where);
    assert.equal(shown.meta, [event.venue, event.phase].map(text).filter(Boolean).join(' · '), `${where}: venue · phase`);
    assert.equal(shown.status, text(event.status) ?? '', `${where}: event.status badge`);
    const styled = ['scheduled', 'live', 'final', 'cancelled'].includes(event.status) ? event.status : 'other';
    assert.equal(shown.statusStyle, styled, where);

    const expected = rows.map((row) => {
      const status = text(row.status);
      const members = Array.isArray(row.members) ? row.members.map(text).filter(Boolean) : [];
      const result = text(row.result);
      const flagged = result === null && status !== null && status !== 'ok';
      return {
        rank: text(row.rank) ?? '',
        name: text(row.name) ?? '—',
        noc: text(row.noc),
        members: members.length > 0 ? members.join(', ') : null,
        result: result ?? (flagged ? status.toUpperCase() : ''),
        flagged,
        gap: text(row.gap) ?? '',
      };
    });
    // In the order given, one table row per row object.
    assert.deepEqual(shown.rows, expected, `${where}: rows`);
    if (rows.length === 0) {
      assert.equal(shown.tableHidden, true, where);
      assert.equal(shown.empty, 'Waiting for results…', `${where}: a board without rows`);
    } else {
      assert.equal(shown.tableHidden, false, where);
      assert.equal(shown.empty, null, where);
    }
    // The fields the page lists as not shown are not shown.
    for (const hidden of [event.id, event.updated_at].map(text).filter(Boolean)) {
      assert.ok(!shown.all.includes(hidden), `${where}: ${hidden} is not shown`);
    }
  }
  assert.deepEqual(errors, []);
});

/** `m:ss`, as the page documents `duration_s`. */
function mss(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) return null;
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/** Hour and minute in the browser's zone and locale, computed here (Node's ICU). */
function hhmm(iso) {
  if (typeof iso !== 'string' || Number.isNaN(new Date(iso).getTime())) return null;
  return new Intl.DateTimeFormat(LOCALE, { timeZone: TIME_ZONE, hour: '2-digit', minute: '2-digit' }).format(new Date(iso));
}

const httpsOnly = (v) => (typeof v === 'string' && v.startsWith('https:') ? new URL(v).href : null);

async function readClips(page, id) {
  return page.locator(`#${id} ol > li.clip`).evaluateAll((lis) =>
    lis.map((li) => ({
      id: li.dataset.id,
      title: li.querySelector('.title').textContent,
      href: li.querySelector('a.title')?.href ?? null,
      rel: li.querySelector('a.title')?.rel ?? null,
      duration: li.querySelector('.duration')?.textContent ?? null,
      sub: li.querySelector('.sub')?.textContent ?? null,
      img: li.querySelector('img')?.getAttribute('src') ?? null,
      imgLoaded: (() => {
        const img = li.querySelector('img');
        return img ? img.complete && img.naturalWidth > 0 : null;
      })(),
      placeholder: li.querySelector('.thumb').classList.contains('placeholder'),
      all: li.textContent,
    })),
  );
}

test('every clip example of docs/PAYLOADS.md renders as the page says', async (t) => {
  const { page, errors } = await openPage(t);
  for (const { line, payload } of clips) {
    const where = `PAYLOADS.md line ${line}`;
    const topic = `clips.payloads${process.pid}.c${++unique}`;
    await hub.publish(topic, payload);
    const id = await addWidget(page, 'tribune-clips', { topic });
    await page.locator(`#${id} li.clip`).first().waitFor({ timeout: 5000 });
    const thumbnail = httpsOnly(payload.thumbnail);
    if (thumbnail) {
      await page.waitForFunction((id) => {
        const img = document.getElementById(id).shadowRoot.querySelector('img');
        return img && img.complete && img.naturalWidth > 0;
      }, id, { timeout: 5000 });
    }
    const [shown, ...more] = await readClips(page, id);
    assert.equal(more.length, 0, `${where}: one message, one clip`);
    assert.equal(shown.id, text(payload.id), `${where}: id`);
    assert.equal(shown.title, text(payload.title) ?? 'Untitled clip', `${where}: title`);
    assert.equal(shown.href, httpsOnly(payload.url), `${where}: url links the title`);
    if (shown.href) assert.equal(shown.rel, 'noopener noreferrer', where);
    assert.equal(shown.duration, mss(payload.duration_s), `${where}: duration_s as m:ss`);
    const sub = [text(payload.source), hhmm(payload.published_at)].filter(Boolean).join(' · ');
    assert.equal(shown.sub, sub || null, `${where}: source · time`);
    assert.equal(shown.img, thumbnail, `${where}: thumbnail`);
    assert.equal(shown.imgLoaded, thumbnail ? true : null, where);
    assert.equal(shown.placeholder, !thumbnail, `${where}: placeholder without a thumbnail`);
    for (const hidden of [payload.event_id, ...(Array.isArray(payload.tags) ? payload.tags : [])].map(text).filter(Boolean)) {
      assert.ok(!shown.all.includes(hidden), `${where}: ${hidden} is not shown`);
    }

    // "A later message with the same id replaces that clip where it stands."
    if (text(payload.id)) {
      const other = { ...payload, id: `${payload.id}-next`, title: 'Another clip' };
      const corrected = { ...payload, title: `${text(payload.title) ?? ''} (corrected)` };
      await hub.publish(topic, other);
      await hub.publish(topic, corrected);
      await page.waitForFunction(
        ([id, title]) => [...document.getElementById(id).shadowRoot.querySelectorAll('li .title')].some((e) => e.textContent === title),
        [id, corrected.title],
        { timeout: 5000 },
      );
      const after = await readClips(page, id);
      assert.deepEqual(
        after.map((c) => [c.id, c.title]),
        [
          [other.id, 'Another clip'],
          [corrected.id, corrected.title],
        ],
        `${where}: the correction replaced the clip in place`,
      );
    }
  }
  assert.deepEqual(errors, []);
});
