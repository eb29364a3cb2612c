// Types of the Tribune JavaScript SDK: everything tribune.js exports (from
// protocol.js, client.js and subscription.js).

/** Protocol version this SDK speaks. */
export const PROTOCOL_VERSION: 1;
/** WebSocket subprotocol offered to the hub. */
export const SUBPROTOCOL: 'tribune.v1';
export const MAX_TOPIC_BYTES: 200;
export const MAX_TOKEN_LEN: 64;
export const MIN_TOKENS: 2;
export const MAX_TOKENS: 8;
export const MAX_CLIENT_FRAME_BYTES: 4096;

/** Close codes of PROTOCOL.md section 6, and the two a client uses itself. */
export const CloseCode: Readonly<{
  NORMAL: 1000;
  DRAINING: 1001;
  BINARY_FRAME: 1003;
  /** Never sent: a connection that died without a close frame. */
  ABNORMAL: 1006;
  POLICY: 1008;
  FRAME_TOO_LARGE: 1009;
  INTERNAL: 1011;
  /** Sent by a client that leaves on its own to come back at once. */
  CLIENT_RESTART: 4000;
  SLOW_CONSUMER: 4008;
  FLOOD: 4029;
}>;

export type HubErrorCode =
  | 'bad_request'
  | 'bad_topic'
  | 'unknown_namespace'
  | 'forbidden'
  | 'too_many_subscriptions'
  | 'rate_limited'
  | 'payload_too_large'
  | 'unavailable';

export type SdkErrorCode =
  | 'bad_frame'
  | 'discontinuity'
  | 'not_connected'
  | 'disconnected'
  | 'closed'
  | 'timeout'
  | 'protocol_mismatch';

export const ERROR_CODES: readonly HubErrorCode[];

export class TribuneError extends Error {
  constructor(code: HubErrorCode | SdkErrorCode | string, message: string, details?: unknown);
  readonly name: 'TribuneError';
  readonly code: HubErrorCode | SdkErrorCode | string;
  readonly details?: unknown;
}

export type Mode = 'state' | 'feed';
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

// ---- frames (PROTOCOL.md sections 3 and 4)

export type Id = number | bigint;

export type ClientFrame =
  | {
      type: 'subscribe';
      id: Id;
      topic: string;
      history?: number;
      since?: number;
      epoch?: string;
      /** `'fossil'`: ask for delta updates (state topics). */
      delta?: string;
      /** The spoiler shield: deliver everything this many ms after the bus stored it (0 to 120000). */
      delay_ms?: number;
    }
  | { type: 'unsubscribe'; id: Id; topic: string }
  | { type: 'publish'; id: Id; topic: string; data: JsonValue }
  | { type: 'ping'; id: Id }
  | { type: 'react'; id: Id; topic: string; reaction: string }
  | { type: 'auth'; id: Id; token: string };

export interface WelcomeFrame {
  type: 'welcome';
  protocol: number;
  node: string;
  conn: string;
  heartbeat_ms: number;
  /** The handshake token's `exp` (Unix seconds). */
  expires_at?: number;
}
export interface AckFrame {
  type: 'ack';
  id: number;
  topic?: string;
  mode?: Mode;
  epoch?: string;
  seq?: number;
  recovered?: boolean;
  /** Present when the subscribe asked for deltas: whether they were granted. */
  delta?: boolean;
  /** For `auth`: the new token's `exp` (Unix seconds). */
  expires_at?: number;
}
export interface MessageFrame {
  type: 'message';
  topic: string;
  seq: number;
  prev: number;
  /** When the bus stored it, Unix milliseconds. */
  ts: number;
  /** Replayed history (on subscribe or resume), not live. */
  replay: boolean;
  /** `data` is a string holding the Fossil delta from the message `prev`. */
  delta: boolean;
  data: JsonValue;
}
export interface ErrorFrame {
  type: 'error';
  id: number | null;
  code: HubErrorCode | string;
  message: string;
}
export interface PongFrame {
  type: 'pong';
  id: number;
}
export interface DrainFrame {
  type: 'drain';
  retry_ms: number;
}
export interface StatsFrame {
  type: 'stats';
  topic: string;
  audience: number;
  reactions: Record<string, number>;
  window_ms: number;
}
/** Feed messages with `after < seq < before` are lost; the message `before` follows. */
export interface GapFrame {
  type: 'gap';
  topic: string;
  after: number;
  before: number;
}
/** An editor retracted message `seq`; `at` is the retraction's own place in the chain. */
export interface RetractFrame {
  type: 'retract';
  topic: string;
  seq: number;
  at: number;
  prev: number;
  ts: number;
  replay: boolean;
}
/** The hub ended this subscription (a refreshed token no longer grants it). */
export interface UnsubscribedFrame {
  type: 'unsubscribed';
  topic: string;
  code: HubErrorCode | string;
}
export type ServerFrame =
  | WelcomeFrame
  | AckFrame
  | MessageFrame
  | ErrorFrame
  | PongFrame
  | DrainFrame
  | StatsFrame
  | GapFrame
  | RetractFrame
  | UnsubscribedFrame;

