// What both Tribune web components share: finding the hub, one shared SDK
// client per hub, safe text and URL helpers, and the theme (with the look of
// the connection badge, whose behaviour is connection.js). Every payload
// string reaches the DOM through textContent only; the only markup strings
// here are constants.

// The SDK is found through the hub's URL layout, not the repository's: the
// hub serves client-sdk/widget/src/ at /widget/ and client-sdk/js/src/ at
// /sdk/ (hub/src/server.rs), so this resolves from /widget/shared.js to
// /sdk/tribune.js. In the repository there is no widget/sdk/ folder: these
// files run as a hub (or any server keeping /widget/ and /sdk/ side by side
// under one base) serves them. The widget tests check that layout.
import { sharedClient, wsUrlFromHub } from '../sdk/tribune.js';

/**
 * The websocket URL a widget talks to: its `ws-url` attribute, else its `hub`
 * attribute (an http(s) base URL), else the hub that served this script,
 * so that embedding needs one script tag and one element.
 */
export function resolveWsUrl(element) {
  const base = element.ownerDocument?.baseURI ?? globalThis.location?.href;
  const ws = element.getAttribute('ws-url');
  if (ws) {
    const url = new URL(ws, base);
    return url.protocol === 'http:' || url.protocol === 'https:' ? wsUrlFromHub(url.href) : url.href;
  }
  const hub = element.getAttribute('hub');
  if (hub) return wsUrlFromHub(new URL(hub, base).href);
  // Same layout as the import above: this file is at <hub>/widget/shared.js.
  return wsUrlFromHub(new URL('..', import.meta.url).href);
}

/** The page-wide client for a widget (one websocket per hub and page). */
export function clientFor(element) {
  const url = resolveWsUrl(element);
  const token = element.getAttribute('token') || undefined;
  // Fans come back faster than a server client would: the window stays short.
  return sharedClient(url, { token, backoff: { initialMs: 500, maxMs: 15000 } });
}

/**
 * A URL fit for a link or an image: `https:` anywhere, or the page's own
 * origin. Anything else (`javascript:`, `data:`, plain `http:` elsewhere,
 * garbage) gives null, and the caller renders no link or image.
 */
export function safeUrl(value, doc = globalThis.document) {
  if (typeof value !== 'string' || value.length === 0 || value.length > 2048) return null;
  let url;
  try {
    url = new URL(value, doc?.baseURI);
  } catch {
    return null;
  }
  if (url.protocol === 'https:') return url.href;
  const origin = doc?.location?.origin ?? globalThis.location?.origin;
  if ((url.protocol === 'http:' || url.protocol === 'https:') && origin && url.origin === origin) return url.href;
  return null;
}

/** A payload value shown as text: strings and finite numbers, else null. */
export function text(value) {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return null;
}

/** Creates an element with a class and, optionally, text (never markup). */
export function el(doc, tag, className, content) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (content !== undefined && content !== null) node.textContent = content;
  return node;
}

/** `m:ss` for a duration in seconds, or null. */
export function formatDuration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) return null;
  const total = Math.round(seconds);
  return `${Math.floor(total / 60)}:${String(total % 60).padStart(2, '0')}`;
}

/** "just now", "12 s ago", "3 min ago", "2 h ago". */
export function formatAgo(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 3) return 'just now';
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  return `${Math.floor(m / 60)} h ago`;
}

// The dark defaults, used twice below: when the system prefers dark (unless
// `theme="light"`), and when `theme="dark"` forces it.
const DARK = `
  --_bg: var(--tribune-bg, #16191f);
  --_fg: var(--tribune-fg, #eef1f5);
  --_muted: var(--tribune-muted, #a3acba);
  --_border: var(--tribune-border, #2c323c);
  --_row-alt: var(--tribune-row-alt, #1c2028);
  --_accent: var(--tribune-accent, #7fb0ff);
  --_live: var(--tribune-live, #ff6170);
  --_final: var(--tribune-final, #5fd17e);
  --_highlight: var(--tribune-highlight, #5a4a00);
  --_warn-bg: var(--tribune-warn-bg, #3a2f0b);
  --_warn-fg: var(--tribune-warn-fg, #ffd978);
  --_meter: var(--tribune-meter, #ff9a4d);
`;

/**
 * The custom properties a host page may set, with light and dark defaults
 * (prefers-color-scheme, or the `theme` attribute to force one).
 */
export const THEME_CSS = `
:host {
  --_font: var(--tribune-font, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif);
  --_radius: var(--tribune-radius, 12px);
  --_bg: var(--tribune-bg, #ffffff);
  --_fg: var(--tribune-fg, #15181d);
  --_muted: var(--tribune-muted, #586070);
  --_border: var(--tribune-border, #dde2ea);
  --_row-alt: var(--tribune-row-alt, #f5f7fa);
  --_accent: var(--tribune-accent, #0a58ca);
  --_live: var(--tribune-live, #c8102e);
  --_final: var(--tribune-final, #1b7a34);
  --_highlight: var(--tribune-highlight, #ffe98a);
  --_warn-bg: var(--tribune-warn-bg, #fff4d6);
  --_warn-fg: var(--tribune-warn-fg, #6b4e00);
  --_meter: var(--tribune-meter, #ff7a1a);
  display: block;
  container-type: inline-size;
  color: var(--_fg);
  font-family: var(--_font);
  font-size: var(--tribune-font-size, 15px);
  line-height: 1.35;
  min-width: 0;
  max-width: 100%;
  box-sizing: border-box;
}
@media (prefers-color-scheme: dark) {
  :host(:not([theme="light"])) {${DARK}}
}
:host([theme="dark"]) {${DARK}}
:host([hidden]) { display: none; }
*, *::before, *::after { box-sizing: border-box; }
[hidden] { display: none !important; }
.sr-only {
  position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px;
  overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0;
}
.card {
  background: var(--_bg);
  border: 1px solid var(--_border);
  border-radius: var(--_radius);
  padding: 14px 16px 16px;
  overflow: hidden;
  overflow-wrap: anywhere;
}
.conn {
  display: inline-flex; align-items: center; gap: 6px;
  font-size: 0.82em; font-weight: 600; color: var(--_muted);
  white-space: nowrap;
}
.conn::before {
  content: ""; width: 8px; height: 8px; border-radius: 50%;
  background: var(--_muted);
}
.conn[data-state="connected"] { color: var(--_final); }
.conn[data-state="connected"]::before { background: var(--_final); }
.conn[data-state="reconnecting"], .conn[data-state="closed"] {
  color: var(--_warn-fg); background: var(--_warn-bg);
  padding: 2px 8px; border-radius: 999px;
}
.conn[data-state="reconnecting"]::before { background: var(--_warn-fg); animation: blink 1s steps(2, start) infinite; }
@keyframes blink { to { visibility: hidden; } }
@media (prefers-reduced-motion: reduce) {
  .conn[data-state="reconnecting"]::before { animation: none; }
}
h2 { margin: 0; font-size: 1.12em; line-height: 1.25; }
`;

/** Builds a shadow root from constant markup (no payload data ever goes here). */
export function attachShadowFrom(host, css, markup) {
  const root = host.attachShadow({ mode: 'open' });
  const template = host.ownerDocument.createElement('template');
  template.innerHTML = `<style>${THEME_CSS}${css}</style>${markup}`;
  root.append(template.content.cloneNode(true));
  return root;
}
