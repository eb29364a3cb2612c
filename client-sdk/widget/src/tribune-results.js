// <tribune-results topic="results...">: the live board of one event
// (docs/PAYLOADS.md "Live results"), with its connection state, "updated N s ago",
// the audience count and a reaction bar whose meters follow the hub's live
// `stats` (PROTOCOL.md sections 3 and 4).
//
// Attributes: topic (required), hub / ws-url (default: the hub serving this
// script), token, heading (title before the first payload), reactions
// (space-separated; "none" hides the bar), theme (light|dark), delay (ms
// behind live, 0 to 120000: the spoiler shield, with its "synced to your
// stream" control; results, reactions and the audience all come that late).
// Events (bubbling, composed): tribune-message {detail: message event},
// tribune-stats {detail: stats event}, tribune-state {detail: {state}}.

import { WidgetConnection } from './connection.js';
import { DELAY_CSS, DelayControl, delayOf } from './delay-control.js';
import { attachShadowFrom, el, formatAgo, text } from './shared.js';

const DEFAULT_REACTIONS = ['🔥', '👏', '😮', '😢'];
const EVENT_STATUSES = new Set(['scheduled', 'live', 'final', 'cancelled']);
const ROW_STATUSES = new Set(['ok', 'dnf', 'dns', 'dsq']);
const HIGHLIGHT_MS = 1600;
/** Smallest full scale of the reaction meters, in reactions per window. */
const METER_FLOOR = 5;
/** How much of the previous full scale survives each stats window. */
const METER_DECAY = 0.9;

const CSS = `
.head { display: flex; align-items: flex-start; justify-content: space-between; gap: 10px; }
.titles { min-width: 0; }
.meta { margin: 2px 0 0; color: var(--_muted); font-size: 0.88em; }
.status {
  flex: none; font-size: 0.75em; font-weight: 700; letter-spacing: 0.06em;
  text-transform: uppercase; padding: 3px 8px; border-radius: 999px;
  border: 1px solid var(--_border); color: var(--_muted);
}
.status:empty { display: none; }
.status[data-status="live"] { color: #fff; background: var(--_live); border-color: var(--_live); }
.status[data-status="final"] { color: var(--_final); border-color: var(--_final); }
.line {
  display: flex; flex-wrap: wrap; align-items: center; gap: 6px 14px;
  margin: 10px 0 8px; font-size: 0.85em; color: var(--_muted);
}
.audience { font-weight: 600; color: var(--_fg); }
.board[data-conn="reconnecting"] table, .board[data-conn="closed"] table { opacity: 0.55; }
table { width: 100%; border-collapse: collapse; table-layout: fixed; font-variant-numeric: tabular-nums; }
th, td { padding: 7px 6px; text-align: left; vertical-align: top; }
thead th {
  font-size: 0.75em; text-transform: uppercase; letter-spacing: 0.05em;
  color: var(--_muted); border-bottom: 2px solid var(--_border); font-weight: 700;
}
tbody tr { border-bottom: 1px solid var(--_border); }
tbody tr:nth-child(even) { background: var(--_row-alt); }
tbody th { font-weight: 600; }
.c-rank { width: 2.4em; text-align: right; padding-right: 8px; }
.c-result { width: 6.2em; text-align: right; white-space: nowrap; overflow-wrap: normal; }
.c-gap { width: 4.8em; text-align: right; color: var(--_muted); white-space: nowrap; overflow-wrap: normal; }
.noc { margin-left: 6px; font-size: 0.75em; font-weight: 600; color: var(--_muted); }
.members { display: block; font-weight: 400; font-size: 0.8em; color: var(--_muted); }
.flag { font-size: 0.8em; font-weight: 700; color: var(--_live); }
tr.changed > * { animation: flash ${HIGHLIGHT_MS}ms ease-out; }
@keyframes flash { from { background: var(--_highlight); } to { background: transparent; } }
@media (prefers-reduced-motion: reduce) {
  tr.changed > * { animation: none; background: var(--_highlight); }
}
.empty { margin: 14px 0; color: var(--_muted); font-size: 0.9em; }
.reactions {
  display: grid; grid-template-columns: repeat(auto-fit, minmax(62px, 1fr));
  gap: 8px; margin-top: 14px;
}
.reactions:empty { display: none; }
.react {
  display: grid; grid-template-columns: auto 1fr; grid-template-rows: auto auto;
  align-items: center; gap: 2px 6px; min-width: 0; min-height: 44px;
  padding: 6px 8px; border: 1px solid var(--_border); border-radius: 10px;
  background: var(--_bg); color: var(--_fg); font: inherit; cursor: pointer;
  touch-action: manipulation;
}
.react:hover { border-color: var(--_accent); }
.react:focus-visible { outline: 3px solid var(--_accent); outline-offset: 2px; }
.react:disabled { cursor: not-allowed; opacity: 0.5; }
.emoji { grid-row: 1 / 3; font-size: 1.35em; line-height: 1; }
.count { font-size: 0.8em; font-weight: 700; text-align: right; font-variant-numeric: tabular-nums; }
.meter { grid-column: 2; height: 6px; border-radius: 3px; background: var(--_row-alt); overflow: hidden; }
.fill {
  display: block; height: 100%; width: 100%; background: var(--_meter);
  transform-origin: left center; transform: scaleX(0);
  transition: transform 600ms cubic-bezier(0.2, 0.8, 0.2, 1);
}
.react.sent .emoji { animation: pop 300ms ease-out; }
.react.limited { border-color: var(--_live); }
@keyframes pop { 50% { transform: scale(1.35); } }
@media (prefers-reduced-motion: reduce) {
  .fill { transition: none; }
  .react.sent .emoji { animation: none; }
}
@container (max-width: 380px) {
  .card { padding: 12px 10px 12px; }
  th, td { padding: 6px 3px; }
  .c-rank { width: 1.9em; padding-right: 4px; }
  .c-result { width: 5.3em; }
  .c-gap { width: 4.1em; }
  :host { font-size: var(--tribune-font-size, 14px); }
}
`;

