// WidgetConnection: a widget's link to its topic, the part both components
// share: the subscription through the page's shared client, the connection
// badge (`.conn`, role="status") and the card's `data-conn` following the
// client's state, "Unavailable" when the topic cannot be had, and the
// `tribune-state` event. The components keep only what they render.

import { clientFor } from './shared.js';

const CONNECTION_LABELS = {
  idle: 'Connecting…',
  connecting: 'Connecting…',
  connected: 'Live',
  reconnecting: 'Reconnecting…',
  closed: 'Disconnected',
};

/**
 * The connection indicator's state: once a widget has been live, any
 * attempt to get back is shown as "reconnecting", not "connecting".
 */
export function connectionView(state, everConnected) {
  const shown = everConnected && state === 'connecting' ? 'reconnecting' : state;
  return { state: shown, label: CONNECTION_LABELS[shown] ?? shown };
}

export class WidgetConnection {
  /** The custom element: its attributes choose the topic and hub; events go out from it. */
  #host;
  /** The `.conn` badge. */
  #badge;
  /** The card whose `data-conn` lets the CSS dim stale content. */
  #card;
  /** Called with the shown state after every change, for what else follows it. */
  #onShow;
  #client = null;
  #sub = null;
  #offState = null;
  /** Whether this widget was ever live: decides "connecting" or "reconnecting". */
  #everConnected = false;

  constructor(host, { badge, card, onShow = () => {} }) {
    this.#host = host;
    this.#badge = badge;
    this.#card = card;
    this.#onShow = onShow;
  }

  /** The page's client once opened, else null. */
  get client() {
    return this.#client;
  }

  /** The SDK subscription (null when not open). */
  get subscription() {
    return this.#sub;
  }

  /** The state the badge shows (`connected`, `reconnecting`, `closed`, ...). */
  get state() {
    return this.#badge.dataset.state;
  }

  /**
   * Subscribes to the host's `topic` with the SDK `options` (callbacks,
   * history). Returns whether it did: not without a topic, nor when the SDK
   * refuses (a bad topic or hub URL), which the badge then says.
   */
  open(options) {
    const topic = this.#host.getAttribute('topic');
    if (!topic) return false;
    try {
      this.#client = clientFor(this.#host);
      this.#sub = this.#client.subscribe(topic, {
        ...options,
        // Transient errors are retried by the SDK; only a refusal for good
        // (the subscription ended) changes what the widget shows.
        onError: (e) => {
          options.onError?.(e);
          if (this.#sub?.closed) this.#show('closed', `Unavailable: ${e.code}`);
        },
        // The hub ended the subscription: the page's token no longer
        // grants the topic. Nothing more comes until the page changes it.
        onUnsubscribed: (e) => {
          options.onUnsubscribed?.(e);
          this.#show('closed', `Unavailable: ${e.code}`);
        },
      });
    } catch (err) {
      this.#show('closed', `Unavailable: ${err.message}`);
      return false;
    }
    this.#offState = this.#client.on('state', ({ state }) => this.#onState(state));
    this.#onState(this.#client.state);
    return true;
  }

  /** Unsubscribes and stops following the client; `open` may follow again. */
  close() {
    this.#offState?.();
    this.#offState = null;
    this.#sub?.unsubscribe();
    this.#sub = null;
  }

  #onState(state) {
    if (state === 'connected') this.#everConnected = true;
    const view = connectionView(state, this.#everConnected);
    this.#show(view.state, view.label);
    this.#host.dispatchEvent(new CustomEvent('tribune-state', { detail: { state: view.state }, bubbles: true, composed: true }));
  }

  #show(state, label) {
    this.#badge.dataset.state = state;
    this.#badge.textContent = label;
    this.#card.dataset.conn = state;
    this.#onShow(state);
  }
}
