// <tribune-clips topic="clips...">: the social clips feed of an event
// (docs/PAYLOADS.md "Social clips"), newest first, at most `max` items, each with
// its thumbnail, title, duration and source. Links and images only for
// https: or same-origin URLs; every string is text. Where clips were lost
// (the SDK's gap events), a notice stands at that place in the list. A clip an
// editor retracts (the SDK's retract events) leaves the list.
//
// A "More clips" button under the list loads the clips before the oldest
// shown, a page at a time, from the hub's retained history (the SDK's
// history(), GET /v1/history); it goes away when nothing older is retained.
//
// Attributes: topic (required), hub / ws-url, token, heading, max (default
// 12, at most 100), theme (light|dark), delay (ms behind live, 0 to 120000:
// the spoiler shield, with its "synced to your stream" control).
// Events: tribune-message {detail: message event}, tribune-gap {detail: gap
// event}, tribune-history {detail: the page}, tribune-retract {detail:
// retract event}, tribune-state.

import { WidgetConnection } from './connection.js';
import { DELAY_CSS, DelayControl, delayOf } from './delay-control.js';
import { attachShadowFrom, el, formatDuration, safeUrl, text } from './shared.js';

const DEFAULT_MAX = 12;
const MAX_MAX = 100;
const MISSED_TEXT = 'Some clips were missed here';
const MORE_TEXT = 'More clips';
/** Clips shown at most, older pages included: the list stays light. */
const MAX_SHOWN = 500;

const CSS = `
.head { display: flex; align-items: center; justify-content: space-between; gap: 10px; margin-bottom: 10px; }
.feed[data-conn="reconnecting"] ol, .feed[data-conn="closed"] ol { opacity: 0.6; }
ol { list-style: none; margin: 0; padding: 0; display: grid; gap: 10px; }
li {
  display: grid; grid-template-columns: 112px 1fr; gap: 10px; align-items: start;
  padding-bottom: 10px; border-bottom: 1px solid var(--_border);
  animation: enter 500ms ease-out;
}
li:last-child { border-bottom: 0; padding-bottom: 0; }
li.missed {
  display: block; padding: 6px 10px; border: 1px dashed var(--_warn-fg); border-radius: 8px;
  background: var(--_warn-bg); color: var(--_warn-fg);
  font-size: 0.85em; font-weight: 600; text-align: center;
}
@keyframes enter { from { opacity: 0; transform: translateY(-6px); } }
@media (prefers-reduced-motion: reduce) { li { animation: none; } }
.thumb {
  position: relative; display: block; aspect-ratio: 16 / 9; border-radius: 8px; overflow: hidden;
  background: linear-gradient(135deg, var(--_row-alt), var(--_border));
}
.thumb img { display: block; width: 100%; height: 100%; object-fit: cover; }
.thumb.placeholder::after {
  content: "▶"; position: absolute; inset: 0; display: grid; place-items: center;
  color: var(--_muted); font-size: 1.4em;
}
.duration {
  position: absolute; right: 4px; bottom: 4px; padding: 1px 5px; border-radius: 4px;
  background: rgba(0, 0, 0, 0.75); color: #fff; font-size: 0.72em; font-weight: 600;
  font-variant-numeric: tabular-nums;
}
.title { font-weight: 600; color: var(--_fg); text-decoration: none; display: block; }
a.title:hover, a.title:focus-visible { color: var(--_accent); text-decoration: underline; }
a:focus-visible { outline: 3px solid var(--_accent); outline-offset: 2px; }
.sub { display: block; margin-top: 2px; font-size: 0.8em; color: var(--_muted); }
.empty { margin: 8px 0 0; color: var(--_muted); font-size: 0.9em; }
.more {
  display: block; width: 100%; margin-top: 10px; padding: 6px 10px; border-radius: 8px;
  border: 1px solid var(--_border); background: transparent; color: var(--_fg);
  font: inherit; font-size: 0.9em; font-weight: 600; cursor: pointer;
}
.more:hover:not(:disabled), .more:focus-visible { border-color: var(--_accent); color: var(--_accent); }
.more:focus-visible { outline: 3px solid var(--_accent); outline-offset: 2px; }
.more:disabled { cursor: progress; opacity: 0.7; }
@container (max-width: 380px) {
  .card { padding: 12px 10px; }
  li { grid-template-columns: 88px 1fr; gap: 8px; }
  :host { font-size: var(--tribune-font-size, 14px); }
}
`;

const MARKUP = `
<section class="card feed" part="feed" aria-labelledby="title" data-conn="connecting">
  <div class="head">
    <h2 id="title" part="title">Clips</h2>
    <span class="conn" role="status" data-state="connecting">Connecting…</span>
  </div>
  <ol part="list" aria-live="polite" aria-relevant="additions"></ol>
  <p class="empty" part="empty">No clips yet.</p>
  <button type="button" class="more" part="more" hidden>More clips</button>
</section>
`;