const MARKUP = `
<section class="card board" part="board" aria-labelledby="title" data-conn="connecting">
  <div class="head">
    <div class="titles">
      <h2 id="title" part="title">Live results</h2>
      <p class="meta" part="meta"></p>
    </div>
    <span class="status" part="status"></span>
  </div>
  <div class="line">
    <span class="conn" role="status" data-state="connecting">Connecting…</span>
    <span class="updated" part="updated"></span>
    <span class="audience" part="audience" hidden></span>
  </div>
  <table part="table" hidden>
    <caption class="sr-only">Results</caption>
    <thead>
      <tr>
        <th scope="col" class="c-rank" aria-label="Rank">#</th>
        <th scope="col" class="c-name">Name</th>
        <th scope="col" class="c-result">Result</th>
        <th scope="col" class="c-gap">Gap</th>
      </tr>
    </thead>
    <tbody></tbody>
  </table>
  <p class="empty" part="empty">Waiting for results…</p>
  <div class="reactions" part="reactions" role="group" aria-label="Cheer"></div>
  <p class="announce sr-only" aria-live="polite" aria-atomic="true"></p>
</section>
`;

export class TribuneResults extends HTMLElement {
  static observedAttributes = ['topic', 'hub', 'ws-url', 'token', 'reactions', 'heading', 'delay'];

  #root;
  #parts;
  #connection;
  #delay;
  #rows = new Map();
  #lastTs = null;
  #ticker = null;
  #buttons = new Map();
  #highlightTimers = new Set();
  #scale = 0;

