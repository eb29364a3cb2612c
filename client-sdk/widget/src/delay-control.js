// The spoiler shield in a widget (PROTOCOL.md section 13): the `delay`
// attribute (milliseconds, 0 to 120000) subscribes with the SDK's `delayMs`,
// so the widget shows the event as it stood that long ago, in step with a
// broadcast that runs behind live. While the attribute is present a small
// "synced to your stream" control shows the delay with −15 s / +15 s buttons;
// a button changes the attribute, and the widget renews its subscription
// where it is (`since`) with the new delay: nothing shown is lost or shown
// twice, and nothing newer than the new delay appears.

import { el } from './shared.js';

export const DELAY_STEP_MS = 15000;
export const MAX_DELAY_MS = 120000;

/** The element's `delay` in ms, clamped to what a hub accepts; 0 without one. */
export function delayOf(element) {
  const n = Number.parseInt(element.getAttribute('delay') ?? '', 10);
  if (!Number.isFinite(n) || n <= 0) return 0;
  return Math.min(n, MAX_DELAY_MS);
}

export const DELAY_CSS = `
.sync {
  display: flex; align-items: center; gap: 6px; margin: 0 0 10px;
  font-size: 0.8em; color: var(--_muted);
}
.sync[hidden] { display: none; }
.sync .behind { flex: 1; }
.sync button {
  font: inherit; font-weight: 600; padding: 2px 8px; border-radius: 6px; cursor: pointer;
  border: 1px solid var(--_border); background: var(--_row-alt); color: var(--_fg);
}
.sync button:disabled { opacity: 0.5; cursor: default; }
.sync button:focus-visible { outline: 3px solid var(--_accent); outline-offset: 2px; }
`;

/** The control: built inside `container` (before its list), shown while `delay` is set. */
export class DelayControl {
  #host;
  #box;
  #label;
  #earlier;
  #later;

  constructor(host, container, before) {
    this.#host = host;
    const doc = host.ownerDocument;
    this.#box = el(doc, 'div', 'sync');
    this.#box.setAttribute('part', 'sync');
    this.#box.setAttribute('role', 'group');
    this.#box.setAttribute('aria-label', 'Synced to your stream');
    // No live region of its own: the change follows the fan's own click, and
    // each widget keeps one live region for what the hub sends.
    this.#label = el(doc, 'span', 'behind');
    this.#earlier = this.#button(doc, '−15 s', 'Show 15 seconds sooner', -DELAY_STEP_MS);
    this.#later = this.#button(doc, '+15 s', 'Show 15 seconds later', DELAY_STEP_MS);
    this.#box.append(this.#label, this.#earlier, this.#later);
    container.insertBefore(this.#box, before);
    this.render();
  }

  #button(doc, label, aria, step) {
    const button = el(doc, 'button', step < 0 ? 'earlier' : 'later', label);
    button.type = 'button';
    button.setAttribute('aria-label', aria);
    button.addEventListener('click', () => {
      const next = Math.max(0, Math.min(MAX_DELAY_MS, delayOf(this.#host) + step));
      this.#host.setAttribute('delay', String(next));
    });
    return button;
  }

  /** Shows the current delay (hidden without a `delay` attribute). */
  render() {
    const present = this.#host.hasAttribute('delay');
    this.#box.hidden = !present;
    const delay = delayOf(this.#host);
    this.#label.textContent = delay === 0 ? 'Synced to your stream · live' : `Synced to your stream · ${Math.round(delay / 1000)} s behind`;
    this.#earlier.disabled = delay === 0;
    this.#later.disabled = delay >= MAX_DELAY_MS;
  }
}