/** Decodes and validates one hub frame; throws TribuneError('bad_frame'). */
export function decodeServerFrame(text: unknown): ServerFrame;
/** Validates and encodes one client frame; throws TribuneError('bad_request' | 'bad_topic'). */
export function encodeClientFrame(frame: ClientFrame): string;
/** null when valid, else the reason. */
export function validateTopic(topic: unknown): string | null;
export function isValidTopic(topic: unknown): topic is string;
export function namespaceOf(topic: string): string;
export function reconnectPolicy(code: number): 'never' | 'immediately' | 'backoff';
export function backoffDelay(
  attempt: number,
  options?: { initialMs?: number; maxMs?: number },
  random?: () => number,
): number;
/** `https://hub/` → `wss://hub/v1/ws`. */
export function wsUrlFromHub(hub: string): string;

// ---- client

export type ConnectionStateName = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';
export const ConnectionState: Readonly<{
  IDLE: 'idle';
  CONNECTING: 'connecting';
  CONNECTED: 'connected';
  RECONNECTING: 'reconnecting';
  CLOSED: 'closed';
}>;

/** A message delivered on a subscription: the hub's frame, its payload typed. */
export interface MessageEvent<T = JsonValue> extends Omit<MessageFrame, 'data' | 'delta'> {
  data: T;
}

/**
 * Messages of a feed were lost for this subscriber: a resume that the hub
 * could not recover (`not_recovered`, `epoch_changed`), messages the hub
 * could not deliver although the bus had stored them (`lost`: every seq
 * between `after` and `before`), or a reader that fell more than
 * `bufferSize` events behind (`buffer_overflow`). It comes in the event
 * order at the place of the hole.
 */
export interface GapEvent {
  type: 'gap';
  topic: string;
  reason: 'not_recovered' | 'epoch_changed' | 'lost' | 'buffer_overflow';
  /** Last seq held before the loss (in `previousEpoch` when the epoch changed). */
  after: number | null;
  /** lost: the seq of the message right after the hole, which comes next. */
  before?: number;
  previousEpoch?: string | null;
  epoch?: string;
  /** `ack.seq` of the unrecovered resume. */
  seq?: number;
  /** buffer_overflow: messages dropped. */
  dropped?: number;
}

/**
 * An editor retracted the message `seq` (a clip taken down): remove it if
 * shown. Still-buffered copies are dropped from the iteration buffer.
 */
export interface RetractEvent {
  type: 'retract';
  topic: string;
  seq: number;
  /** The retraction's own place in the topic (the position after it). */
  at: number;
  ts: number;
  replay: boolean;
}

/** Live audience and reactions of a topic (never replayed). */
export interface StatsEvent {
  type: 'stats';
  topic: string;
  audience: number;
  reactions: Record<string, number>;
  windowMs: number;
}

export type SubscriptionEvent<T = JsonValue> = MessageEvent<T> | GapEvent | RetractEvent | StatsEvent;

export interface SubscribedInfo {
  topic: string;
  mode: Mode;
  epoch: string;
  seq: number;
  resumed: boolean;
  recovered: boolean;
}

export interface SubscribeOptions<T = JsonValue> {
  /** Replay the latest N retained messages on a fresh subscription. */
  history?: number;
  /**
   * The spoiler shield: every message, retraction, gap and stats figure
   * arrives this many ms after the bus stored it (0 to 120000; default 0).
   */
  delayMs?: number;
  /** Events kept for iteration before the oldest are dropped (default 1024). */
  bufferSize?: number;
  onMessage?: (event: MessageEvent<T>) => void;
  onGap?: (event: GapEvent) => void;
  onRetract?: (event: RetractEvent) => void;
  onStats?: (event: StatsEvent) => void;
  onError?: (error: TribuneError) => void;
  onSubscribed?: (info: SubscribedInfo) => void;
  /** The hub ended the subscription; `error` follows and the handle ends. */
  onUnsubscribed?: (info: { topic: string; code: string }) => void;
  onEvent?: (event: SubscriptionEvent<T>) => void;
}