  constructor() {
    super();
    this.#root = attachShadowFrom(this, CSS + DELAY_CSS, MARKUP);
    const q = (s) => this.#root.querySelector(s);
    this.#parts = {
      board: q('.board'),
      title: q('h2'),
      meta: q('.meta'),
      status: q('.status'),
      conn: q('.conn'),
      updated: q('.updated'),
      audience: q('.audience'),
      caption: q('caption'),
      table: q('table'),
      tbody: q('tbody'),
      empty: q('.empty'),
      reactions: q('.reactions'),
      announce: q('.announce'),
    };
    this.#connection = new WidgetConnection(this, {
      badge: this.#parts.conn,
      card: this.#parts.board,
      // Reactions go out only while live.
      onShow: (state) => {
        for (const b of this.#buttons.values()) b.button.disabled = state !== 'connected' || b.forbidden;
      },
    });
    this.#delay = new DelayControl(this, this.#parts.board, this.#parts.table);
  }

  connectedCallback() {
    this.#renderHeading();
    this.#buildReactions();
    this.#start();
  }

  disconnectedCallback() {
    this.#stop();
  }

  attributeChangedCallback(name, oldValue, newValue) {
    if (oldValue === newValue || !this.isConnected) return;
    if (name === 'reactions') this.#buildReactions();
    else if (name === 'heading') this.#renderHeading();
    else if (name === 'delay') {
      this.#connection.subscription?.setDelay(delayOf(this));
      this.#delay.render();
    } else {
      this.#stop();
      this.#start();
    }
  }

  /** The SDK subscription behind the board (null when not started). */
  get subscription() {
    return this.#connection.subscription;
  }

  #start() {
    this.#delay.render();
    const open = this.#connection.open({
      delayMs: delayOf(this),
      onMessage: (m) => this.#onMessage(m),
      onStats: (s) => this.#onStats(s),
    });
    if (open) this.#ticker = setInterval(() => this.#renderUpdated(), 1000);
  }

  #stop() {
    this.#connection.close();
    clearInterval(this.#ticker);
    this.#ticker = null;
    for (const t of this.#highlightTimers) clearTimeout(t);
    this.#highlightTimers.clear();
  }

  #renderHeading() {
    if (this.#rows.size === 0 && !this.#parts.title.dataset.fromPayload) {
      this.#parts.title.textContent = this.getAttribute('heading') || 'Live results';
    }
  }

  #onMessage(message) {
    const data = message.data;
    if (data === null || typeof data !== 'object' || Array.isArray(data)) return;
    this.#lastTs = message.ts;
    const event = data.event && typeof data.event === 'object' ? data.event : {};
    const name = text(event.name);
    if (name) {
      this.#parts.title.textContent = name;
      this.#parts.title.dataset.fromPayload = '1';
    }
    this.#parts.caption.textContent = `Results: ${name ?? this.#parts.title.textContent}`;
    this.#parts.meta.textContent = [event.venue, event.phase].map(text).filter(Boolean).join(' · ');
    const status = text(event.status);
    this.#parts.status.textContent = status ?? '';
    this.#parts.status.dataset.status = status && EVENT_STATUSES.has(status) ? status : 'other';
    this.#renderRows(Array.isArray(data.rows) ? data.rows : [], !message.replay);
    this.#renderUpdated();
    this.dispatchEvent(new CustomEvent('tribune-message', { detail: message, bubbles: true, composed: true }));
  }

  #renderRows(rows, highlight) {
    const doc = this.ownerDocument;
    const seen = new Set();
    const ordered = [];
    const changes = [];
    rows.forEach((row, index) => {
      if (row === null || typeof row !== 'object') return;
      let key = text(row.name) ?? `#${index}`;
      while (seen.has(key)) key += `#${index}`;
      seen.add(key);
      const view = rowView(row);
      const signature = JSON.stringify(view);
      let entry = this.#rows.get(key);
      if (!entry) {
        const tr = el(doc, 'tr');
        const rank = el(doc, 'td', 'c-rank');
        const nameCell = el(doc, 'th', 'c-name');
        nameCell.scope = 'row';
        const result = el(doc, 'td', 'c-result');
        const gap = el(doc, 'td', 'c-gap');
        tr.append(rank, nameCell, result, gap);
        entry = { tr, cells: { rank, nameCell, result, gap }, signature: null };
        this.#rows.set(key, entry);
      }
      if (entry.signature !== signature) {
        fillRow(doc, entry.cells, view);
        // Replayed boards (page load, resume) are not news: only live ones flash.
        if (highlight) changes.push({ entry, view });
        entry.signature = signature;
      }
      ordered.push(entry.tr);
    });
    for (const [key, entry] of this.#rows) {
      if (!seen.has(key)) {
        entry.tr.remove();
        this.#rows.delete(key);
      }
    }
    // Moving existing rows (append moves) keeps their nodes, so a highlight
    // in progress survives a reorder.
    this.#parts.tbody.append(...ordered);
    this.#parts.empty.hidden = ordered.length > 0;
    this.#parts.table.hidden = ordered.length === 0;
    for (const { entry } of changes) this.#highlight(entry.tr);
    const leader = changes.find((c) => c.view.rank === '1');
    if (leader) {
      this.#parts.announce.textContent = `${leader.view.name} leads${leader.view.result ? `, ${leader.view.result}` : ''}`;
    }
  }

  #highlight(tr) {
    tr.classList.remove('changed');
    // Restart the animation on a row that changes again while it plays.
    void tr.offsetWidth;
    tr.classList.add('changed');
    const timer = setTimeout(() => {
      this.#highlightTimers.delete(timer);
      tr.classList.remove('changed');
    }, HIGHLIGHT_MS);
    this.#highlightTimers.add(timer);
  }

  #renderUpdated() {
    if (this.#lastTs === null) return;
    this.#parts.updated.textContent = `Updated ${formatAgo(Date.now() - this.#lastTs)}`;
  }

  #buildReactions() {
    const attr = this.getAttribute('reactions');
    const list =
      attr === null ? DEFAULT_REACTIONS : attr.trim() === 'none' ? [] : attr.split(/\s+/).filter(Boolean).slice(0, 8);
    const doc = this.ownerDocument;
    this.#parts.reactions.replaceChildren();
    this.#buttons.clear();
    for (const reaction of list) {
      const button = el(doc, 'button', 'react');
      button.type = 'button';
      button.dataset.reaction = reaction;
      button.setAttribute('part', 'reaction');
      const emoji = el(doc, 'span', 'emoji', reaction);
      emoji.setAttribute('aria-hidden', 'true');
      const count = el(doc, 'span', 'count', '0');
      const meter = el(doc, 'span', 'meter');
      meter.setAttribute('aria-hidden', 'true');
      const fill = el(doc, 'span', 'fill');
      meter.append(fill);
      button.append(emoji, count, meter);
      const entry = { button, count, fill, forbidden: false, value: 0 };
      this.#label(reaction, entry);
      button.addEventListener('click', () => this.#react(reaction, entry));
      this.#buttons.set(reaction, entry);
      this.#parts.reactions.append(button);
    }
    const state = this.#connection.state;
    for (const b of this.#buttons.values()) b.button.disabled = state !== 'connected';
  }

  #label(reaction, entry) {
    entry.button.setAttribute('aria-label', `Send ${reaction} (${entry.value} in the last moment)`);
  }

  async #react(reaction, entry) {
    const { client, subscription } = this.#connection;
    if (!client || !subscription) return;
    entry.button.classList.remove('sent', 'limited');
    void entry.button.offsetWidth;
    entry.button.classList.add('sent');
    try {
      await client.react(subscription.topic, reaction);
    } catch (err) {
      if (err.code === 'forbidden' || err.code === 'bad_request') {
        // This namespace has no reactions (or not this one): stop offering it.
        entry.forbidden = true;
        entry.button.disabled = true;
        entry.button.hidden = true;
      } else if (err.code === 'rate_limited') {
        entry.button.classList.add('limited');
      }
    }
  }

  #onStats(stats) {
    const audience = this.#parts.audience;
    audience.hidden = false;
    audience.textContent = `${formatCount(stats.audience)} watching`;
    const counts = stats.reactions ?? {};
    // The meter's full scale follows the recent peak and decays slowly, with
    // a floor: a lone tap fills part of a bar, a burst fills it, and the bars
    // do not all jump to full when every count is 1.
    this.#scale = Math.max(METER_FLOOR, ...Object.values(counts), this.#scale * METER_DECAY);
    const max = this.#scale;
    for (const [reaction, entry] of this.#buttons) {
      const value = Number.isFinite(counts[reaction]) ? counts[reaction] : 0;
      entry.value = value;
      entry.count.textContent = formatCount(value);
      entry.fill.style.transform = `scaleX(${Math.min(1, value / max).toFixed(3)})`;
      this.#label(reaction, entry);
    }
    this.dispatchEvent(new CustomEvent('tribune-stats', { detail: stats, bubbles: true, composed: true }));
  }
}

