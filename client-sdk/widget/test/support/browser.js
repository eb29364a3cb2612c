// Headless Chromium for the widget's browser tests: Debian's Chromium driven
// by playwright-core, kept on loopback, with pages that collect their errors
// and widgets added the way an embedding page would.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** Chromium's flags for every browser test: headless on loopback only. */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Belt and braces: no name resolves, so nothing can leave loopback.
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost',
  // A page whose answer a test rewrote (see openPage's stripCsp) has no
  // address of its own, and Chromium's Local Network Access checks then
  // take it for a public page reaching loopback. Every test is on
  // loopback; the checks have nothing to protect here.
  '--disable-features=LocalNetworkAccessChecks',
];

const LOOPBACK = ['127.0.0.1', 'localhost', '[::1]'];

/**
 * A browser with its own fresh profile. Every request off loopback is
 * aborted unless `offLoopback(route, url)` answers it (return true).
 * Options go to playwright's launchPersistentContext (viewport, locale...).
 */
export async function launchChromium({ offLoopback = () => false, ...options } = {}) {
  const profile = mkdtempSync(path.join(os.tmpdir(), 'tribune-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1200, height: 900 },
    ...options,
  });
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.protocol === 'data:' || LOOPBACK.includes(url.hostname)) return route.continue();
    if (offLoopback(route, url)) return undefined;
    return route.abort('blockedbyclient');
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * A fresh page of `context` at `url`, collecting its errors; closed when the
 * test `t` ends. `stripCsp` serves the page without its Content-Security-
 * Policy (for a widget that must reach a scripted hub on another origin).
 */
export async function openPage(context, t, url, { stripCsp = false } = {}) {
  const page = await context.newPage();
  if (stripCsp) {
    await page.route(url, async (route) => {
      const response = await route.fetch();
      const headers = { ...response.headers() };
      delete headers['content-security-policy'];
      await route.fulfill({ response, headers });
    });
  }
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/ERR_BLOCKED_BY_CLIENT|Failed to load resource/.test(m.text())) {
      errors.push(`console: ${m.text()}`);
    }
  });
  t.after(() => page.close());
  const res = await page.goto(url);
  assert.equal(res.status(), 200, `GET ${url}`);
  return { page, errors };
}

let widgets = 0;

/** Adds a widget (`tag` with `attrs`) to the page's `main` and resolves with its id once it is live. */
export async function addWidget(page, tag, attrs) {
  const id = `w${++widgets}`;
  await page.evaluate(
    ({ tag, attrs, id }) => {
      const el = document.createElement(tag);
      el.id = id;
      for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
      document.querySelector('main').prepend(el);
    },
    { tag, attrs, id },
  );
  await page.locator(`#${id} .conn[data-state="connected"]`).waitFor({ timeout: 10000 });
  return id;
}