export interface SubscriptionEvents<T> {
  message: MessageEvent<T>;
  gap: GapEvent;
  retract: RetractEvent;
  stats: StatsEvent;
  subscribed: SubscribedInfo;
  unsubscribed: { topic: string; code: string };
  error: TribuneError;
}

export class Subscription<T = JsonValue> implements AsyncIterable<SubscriptionEvent<T>> {
  readonly topic: string;
  readonly mode: Mode | null;
  readonly epoch: string | null;
  readonly lastSeq: number;
  /** State topics: the latest message. */
  readonly latest: MessageEvent<T> | null;
  readonly stats: StatsEvent | null;
  readonly closed: boolean;
  /** The topic's spoiler-shield delay in ms (0: live). */
  readonly delayMs: number;
  /** Changes the topic's delay for every handle: renewed with `since` and the new `delay_ms`. */
  setDelay(delayMs: number): void;
  on<K extends keyof SubscriptionEvents<T>>(event: K, fn: (value: SubscriptionEvents<T>[K]) => void): () => void;
  off<K extends keyof SubscriptionEvents<T>>(event: K, fn: (value: SubscriptionEvents<T>[K]) => void): void;
  react(reaction: string): Promise<void>;
  unsubscribe(): void;
  messages(): AsyncIterableIterator<MessageEvent<T>>;
  [Symbol.asyncIterator](): AsyncIterator<SubscriptionEvent<T>>;
}

export interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface ClientOptions {
  /** Websocket URL of the hub, `wss://host/v1/ws`. */
  url?: string;
  /** HTTP(S) base URL of the hub, used when `url` is absent. */
  hub?: string;
  /** WebSocket constructor; default the global one (Node 20: pass `ws`). */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocketLike;
  /**
   * JWT, sent in the connection's first frame (`auth`), never in the URL. A
   * function (token provider) is called before every connection and ahead of
   * the token's `exp`; its token replaces the current one on the open connection.
   */
  token?: string | (() => string | Promise<string>);
  /** Full-jitter exponential backoff; attempts reset after `stableMs` connected. */
  backoff?: { initialMs?: number; maxMs?: number; stableMs?: number };
  /** Offer the `tribune.v1` subprotocol (default true). */
  subprotocol?: boolean;
  /**
   * Follow the app's lifecycle (default true): offline/online,
   * visibilitychange, freeze/resume, and the adapters of `lifecycle`.
   */
  watchNetwork?: boolean;
  /**
   * Where lifecycle events come from. Browsers need nothing; React Native
   * passes its `AppState` and `@react-native-community/netinfo`.
   */
  lifecycle?: LifecycleSources;
  /**
   * Close the connection after this long in the background, resuming with
   * `since` on return (default null: stay connected).
   */
  backgroundCloseAfterMs?: number | null;
  /**
   * Back in the foreground or on a network, a ping must be answered within
   * this, or the client reconnects at once, without backoff (default 1,500 ms).
   */
  probeTimeoutMs?: number;
  /**
   * 'auto' (default): the websocket, and the HTTP fallback (PROTOCOL.md
   * section 11) after two websocket opens in a row that never complete;
   * 'websocket': never the fallback; 'http': the fallback only.
   */
  transport?: 'auto' | 'websocket' | 'http';
  /** While on the fallback, the first wait before the websocket is tried again (default 60,000 ms, doubling to 10 minutes). */
  wsProbeMs?: number;
  /** A websocket open that takes longer counts as failed (default 10,000 ms). */
  openTimeoutMs?: number;
  /** fetch for the HTTP fallback (default: the global one). */
  fetch?: (input: string, init?: object) => Promise<unknown>;
  /** Deadline of react, publish and ping (default 10,000 ms). */
  requestTimeoutMs?: number;
  /** Connect on the first subscribe (default true). */
  autoConnect?: boolean;
  /** Largest frame sent (default 4096 bytes, the hub's default limit). */
  maxFrameBytes?: number;
  /**
   * Ask for Fossil delta updates on state topics (default true). Payloads
   * are rebuilt and checked before handles see them: only the bytes on the
   * wire change.
   */
  deltas?: boolean;
  /** Random source in [0, 1) for jitter (tests). */
  random?: () => number;
}