/** What a row shows, as strings (or null); also its change signature. */
function rowView(row) {
  const status = text(row.status);
  const members = Array.isArray(row.members) ? row.members.map(text).filter(Boolean) : [];
  return {
    rank: row.rank === null || row.rank === undefined ? null : text(row.rank),
    name: text(row.name) ?? '—',
    noc: text(row.noc),
    members: members.join(', '),
    result: text(row.result),
    gap: text(row.gap),
    status: status && ROW_STATUSES.has(status) ? status : status ? 'other' : 'ok',
    statusText: status,
  };
}

function fillRow(doc, cells, view) {
  cells.rank.textContent = view.rank ?? '';
  cells.nameCell.replaceChildren(el(doc, 'span', 'name', view.name));
  if (view.noc) cells.nameCell.append(el(doc, 'span', 'noc', view.noc));
  if (view.members) cells.nameCell.append(el(doc, 'span', 'members', view.members));
  if (view.result) {
    cells.result.replaceChildren(doc.createTextNode(view.result));
  } else if (view.status !== 'ok' && view.statusText) {
    cells.result.replaceChildren(el(doc, 'span', 'flag', view.statusText.toUpperCase()));
  } else {
    cells.result.replaceChildren();
  }
  cells.gap.textContent = view.gap ?? '';
}

const numberFormat = typeof Intl !== 'undefined' ? new Intl.NumberFormat() : null;
function formatCount(n) {
  return numberFormat ? numberFormat.format(n) : String(n);
}

if (!customElements.get('tribune-results')) customElements.define('tribune-results', TribuneResults);
