// Types of the Tribune web components (tribune-widget.js): the two custom
// elements, the events they dispatch, and the helpers the entry exports.
// Like the widget's code, they reach the SDK as ../sdk/tribune.js: a hub
// serves the widget at /widget/ beside the SDK at /sdk/, and the npm package
// has the same two folders.

import type { ConnectionStateName, GapEvent, HistoryPage, JsonValue, MessageEvent, RetractEvent, StatsEvent, Subscription } from '../sdk/tribune.js';

/** `detail` of `tribune-state`: the state the connection badge shows. */
export interface TribuneStateDetail {
  state: ConnectionStateName;
}

/** The events both components dispatch (bubbling, composed). */
export interface TribuneWidgetEventMap {
  'tribune-message': CustomEvent<MessageEvent<JsonValue>>;
  'tribune-state': CustomEvent<TribuneStateDetail>;
}

/** `<tribune-results>` also dispatches the hub's live `stats`. */
export interface TribuneResultsEventMap extends TribuneWidgetEventMap {
  'tribune-stats': CustomEvent<StatsEvent>;
}

/** `<tribune-clips>` also says where clips were lost, and which were retracted (removed). */
export interface TribuneClipsEventMap extends TribuneWidgetEventMap {
  'tribune-gap': CustomEvent<GapEvent>;
  /** A page of older clips the "More clips" button (or `loadMore()`) added. */
  'tribune-history': CustomEvent<HistoryPage>;
  'tribune-retract': CustomEvent<RetractEvent>;
}

/**
 * `<tribune-results topic="results...">`: the live board of one event
 * (docs/PAYLOADS.md "Live results"). Attributes: `topic`, `hub`, `ws-url`,
 * `token`, `heading`, `reactions` (space-separated, `none` hides the bar),
 * `theme` (`light` | `dark`), `delay` (ms behind live, 0 to 120000: the
 * spoiler shield, with a "synced to your stream" −15 s / +15 s control).
 */
export class TribuneResults extends HTMLElement {
  static observedAttributes: string[];
  connectedCallback(): void;
  disconnectedCallback(): void;
  attributeChangedCallback(name: string, oldValue: string | null, newValue: string | null): void;
  addEventListener<K extends keyof TribuneResultsEventMap>(
    type: K,
    listener: (this: TribuneResults, ev: TribuneResultsEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener<K extends keyof HTMLElementEventMap>(
    type: K,
    listener: (this: TribuneResults, ev: HTMLElementEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | AddEventListenerOptions): void;
}

/**
 * `<tribune-clips topic="clips...">`: the clips feed (docs/PAYLOADS.md
 * "Social clips"), newest first. Attributes: `topic`, `hub`, `ws-url`,
 * `token`, `heading`, `max` (default 12, at most 100), `theme`, `delay`
 * (as on `<tribune-results>`). A retracted clip leaves the list.
 */
export class TribuneClips extends HTMLElement {
  static observedAttributes: string[];
  /** The `max` attribute as used: clips shown at most. */
  readonly max: number;
  /** The SDK subscription behind the list (null when not started). */
  readonly subscription: Subscription | null;
  /**
   * Adds the page of clips before the oldest shown ("More clips"); null
   * when nothing was asked (no topic, a request in flight, nothing older)
   * or the hub refused (the button then offers a retry).
   */
  loadMore(): Promise<HistoryPage | null>;
  connectedCallback(): void;
  disconnectedCallback(): void;
  attributeChangedCallback(name: string, oldValue: string | null, newValue: string | null): void;
  addEventListener<K extends keyof TribuneClipsEventMap>(
    type: K,
    listener: (this: TribuneClips, ev: TribuneClipsEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener<K extends keyof HTMLElementEventMap>(
    type: K,
    listener: (this: TribuneClips, ev: HTMLElementEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | AddEventListenerOptions): void;
}

/**
 * The websocket URL a widget element talks to: its `ws-url` attribute, else
 * its `hub` attribute, else the hub that served the widget's script.
 */
export function resolveWsUrl(element: Element): string;

/** `value` as a URL fit for a link or an image (`https:` or same-origin), else null. */
export function safeUrl(value: unknown, doc?: Document): string | null;

declare global {
  interface HTMLElementTagNameMap {
    'tribune-results': TribuneResults;
    'tribune-clips': TribuneClips;
  }
}