export class TribuneClips extends HTMLElement {
  static observedAttributes = ['topic', 'hub', 'ws-url', 'token', 'max', 'heading', 'delay'];

  #root;
  #parts;
  #connection;
  /** Older clips loaded with "more": the list keeps them besides `max`. */
  #older = 0;
  /** The hub said nothing older is retained (for this topic). */
  #noOlder = false;
  /** A history request in flight. */
  #loading = false;
  #delay;

  constructor() {
    super();
    this.#root = attachShadowFrom(this, CSS + DELAY_CSS, MARKUP);
    const q = (s) => this.#root.querySelector(s);
    this.#parts = { feed: q('.feed'), title: q('h2'), conn: q('.conn'), list: q('ol'), empty: q('.empty'), more: q('.more') };
    this.#connection = new WidgetConnection(this, { badge: this.#parts.conn, card: this.#parts.feed });
    this.#parts.more.addEventListener('click', () => this.loadMore());
    this.#delay = new DelayControl(this, this.#parts.feed, this.#parts.list);
  }

  /**
   * Loads the page of clips before the oldest shown (the newest page when
   * none is shown) and adds it under the list. Resolves with the page, or
   * null when nothing was asked (no topic, a request in flight, nothing
   * older); a refusal leaves the button to retry.
   */
  async loadMore() {
    const client = this.#connection.client;
    const topic = this.getAttribute('topic');
    if (!client || !topic || this.#loading || this.#noOlder) return null;
    const before = this.#oldestSeq();
    const more = this.#parts.more;
    this.#loading = true;
    more.disabled = true;
    more.textContent = 'Loading…';
    try {
      const page = await client.history(topic, { before: before ?? undefined, limit: this.max });
      // The topic changed meanwhile: this page belongs to another list.
      if (this.getAttribute('topic') !== topic) return null;
      this.#appendOlder(page);
      if (page.before === null) this.#noOlder = true;
      more.textContent = MORE_TEXT;
      this.dispatchEvent(new CustomEvent('tribune-history', { detail: page, bubbles: true, composed: true }));
      return page;
    } catch (err) {
      more.textContent = `${MORE_TEXT} (retry)`;
      more.title = err?.message ?? String(err);
      return null;
    } finally {
      this.#loading = false;
      more.disabled = false;
      this.#trim();
    }
  }

  /** The seq of the oldest clip shown (null when none). */
  #oldestSeq() {
    const seqs = [...this.#parts.list.querySelectorAll(':scope > li.clip')]
      .map((li) => Number(li.dataset.seq))
      .filter(Number.isSafeInteger);
    return seqs.length ? Math.min(...seqs) : null;
  }

  /**
   * A history page (oldest first) goes under the list, newest of it first;
   * a hole in it stands as a notice right below the clip after the hole.
   * Clips already shown (a live one that arrived meanwhile) are not doubled.
   */
  #appendOlder(page) {
    const list = this.#parts.list;
    const shown = new Set([...list.querySelectorAll(':scope > li.clip')].map((li) => li.dataset.id));
    const holesBefore = new Set(page.gaps.map((g) => g.before));
    let added = 0;
    for (const message of [...page.messages].reverse()) {
      const clip = message.data;
      if (clip === null || typeof clip !== 'object' || Array.isArray(clip)) continue;
      const id = text(clip.id) ?? `seq-${message.seq}`;
      if (!shown.has(id)) {
        const item = this.#item(clip);
        item.dataset.id = id;
        item.dataset.seq = String(message.seq);
        list.append(item);
        added++;
      }
      if (holesBefore.has(message.seq) && !list.lastElementChild?.classList.contains('missed')) {
        const notice = el(this.ownerDocument, 'li', 'missed', MISSED_TEXT);
        notice.setAttribute('part', 'missed');
        list.append(notice);
      }
    }
    this.#older += added;
  }

  /** Clips the list keeps: `max`, plus the older ones asked for. */
  get #limit() {
    return Math.min(this.max + this.#older, MAX_SHOWN);
  }

  get max() {
    const n = Number.parseInt(this.getAttribute('max') ?? '', 10);
    return Number.isFinite(n) && n > 0 ? Math.min(n, MAX_MAX) : DEFAULT_MAX;
  }

  /** The SDK subscription behind the list (null when not started). */
  get subscription() {
    return this.#connection.subscription;
  }

  connectedCallback() {
    this.#parts.title.textContent = this.getAttribute('heading') || 'Clips';
    this.#start();
  }

  disconnectedCallback() {
    this.#stop();
  }

  attributeChangedCallback(name, oldValue, newValue) {
    if (oldValue === newValue || !this.isConnected) return;
    if (name === 'heading') this.#parts.title.textContent = newValue || 'Clips';
    else if (name === 'max') this.#trim();
    else if (name === 'delay') {
      // Renewed where it is: the clips shown stay, none comes twice.
      this.#connection.subscription?.setDelay(delayOf(this));
      this.#delay.render();
    } else {
      this.#stop();
      this.#parts.list.replaceChildren();
      this.#older = 0;
      this.#noOlder = false;
      this.#start();
    }
  }