/** Sources of lifecycle events (see `ClientOptions.lifecycle`). */
export interface LifecycleSources {
  /** Where `online`/`offline` fire (default: globalThis). */
  target?: { addEventListener(type: string, fn: () => void): void; removeEventListener(type: string, fn: () => void): void };
  /** Where `visibilitychange`, `freeze`, `resume` fire (default: globalThis.document). */
  document?: {
    visibilityState: string;
    addEventListener(type: string, fn: () => void): void;
    removeEventListener(type: string, fn: () => void): void;
  };
  /** React Native's `AppState`. */
  appState?: { addEventListener(type: 'change', fn: (state: string) => void): { remove(): void } };
  /** `@react-native-community/netinfo` (its default export). */
  netInfo?: {
    addEventListener(
      fn: (state: { isConnected: boolean | null; isInternetReachable?: boolean | null; type?: string }) => void,
    ): () => void;
  };
}

export interface StateChange {
  state: ConnectionStateName;
  previous: ConnectionStateName;
  code?: number;
  reason?: string;
  /** reconnecting: the delay before the next attempt. */
  delayMs?: number;
  offline?: boolean;
  /** reconnecting: paused (the app in the background) until `resume()`. */
  suspended?: boolean;
  draining?: boolean;
  attempt?: number;
  node?: string;
  conn?: string;
}

export interface ClientEvents {
  state: StateChange;
  error: TribuneError;
  welcome: WelcomeFrame;
  drain: { retry_ms: number; delayMs: number };
  /** The hub accepted a token (at connect or on a refresh). */
  token: { expiresAt: number | null };
}

export class TribuneClient {
  constructor(options: ClientOptions);
  readonly url: string;
  /** The transport in use or about to be: the websocket or the HTTP fallback. */
  readonly transport: 'websocket' | 'http';
  readonly state: ConnectionStateName;
  readonly welcome: WelcomeFrame | null;
  on<K extends keyof ClientEvents>(event: K, fn: (value: ClientEvents[K]) => void): () => void;
  off<K extends keyof ClientEvents>(event: K, fn: (value: ClientEvents[K]) => void): void;
  connect(): this;
  ready(): Promise<void>;
  reconnect(): void;
  /** The network changed: check the socket now (ping), reconnect at once if dead. */
  networkChanged(): void;
  /** The app goes to the background: close, and stay away until `resume()`. */
  pause(): void;
  /** Back in the foreground: reconnect at once if paused or waiting, else check. */
  resume(): void;
  close(): void;
  /** Sets the token and sends it at once on an open connection (`auth`). */
  authorize(token: string | (() => string | Promise<string>)): Promise<{ expiresAt: number | null } | null>;
  subscribe<T = JsonValue>(topic: string, options?: SubscribeOptions<T>): Subscription<T>;
  react(topic: string, reaction: string): Promise<void>;
  publish(topic: string, data: JsonValue): Promise<void>;
  ping(): Promise<number>;
  /**
   * One page of the topic's retained messages before `before` (the newest
   * when absent), oldest first, at most `limit` (1 to 100; the hub's default
   * 50): `GET /v1/history` with the client's token in `Authorization`.
   */
  history<T = JsonValue>(topic: string, options?: HistoryOptions): Promise<HistoryPage<T>>;
}

export interface HistoryOptions {
  /** Messages with a seq below this one (the `before` of the previous page). */
  before?: number;
  /** 1 to 100 (default 50, the hub's). */
  limit?: number;
  /** A fetch implementation (default the global one). */
  fetch?: typeof globalThis.fetch;
}

/** One page of `GET /v1/history` (PROTOCOL.md section 12). */
export interface HistoryPage<T = JsonValue> {
  topic: string;
  epoch: string;
  /** Oldest first, each `replay: true`. */
  messages: MessageEvent<T>[];
  /** Holes the page crosses (`reason: 'lost'`): the messages between `after` and `before` are gone. */
  gaps: GapEvent[];
  /** The `before` of the next, older page; null when nothing older is retained. */
  before: number | null;
}

/** The most messages one history page may hold. */
export const MAX_HISTORY_LIMIT: 100;
/** The hub's history URL for its websocket URL. */
export function historyUrl(wsUrl: string): string;
/** `TribuneClient.history` without a client. */
export function fetchHistory<T = JsonValue>(
  source: { wsUrl: string; token?: string | (() => string | Promise<string>); fetchImpl?: typeof globalThis.fetch },
  topic: string,
  options?: { before?: number; limit?: number },
): Promise<HistoryPage<T>>;

/** One shared client per websocket URL (widgets on a page share it). */
export function sharedClient(url: string, options?: Omit<ClientOptions, 'url'>): TribuneClient;

/** Listens to the lifecycle sources; returns a function that stops listening. */
export function watchLifecycle(
  on: { foreground(): void; background(): void; online(): void; offline(): void; networkChanged(): void },
  sources?: LifecycleSources,
): () => void;