  #start() {
    // A feed replays nothing by default: ask for a list's worth of history.
    this.#delay.render();
    this.#connection.open({
      history: this.max,
      delayMs: delayOf(this),
      onMessage: (m) => this.#onMessage(m),
      onGap: (g) => this.#onGap(g),
      onRetract: (r) => this.#onRetract(r),
    });
  }

  #stop() {
    this.#connection.close();
  }

  #onMessage(message) {
    const clip = message.data;
    if (clip === null || typeof clip !== 'object' || Array.isArray(clip)) return;
    const id = text(clip.id) ?? `seq-${message.seq}`;
    const item = this.#item(clip);
    item.dataset.id = id;
    item.dataset.seq = String(message.seq);
    const existing = [...this.#parts.list.children].find((li) => li.dataset.id === id);
    if (existing) existing.replaceWith(item);
    else this.#parts.list.prepend(item);
    this.#trim();
    this.dispatchEvent(new CustomEvent('tribune-message', { detail: message, bubbles: true, composed: true }));
  }

  /**
   * Clips were lost (the hub could not deliver them, or a resume could not
   * recover them): the SDK says so right before the first clip after the
   * hole, so a notice on top of the list lands at the hole's place, newer
   * clips going above it. Two holes with no clip between read as one.
   */
  #onGap(gap) {
    const list = this.#parts.list;
    if (!list.firstElementChild?.classList.contains('missed')) {
      const notice = el(this.ownerDocument, 'li', 'missed', MISSED_TEXT);
      notice.setAttribute('part', 'missed');
      list.prepend(notice);
    }
    this.#trim();
    this.dispatchEvent(new CustomEvent('tribune-gap', { detail: gap, bubbles: true, composed: true }));
  }

  /** An editor took a clip down: it leaves the list, wherever it is. */
  #onRetract(retract) {
    const seq = String(retract.seq);
    for (const li of [...this.#parts.list.children]) {
      if (li.dataset.seq === seq) li.remove();
    }
    this.#trim();
    this.dispatchEvent(new CustomEvent('tribune-retract', { detail: retract, bubbles: true, composed: true }));
  }

  /**
   * At most `max` clips, plus the older ones "more" loaded (notices do not
   * count). A notice left at the bottom once older clips are cut marks a
   * hole next to nothing shown: it goes too. Cut clips may be loaded again.
   */
  #trim() {
    const list = this.#parts.list;
    let clips = list.querySelectorAll(':scope > li.clip').length;
    let cut = false;
    while (clips > this.#limit) {
      const last = list.lastElementChild;
      if (last.classList.contains('clip')) clips--;
      last.remove();
      cut = true;
    }
    while (cut && list.lastElementChild?.classList.contains('missed')) list.lastElementChild.remove();
    if (cut) this.#noOlder = false;
    this.#parts.empty.hidden = list.children.length > 0;
    // "More" once something is shown and older clips may be retained.
    this.#parts.more.hidden = this.#noOlder || clips === 0;
  }

  #item(clip) {
    const doc = this.ownerDocument;
    const li = el(doc, 'li', 'clip');
    li.setAttribute('part', 'clip');
    const href = safeUrl(clip.url, doc);
    const title = text(clip.title) ?? 'Untitled clip';

    const thumb = el(doc, href ? 'a' : 'span', 'thumb');
    if (href) {
      thumb.href = href;
      thumb.target = '_blank';
      thumb.rel = 'noopener noreferrer';
      thumb.tabIndex = -1; // the title link is the one stop for keyboards
      thumb.setAttribute('aria-hidden', 'true');
    }
    const src = safeUrl(clip.thumbnail, doc);
    if (src) {
      const img = el(doc, 'img');
      img.alt = '';
      img.loading = 'lazy';
      img.decoding = 'async';
      img.referrerPolicy = 'no-referrer';
      img.addEventListener('error', () => {
        img.remove();
        thumb.classList.add('placeholder');
      });
      img.src = src;
      thumb.append(img);
    } else {
      thumb.classList.add('placeholder');
    }
    const duration = formatDuration(clip.duration_s);
    if (duration) {
      const badge = el(doc, 'span', 'duration', duration);
      badge.setAttribute('aria-label', `${duration} long`);
      thumb.append(badge);
    }

    const body = el(doc, 'div', 'body');
    const heading = el(doc, href ? 'a' : 'span', 'title', title);
    if (href) {
      heading.href = href;
      heading.target = '_blank';
      heading.rel = 'noopener noreferrer';
    }
    body.append(heading);
    const sub = [text(clip.source), publishedTime(clip.published_at)]
      .filter(Boolean)
      .join(' · ');
    if (sub) body.append(el(doc, 'span', 'sub', sub));
    li.append(thumb, body);
    return li;
  }
}

function publishedTime(value) {
  if (typeof value !== 'string') return null;
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return null;
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

if (!customElements.get('tribune-clips')) customElements.define('tribune-clips', TribuneClips);
