// TribuneClient: one websocket connection to a hub, its states, reconnects
// (backoff, drain, heartbeats, the app's lifecycle: offline/online,
// background/foreground through lifecycle.js), requests (react,
// publish, ping), and the frames that drive every topic's subscriptions
// (acks, messages and their continuity checks, resume). Also `sharedClient`,
// one client per hub and page.

import {
  CloseCode,
  PROTOCOL_VERSION,
  SUBPROTOCOL,
  MAX_CLIENT_FRAME_BYTES,
  TribuneError,
  backoffDelay,
  decodeServerFrame,
  encodeClientFrame,
  reconnectPolicy,
  validateTopic,
  wsUrlFromHub,
} from './protocol.js';
import { DELTA_FORMAT, applyTextDelta, rawMessageData } from './delta.js';
import { Emitter } from './emitter.js';
import { fetchHistory } from './history.js';
import { watchLifecycle } from './lifecycle.js';
import { HttpTransport, httpStreamingAvailable } from './transport-http.js';
import { Subscription } from './subscription.js';
import { TopicState } from './topic-state.js';

/** Connection states, in the order a healthy connection goes through them. */
export const ConnectionState = Object.freeze({
  IDLE: 'idle',
  CONNECTING: 'connecting',
  CONNECTED: 'connected',
  RECONNECTING: 'reconnecting',
  CLOSED: 'closed',
});

// Subscription errors after which trying again cannot help.
const PERMANENT_SUBSCRIBE_ERRORS = new Set([
  'bad_request',
  'bad_topic',
  'unknown_namespace',
  'forbidden',
  'too_many_subscriptions',
  'payload_too_large',
]);

/** The longest spoiler-shield delay a hub accepts (`delay_ms`, PROTOCOL.md section 13). */
const MAX_DELAY_MS = 120000;

/** Throws a TribuneError `bad_request` for a `delayMs` the hub would refuse. */
function checkDelay(delayMs) {
  if (delayMs === undefined) return;
  if (!(Number.isSafeInteger(delayMs) && delayMs >= 0 && delayMs <= MAX_DELAY_MS)) {
    throw new TribuneError('bad_request', `delayMs must be an integer from 0 to ${MAX_DELAY_MS}`);
  }
}

/**
 * One connection to a Tribune hub.
 *
 * ```js
 * const client = new TribuneClient({ url: 'wss://hub.example.org/v1/ws' });
 * const sub = client.subscribe('results.demo2026.speed-skating.mixed-team-sprint');
 * for await (const ev of sub) if (ev.type === 'message') render(ev.data);
 * ```
 */
export class TribuneClient {
  #opts;
  #WebSocket;
  #emitter = new Emitter();
  #state = ConnectionState.IDLE;
  #ws = null;
  #openedAt = 0;
  #attempt = 0;
  #reconnectTimer = null;
  #drainTimer = null;
  #heartbeatTimer = null;
  #heartbeatMs = 25000;
  #lastRx = 0;
  #pingOutstanding = false;
  #nextId = 1;
  #topics = new Map();
  #pending = new Map();
  #welcome = null;
  #offline = false;
  // Stops the lifecycle listeners (lifecycle.js); null when not watching.
  #netListeners = null;
  // Paused (the app in the background): no connection until resume().
  #suspended = false;
  #backgroundTimer = null;
  // A check after a network change or a return to the foreground: the
  // socket is given up if nothing arrives before it fires.
  #probeTimer = null;
  // The transport of the next connection: 'websocket' or 'http' (the
  // fallback, transport-http.js).
  #transportKind = 'websocket';
  // Websocket attempts in a row whose open never completed (an upgrade a
  // proxy refused, or a handshake that hangs): two mean a blocking proxy.
  #wsFailures = 0;
  // Set when the client just moved to the fallback: that connection goes
  // out over HTTP without trying the websocket again.
  #fallbackFresh = false;
  #openTimer = null;
  // While on the fallback: when the websocket is tried again, and the next wait.
  #wsProbeTimer = null;
  #wsProbeMs = 0;
  #openGen = 0;
  #random;
  // The token of the connection being opened, sent in its first frame.
  #token = null;
  // The current token's exp (Unix seconds), and the timer of its refresh.
  #expiresAt = null;
  #refreshTimer = null;

  /**
   * @param {object} options
   * @param {string} [options.url] websocket URL of the hub (`wss://host/v1/ws`)
   * @param {string} [options.hub] HTTP(S) base URL of the hub, used when `url` is absent
   * @param {Function} [options.WebSocket] WebSocket constructor (default: the global one)
   * @param {string|(() => string|Promise<string>)} [options.token] JWT, sent in the
   *   connection's first frame (`auth`), never in the URL. A function (the token
   *   provider) is called before every connection and ahead of the token's `exp`
   *   (at a random moment of its last half): its token replaces the current one
   *   on the open connection.
   * @param {{initialMs?: number, maxMs?: number, stableMs?: number}} [options.backoff]
   * @param {boolean} [options.subprotocol=true] offer `tribune.v1`
   * @param {boolean} [options.watchNetwork=true] follow the app's lifecycle: offline/online,
   *   visibilitychange, freeze/resume (browsers), and the adapters of `lifecycle`
   * @param {{target?: EventTarget, document?: object, appState?: object, netInfo?: object}} [options.lifecycle]
   *   where lifecycle events come from: React Native apps pass `AppState` and
   *   `@react-native-community/netinfo` (see the README's "Mobile apps")
   * @param {number|null} [options.backgroundCloseAfterMs=null] close the connection
   *   after this long in the background (battery), resuming with `since` on return;
   *   null keeps it open
   * @param {'auto'|'websocket'|'http'} [options.transport='auto'] 'auto': the websocket,
   *   and the HTTP fallback (PROTOCOL.md section 11) after two websocket attempts in a
   *   row whose open never completed (a proxy that strips `Upgrade`), with the
   *   websocket tried again at every reconnect and every `wsProbeMs` (doubling, up to
   *   10 minutes) while on the fallback
   * @param {number} [options.wsProbeMs=60000] first wait before the websocket is tried
   *   again while on the fallback
   * @param {number} [options.openTimeoutMs=10000] a websocket whose open takes longer
   *   counts as a failed one
   * @param {Function} [options.fetch] fetch for the HTTP fallback (default: the global one)
   * @param {number} [options.probeTimeoutMs=1500] back in the foreground or on a
   *   network, a ping must be answered within this, or the client reconnects at once
   * @param {number} [options.requestTimeoutMs=10000] deadline of react/publish/ping
   * @param {boolean} [options.autoConnect=true] connect on the first subscribe
   * @param {boolean} [options.deltas=true] ask for Fossil delta updates on
   *   state topics; every payload is rebuilt before handles see it, so this
   *   only changes the bytes on the wire
   */
  constructor(options = {}) {
    const url = options.url ?? (options.hub ? wsUrlFromHub(options.hub) : undefined);
    if (!url) throw new TribuneError('bad_request', "TribuneClient needs 'url' or 'hub'");
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== 'function') {
      throw new TribuneError(
        'bad_request',
        "no WebSocket constructor: pass one as the 'WebSocket' option (in Node 20: the 'ws' package)",
      );
    }
    this.#opts = {
      url,
      token: options.token,
      backoff: { initialMs: 500, maxMs: 30000, stableMs: 5000, ...(options.backoff ?? {}) },
      subprotocol: options.subprotocol ?? true,
      watchNetwork: options.watchNetwork ?? true,
      requestTimeoutMs: options.requestTimeoutMs ?? 10000,
      autoConnect: options.autoConnect ?? true,
      maxFrameBytes: options.maxFrameBytes ?? MAX_CLIENT_FRAME_BYTES,
      deltas: options.deltas ?? true,
      lifecycle: options.lifecycle ?? {},
      backgroundCloseAfterMs: options.backgroundCloseAfterMs ?? null,
      probeTimeoutMs: options.probeTimeoutMs ?? 1500,
      transport: options.transport ?? 'auto',
      wsProbeMs: options.wsProbeMs ?? 60000,
      openTimeoutMs: options.openTimeoutMs ?? 10000,
      fetch: options.fetch,
    };
    if (this.#opts.transport === 'http') this.#transportKind = 'http';
    this.#random = options.random ?? Math.random;
  }

  /** The websocket URL (it never holds a token). */
  get url() {
    return this.#opts.url;
  }

  /** The transport in use or about to be: 'websocket' or 'http' (the fallback). */
  get transport() {
    return this.#transportKind;
  }

  /** Current connection state: idle, connecting, connected, reconnecting, closed. */
  get state() {
    return this.#state;
  }

  /** The hub's last `welcome` frame, or null. */
  get welcome() {
    return this.#welcome;
  }

  /**
   * Adds a listener; returns a function that removes it. Events:
   * `state` ({state, previous, code?, reason?, delayMs?}), `error`
   * (TribuneError: bad frames from the hub, errors not tied to a request,
   * a refused or failed token refresh with code `token_refresh_failed`),
   * `welcome`, `drain` ({retry_ms, delayMs}), `token` ({expiresAt}: the hub
   * accepted a token, at connect or on a refresh; `expiresAt` in Unix seconds
   * or null).
   */
  on(event, fn) {
    return this.#emitter.on(event, fn);
  }

  off(event, fn) {
    this.#emitter.off(event, fn);
  }

  /** Opens the connection (idempotent). Returns the client. */
  connect() {
    if (this.#state === ConnectionState.CLOSED) throw new TribuneError('closed', 'client is closed');
    if (this.#state === ConnectionState.IDLE) {
      this.#watchNetwork();
      this.#open();
    }
    return this;
  }

  /** Resolves when connected (after the hub's `welcome`); rejects if the client closes first. */
  ready() {
    if (this.#state === ConnectionState.CONNECTED) return Promise.resolve();
    if (this.#state === ConnectionState.CLOSED) return Promise.reject(new TribuneError('closed', 'client is closed'));
    this.connect();
    return new Promise((resolve, reject) => {
      const off = this.on('state', ({ state }) => {
        if (state === ConnectionState.CONNECTED) {
          off();
          resolve();
        } else if (state === ConnectionState.CLOSED) {
          off();
          reject(new TribuneError('closed', 'client closed before connecting'));
        }
      });
    });
  }

  /**
   * Drops the current connection and reconnects at once, resuming every
   * subscription with `since`. For network changes an app knows about.
   */
  reconnect() {
    if (this.#state === ConnectionState.CLOSED || this.#state === ConnectionState.IDLE) return;
    this.#dropTransport(CloseCode.CLIENT_RESTART, 'client reconnect');
    this.#attempt = 0;
    this.#open();
  }

  /**
   * The device's network changed (Wi-Fi to cellular, out of a tunnel): a
   * socket may then be dead without a close event (mobile Safari fires
   * none). Connected, the client pings the hub and reconnects at once, with
   * no backoff, if nothing comes back within `probeTimeoutMs`; waiting to
   * reconnect, it tries now. Called by the lifecycle watcher; apps with
   * their own signals may call it.
   */
  networkChanged() {
    if (this.#state === ConnectionState.CONNECTED) {
      this.#probe();
    } else if (this.#state === ConnectionState.RECONNECTING && !this.#offline && !this.#suspended && !this.#drainTimer) {
      this.#attempt = 0;
      this.#open();
    }
  }

  /**
   * The app goes to the background: closes the connection and stays away
   * until `resume()`, keeping every subscription and its resume point.
   * `backgroundCloseAfterMs` calls this after that long in the background.
   */
  pause() {
    clearTimeout(this.#backgroundTimer);
    this.#backgroundTimer = null;
    if (this.#state === ConnectionState.CLOSED || this.#state === ConnectionState.IDLE) return;
    this.#suspended = true;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    clearTimeout(this.#drainTimer);
    this.#drainTimer = null;
    this.#dropTransport(CloseCode.CLIENT_RESTART, 'paused');
    this.#setState(ConnectionState.RECONNECTING, { suspended: true, reason: 'paused' });
  }

  /**
   * The app is back in the foreground: a paused or waiting client connects
   * at once (no backoff) and resumes every subscription with `since`; a
   * connected one checks its socket as `networkChanged()` does.
   */
  resume() {
    clearTimeout(this.#backgroundTimer);
    this.#backgroundTimer = null;
    if (this.#state === ConnectionState.CLOSED || this.#state === ConnectionState.IDLE) return;
    this.#suspended = false;
    if (this.#offline) return; // `online` reconnects
    if (this.#state === ConnectionState.CONNECTED) this.#probe();
    else if (this.#state === ConnectionState.RECONNECTING && !this.#drainTimer) {
      this.#attempt = 0;
      this.#open();
    }
  }

  /** Closes the connection for good; subscriptions end. */
  close() {
    if (this.#state === ConnectionState.CLOSED) return;
    this.#unwatchNetwork();
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#drainTimer);
    this.#drainTimer = null;
    clearTimeout(this.#wsProbeTimer);
    this.#wsProbeTimer = null;
    this.#dropTransport(CloseCode.NORMAL, 'client closed');
    for (const state of this.#topics.values()) {
      clearTimeout(state.retryTimer);
      for (const h of state.handles) h._end();
    }
    this.#topics.clear();
    this.#setState(ConnectionState.CLOSED, { code: CloseCode.NORMAL, reason: 'client closed' });
  }

  /**
   * Subscribes to a topic. Options: `history` (replay the latest N retained
   * messages on a fresh subscription), `delayMs` (the spoiler shield: every
   * frame `delayMs` after the bus stored it, 0 to 120000; the first handle's
   * applies to the topic, `setDelay` changes it), callbacks `onMessage`,
   * `onGap`, `onRetract`, `onStats`, `onError`, `onSubscribed`, `onEvent`,
   * and `bufferSize` for iteration. Throws a TribuneError `bad_topic` for an
   * invalid topic, `bad_request` for a bad `history` or `delayMs`.
   */
  subscribe(topic, options = {}) {
    const reason = validateTopic(topic);
    if (reason) throw new TribuneError('bad_topic', reason);
    if (this.#state === ConnectionState.CLOSED) throw new TribuneError('closed', 'client is closed');
    if (options.history !== undefined && !(Number.isSafeInteger(options.history) && options.history >= 0)) {
      throw new TribuneError('bad_request', 'history must be a non-negative integer');
    }
    checkDelay(options.delayMs);
    let state = this.#topics.get(topic);
    const fresh = !state;
    if (fresh) {
      state = new TopicState(topic, options.history, options.delayMs ?? 0);
      this.#topics.set(topic, state);
    }
    const handle = new Subscription(this, state, options);
    state.handles.add(handle);
    if (fresh) {
      // An open socket takes subscriptions even before the welcome arrives:
      // the ones that existed at open time were sent then, this one goes now.
      if (this.#socketOpen()) this.#sendSubscribe(state);
      else if (this.#state === ConnectionState.IDLE && this.#opts.autoConnect) this.connect();
    } else {
      // A later handle on a topic already live starts from what is known:
      // the latest state and figures, delivered after the caller has had a
      // chance to start iterating.
      queueMicrotask(() => {
        if (state.acked) handle._emitOnly('subscribed', { topic, mode: state.mode, epoch: state.epoch });
        if (state.mode === 'state' && state.latest) handle._deliver(state.latest);
        if (state.stats) handle._deliver(state.stats);
      });
    }
    return handle;
  }

  /**
   * Sends one reaction (`react`, section 3) to a topic. Resolves on the hub's
   * ack; rejects with a TribuneError (`forbidden`, `bad_request`,
   * `rate_limited`, `not_connected`, ...). Reactions are never queued: a tap
   * while offline is refused at once.
   */
  react(topic, reaction) {
    return this.#request({ type: 'react', topic, reaction }).then(() => undefined);
  }

  /** Publishes to a namespace with client publishing; resolves on the ack. */
  publish(topic, data) {
    return this.#request({ type: 'publish', topic, data }).then(() => undefined);
  }

  /**
   * Sets the client's token (a string, or a provider function) and, on an
   * open connection, sends it at once in an `auth` frame: frames sent after
   * this call (a subscribe to a token-only topic) are answered under it.
   * Resolves with `{expiresAt}` when the hub accepts it, or null when there is
   * no connection (the next one sends it); rejects with the hub's error, the
   * current token then serving until it expires.
   */
  authorize(token) {
    if (this.#state === ConnectionState.CLOSED) return Promise.reject(new TribuneError('closed', 'client is closed'));
    this.#opts.token = token;
    if (!this.#socketOpen()) return Promise.resolve(null);
    const send = (t) => new Promise((resolve, reject) => this.#sendAuth(t, { resolve, reject }));
    return typeof token === 'function' ? Promise.resolve(token()).then(send) : send(token);
  }

  /**
   * One page of `topic`'s retained messages before `before` (the newest when
   * absent), oldest first, at most `limit` (1 to 100, the hub's default 50):
   * an HTTP read (`GET /v1/history`) with the client's token in the
   * `Authorization` header; no connection needed. See history.js.
   */
  history(topic, options = {}) {
    if (this.#state === ConnectionState.CLOSED) return Promise.reject(new TribuneError('closed', 'client is closed'));
    const { fetch: fetchImpl, ...page } = options;
    return fetchHistory({ wsUrl: this.#opts.url, token: this.#opts.token, fetchImpl }, topic, page);
  }

  /** Application-level ping; resolves with the round trip in milliseconds. */
  ping() {
    const started = Date.now();
    return this.#request({ type: 'ping' }).then(() => Date.now() - started);
  }

  // -------------------------------------------------------------------------
  // internals used by Subscription

  /** @internal A handle leaves its topic. */
  _release(state, handle) {
    state.handles.delete(handle);
    if (state.handles.size > 0 || this.#topics.get(state.topic) !== state) return;
    this.#topics.delete(state.topic);
    clearTimeout(state.retryTimer);
    if (this.#socketOpen() && state.subId !== null) {
      const id = this.#nextId++;
      this.#pending.set(id, { kind: 'unsubscribe', resolve() {}, reject() {} });
      this.#send({ type: 'unsubscribe', id, topic: state.topic });
    }
  }

  // -------------------------------------------------------------------------
  // connection

  #setState(state, detail = {}) {
    const previous = this.#state;
    if (previous === state && state !== ConnectionState.RECONNECTING) return;
    this.#state = state;
    this.#emitter.emit('state', { state, previous, ...detail });
  }

  async #open() {
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    if (this.#ws) this.#dropTransport(CloseCode.CLIENT_RESTART, 'replaced');
    // Only the latest attempt may create a socket: an `online` event or a
    // drain timer may start one while an older one awaits its token.
    const gen = ++this.#openGen;
    this.#setState(ConnectionState.CONNECTING, { attempt: this.#attempt });
    const url = this.#opts.url;
    try {
      const token = typeof this.#opts.token === 'function' ? await this.#opts.token() : this.#opts.token;
      if (gen !== this.#openGen || this.#state !== ConnectionState.CONNECTING) return;
      // Never in the URL, where proxies and ingress logs keep it: the
      // token goes in the first frame once the socket is open.
      this.#token = token || null;
    } catch (err) {
      this.#emitError(new TribuneError('unavailable', `token provider failed: ${err?.message ?? err}`));
      this.#scheduleReconnect('backoff', { reason: 'token provider failed' });
      return;
    }
    if (this.#transportKind === 'http' && this.#opts.transport === 'auto') {
      // On the fallback, every new connection but the first tries the
      // websocket once more: the network may have changed (a phone that left
      // the hotel). One more refusal and it is back on HTTP at once.
      if (this.#fallbackFresh) this.#fallbackFresh = false;
      else {
        this.#transportKind = 'websocket';
        this.#wsFailures = 1;
      }
    }
    // Whether this transport opens is what the fallback rule counts.
    this.#openedAt = 0;
    let ws;
    try {
      if (this.#transportKind === 'http') ws = new HttpTransport(url, { fetch: this.#opts.fetch });
      else ws = this.#opts.subprotocol ? new this.#WebSocket(url, [SUBPROTOCOL]) : new this.#WebSocket(url);
    } catch (err) {
      this.#emitError(new TribuneError('unavailable', `cannot open websocket: ${err?.message ?? err}`));
      this.#scheduleReconnect('backoff', { reason: 'cannot open websocket' });
      return;
    }
    this.#ws = ws;
    try {
      ws.binaryType = 'arraybuffer';
    } catch {
      // Some implementations refuse the setter; binary frames are refused anyway.
    }
    ws.onopen = () => this.#onOpen(ws);
    ws.onmessage = (ev) => this.#onData(ws, ev.data);
    ws.onclose = (ev) => this.#onClose(ws, ev.code, ev.reason);
    // Errors are followed by a close event, which decides what happens next.
    ws.onerror = () => {};
    if (this.#transportKind === 'websocket') {
      // A handshake that hangs (a proxy holding the upgrade) fails like a refused one.
      clearTimeout(this.#openTimer);
      this.#openTimer = setTimeout(() => {
        this.#openTimer = null;
        if (this.#ws !== ws || ws.readyState === 1) return;
        this.#dropTransport(CloseCode.CLIENT_RESTART, 'websocket open timed out');
        this.#onClose(ws, CloseCode.ABNORMAL, 'websocket open timed out', true);
      }, this.#opts.openTimeoutMs);
    }
  }

  #onOpen(ws) {
    if (ws !== this.#ws) return;
    clearTimeout(this.#openTimer);
    this.#openTimer = null;
    if (!(ws instanceof HttpTransport)) {
      // The websocket works here: the fallback is not needed.
      this.#wsFailures = 0;
      clearTimeout(this.#wsProbeTimer);
      this.#wsProbeTimer = null;
      this.#wsProbeMs = 0;
    }
    this.#openedAt = Date.now();
    this.#lastRx = Date.now();
    // The hub handles frames in order: `auth` first, so that subscriptions
    // to token-only topics that follow are granted.
    if (this.#token) this.#sendAuth(this.#token);
    this.#token = null;
    // Subscriptions go out at once: the hub answers them after its welcome,
    // and a resume does not wait for one more round trip.
    for (const state of this.#topics.values()) this.#sendSubscribe(state);
  }

  #onData(ws, data) {
    if (ws !== this.#ws) return;
    this.#lastRx = Date.now();
    this.#pingOutstanding = false;
    // Any frame proves the socket alive: a check in flight is answered.
    clearTimeout(this.#probeTimer);
    this.#probeTimer = null;
    let frame;
    try {
      frame = decodeServerFrame(data);
    } catch (err) {
      // Bad frames are reported and ignored: one broken frame must not take
      // the connection, or the page, down.
      this.#emitError(err instanceof TribuneError ? err : new TribuneError('bad_frame', String(err)));
      return;
    }
    try {
      this.#dispatch(frame, data);
    } catch (err) {
      this.#emitError(new TribuneError('bad_frame', `frame could not be handled: ${err?.message ?? err}`));
    }
  }

  #dispatch(frame, text) {
    switch (frame.type) {
      case 'welcome':
        return this.#onWelcome(frame);
      case 'ack':
        return this.#onAck(frame);
      case 'message':
        return this.#onMessage(frame, text);
      case 'error':
        return this.#onErrorFrame(frame);
      case 'pong':
        this.#takePending(frame.id)?.resolve(frame);
        return;
      case 'drain':
        return this.#onDrain(frame);
      case 'stats':
        return this.#onStats(frame);
      case 'gap':
        return this.#onGap(frame);
      case 'retract':
        return this.#onRetract(frame);
      case 'unsubscribed':
        return this.#onUnsubscribed(frame);
    }
  }

  /**
   * Sends `auth` with `token`; its answer schedules the next refresh.
   * `caller` (from `authorize`) hears the outcome too.
   */
  #sendAuth(token, caller = null) {
    const id = this.#nextId++;
    const ws = this.#ws;
    this.#pending.set(id, {
      kind: 'auth',
      resolve: (ack) => {
        if (ws !== this.#ws) return;
        this.#expiresAt = ack.expires_at ?? null;
        this.#emitter.emit('token', { expiresAt: this.#expiresAt });
        this.#scheduleRefresh();
        caller?.resolve({ expiresAt: this.#expiresAt });
      },
      reject: (err) => {
        caller?.reject(err);
        if (ws !== this.#ws || err.code === 'disconnected') return;
        this.#refreshFailed(`the hub refused the token: ${err.code}: ${err.message}`);
      },
    });
    try {
      this.#send({ type: 'auth', id, token });
    } catch (err) {
      this.#pending.delete(id);
      caller?.reject(err);
      this.#refreshFailed(`the token cannot be sent: ${err?.message ?? err}`);
    }
  }

  /**
   * With a provider and a token that expires: the refresh is drawn between
   * half and four fifths of what is left of the token, so that fans whose
   * tokens were issued together do not refresh together.
   */
  #scheduleRefresh(delayMs) {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    if (typeof this.#opts.token !== 'function' || this.#expiresAt === null) return;
    const leftMs = Math.max(0, this.#expiresAt * 1000 - Date.now());
    const wait = delayMs ?? leftMs * (0.5 + 0.3 * this.#random());
    const ws = this.#ws;
    this.#refreshTimer = setTimeout(() => this.#refresh(ws), wait);
    this.#refreshTimer.unref?.();
  }

  async #refresh(ws) {
    this.#refreshTimer = null;
    let token;
    try {
      token = await this.#opts.token();
    } catch (err) {
      if (ws === this.#ws) this.#refreshFailed(`token provider failed: ${err?.message ?? err}`);
      return;
    }
    if (ws !== this.#ws || this.#state !== ConnectionState.CONNECTED) return;
    if (!token) {
      this.#refreshFailed('token provider returned no token');
      return;
    }
    this.#sendAuth(token);
  }

  /**
   * The current token serves until it expires (plus the hub's grace):
   * try again within a quarter of what is left of it.
   */
  #refreshFailed(why) {
    this.#emitError(new TribuneError('token_refresh_failed', why));
    if (this.#expiresAt === null) return;
    const leftMs = Math.max(0, this.#expiresAt * 1000 - Date.now());
    this.#scheduleRefresh(Math.min(30000, Math.max(200, leftMs / 4)));
  }

  /**
   * The hub ended a subscription (a refreshed token no longer grants its
   * topic): its handles end with the error; the others go on.
   */
  #onUnsubscribed(frame) {
    const state = this.#topics.get(frame.topic);
    if (!state) return;
    this.#topics.delete(frame.topic);
    clearTimeout(state.retryTimer);
    const err = new TribuneError(frame.code, `the hub ended the subscription to ${frame.topic}`, {
      topic: frame.topic,
      unsubscribed: true,
    });
    for (const h of state.handles) {
      h._emitOnly('unsubscribed', { topic: frame.topic, code: frame.code });
      h._fail(err);
    }
  }

  #onWelcome(frame) {
    this.#welcome = frame;
    if (frame.protocol !== PROTOCOL_VERSION) {
      this.#emitError(
        new TribuneError('protocol_mismatch', `hub speaks protocol ${frame.protocol}, this SDK ${PROTOCOL_VERSION}`),
      );
    }
    if (frame.heartbeat_ms > 0) this.#heartbeatMs = frame.heartbeat_ms;
    this.#startHeartbeat();
    this.#emitter.emit('welcome', frame);
    this.#setState(ConnectionState.CONNECTED, { node: frame.node, conn: frame.conn });
  }

  #onAck(frame) {
    const pending = this.#takePending(frame.id);
    if (pending) {
      pending.resolve(frame);
      return;
    }
    const state = this.#topicBySubId(frame.id);
    if (!state) return; // an answer for a subscription dropped since: nothing to do
    if (frame.topic !== undefined && frame.topic !== state.topic) {
      this.#emitError(new TribuneError('bad_frame', `ack ${frame.id} names topic ${frame.topic}, not ${state.topic}`));
      return;
    }
    if (frame.mode === undefined || frame.epoch === undefined || frame.seq === undefined) {
      this.#emitError(new TribuneError('bad_frame', `subscribe ack ${frame.id} lacks mode, epoch or seq`));
      return;
    }
    const resumed = state.resumedFrom !== null;
    if (resumed && frame.recovered === undefined) {
      this.#emitError(new TribuneError('bad_frame', `resume ack ${frame.id} lacks 'recovered'`));
    }
    const recovered = resumed && frame.recovered === true;
    const previousEpoch = state.epoch;
    const epochChanged = previousEpoch !== null && previousEpoch !== frame.epoch;
    const lostAfter = state.resumedFrom;
    state.acked = true;
    state.retries = 0;
    state.mode = frame.mode;
    // A new epoch numbers from scratch: the old seqs mean nothing now.
    if (epochChanged) state.lastSeq = 0;
    // After a recovered resume everything up to `since` is ours.
    if (recovered) state.lastSeq = Math.max(state.lastSeq, state.resumedFrom);
    state.epoch = frame.epoch;
    state.ackSeq = frame.seq;
    state.hasPosition = true;
    state.firstAfterAck = true;
    state.gapBefore = null;
    // A new subscription starts from a full message: no base carries over.
    state.base = null;
    state.deltas = frame.delta === true;
    const historyAsked = (state.history ?? (frame.mode === 'state' ? 1 : 0)) > 0;
    state.replayPending = recovered ? state.resumedFrom < frame.seq : historyAsked && frame.seq > 0;
    if (recovered) state.expectPrev = state.resumedFrom;
    else state.expectPrev = historyAsked ? null : frame.seq;
    const info = { topic: state.topic, mode: frame.mode, epoch: frame.epoch, seq: frame.seq, resumed, recovered };
    for (const h of state.handles) h._emitOnly('subscribed', info);
    if (resumed && !recovered && frame.mode === 'feed') {
      // Section 3: recovery is all or nothing. The items between our position
      // and what the hub still retains are gone for this client: say so.
      const gap = {
        type: 'gap',
        topic: state.topic,
        reason: epochChanged ? 'epoch_changed' : 'not_recovered',
        after: lostAfter,
        previousEpoch,
        epoch: frame.epoch,
        seq: frame.seq,
      };
      for (const h of state.handles) h._deliver(gap);
    }
  }

  #onMessage(frame, text) {
    const state = this.#topics.get(frame.topic);
    if (!state || !state.acked) return; // not (or no longer, or not yet) ours
    const first = state.firstAfterAck;
    state.firstAfterAck = false;
    if (frame.seq <= state.lastSeq) return; // already delivered (replay overlap)
    let data = frame.data;
    if (frame.delta) {
      // Rebuilt and checked (size, checksum, JSON) before anyone sees it; a
      // delta that does not apply is never shown: ask again from what was
      // delivered, and the hub replays the latest state in full.
      let payload;
      try {
        if (state.base?.seq !== frame.prev) {
          throw new Error(`it needs ${frame.prev}, this subscription holds ${state.base?.seq ?? 'nothing'}`);
        }
        payload = applyTextDelta(state.base.text, frame.data);
        data = JSON.parse(payload);
      } catch (err) {
        state.base = null;
        this.#resync(state, `delta on ${frame.seq} does not apply: ${err?.message ?? err}`);
        return;
      }
      state.base = { seq: frame.seq, text: payload };
    } else if (state.deltas) {
      const raw = rawMessageData(text);
      state.base = raw === null ? null : { seq: frame.seq, text: raw };
    }
    const event = {
      type: 'message',
      topic: frame.topic,
      seq: frame.seq,
      prev: frame.prev,
      ts: frame.ts,
      replay: frame.replay,
      data,
    };
    // The message a `gap` frame announced carries the prev the bus knows,
    // inside the hole already reported: it is not a discontinuity. (Only
    // that seq, once: a seq at or below lastSeq never gets this far again.)
    const announced = frame.seq === state.gapBefore;
    if (state.mode === 'feed' && state.expectPrev !== null && !announced) {
      const unknownFirstPrev = first && frame.replay && frame.prev === 0;
      // prev above what we hold means a message in between never reached us;
      // prev below is removal on the bus (section 5), not loss.
      if (!unknownFirstPrev && frame.prev > state.expectPrev) {
        this.#resync(state, `message ${frame.seq} has prev ${frame.prev}, expected ${state.expectPrev}`);
        return;
      }
    }
    state.lastSeq = frame.seq;
    state.expectPrev = frame.seq;
    if (!frame.replay || frame.seq >= state.ackSeq) state.replayPending = false;
    if (state.mode === 'state') state.latest = event;
    for (const h of state.handles) h._deliver(event);
  }

  /**
   * An editor retracted message `seq` (PROTOCOL.md section 13). The frame
   * holds a place in the topic's chain (`at`, after `prev`), checked and
   * passed like a message's, so the next message follows it without a
   * resync; handles get a `retract` event `{topic, seq, at, ts, replay}`
   * and drop the item from their iteration buffer.
   */
  #onRetract(frame) {
    const state = this.#topics.get(frame.topic);
    if (!state || !state.acked) return; // not (or no longer, or not yet) ours
    const first = state.firstAfterAck;
    state.firstAfterAck = false;
    if (frame.at <= state.lastSeq) return; // already passed (replay overlap)
    const announced = frame.at === state.gapBefore;
    if (state.mode === 'feed' && state.expectPrev !== null && !announced) {
      const unknownFirstPrev = first && frame.replay && frame.prev === 0;
      if (!unknownFirstPrev && frame.prev > state.expectPrev) {
        this.#resync(state, `retraction at ${frame.at} has prev ${frame.prev}, expected ${state.expectPrev}`);
        return;
      }
    }
    state.lastSeq = frame.at;
    state.expectPrev = frame.at;
    if (!frame.replay || frame.at >= state.ackSeq) state.replayPending = false;
    const event = { type: 'retract', topic: frame.topic, seq: frame.seq, at: frame.at, ts: frame.ts, replay: frame.replay === true };
    for (const h of state.handles) h._deliver(event);
  }

  /**
   * Changes the topic's delay (the spoiler shield, 0 to 120000 ms) for
   * every handle on it: the subscription is renewed with `since` (what was
   * delivered stays delivered) and the new `delay_ms`.
   * @internal (through `Subscription.setDelay`)
   */
  _setDelay(state, delayMs) {
    checkDelay(delayMs);
    if (state.delayMs === delayMs) return;
    state.delayMs = delayMs;
    if (this.#topics.get(state.topic) !== state || !this.#socketOpen() || state.subId === null) return;
    const id = this.#nextId++;
    this.#pending.set(id, { kind: 'unsubscribe', resolve() {}, reject() {} });
    this.#send({ type: 'unsubscribe', id, topic: state.topic });
    this.#sendSubscribe(state);
  }

  /**
   * A feed's hub announces messages it could not deliver (stored on the bus,
   * then aged out before the hub repaired, or unreadable): every seq between
   * `after` and `before` is lost for this subscription, and the message
   * `before` comes next. Said once as a `lost` gap event, never resynced:
   * asking again cannot bring back what the bus no longer holds.
   */
  #onGap(frame) {
    const state = this.#topics.get(frame.topic);
    if (!state || !state.acked) return; // not (or no longer, or not yet) ours
    // A state topic's latest message stands for all before it: nothing is lost.
    if (state.mode !== 'feed') return;
    if (frame.before <= state.lastSeq) return; // already past the hole (replay overlap)
    // null: the first message of a replay, unchecked anyway, is still to come.
    const position = state.expectPrev;
    if (position !== null && frame.after > position) {
      // The hub counts on messages up to `after` that never reached us: those
      // may still be stored, so ask again from what we hold, as for any skip.
      this.#resync(state, `gap after ${frame.after}, but this subscription is at ${position}`);
      return;
    }
    state.gapBefore = frame.before;
    const gap = { type: 'gap', topic: state.topic, reason: 'lost', after: frame.after, before: frame.before };
    for (const h of state.handles) h._deliver(gap);
  }

  /**
   * Continuity broke (a feed skipped a message, or a delta did not apply):
   * resubscribe with `since` so the hub replays what is missing.
   */
  #resync(state, why) {
    this.#emitError(new TribuneError('discontinuity', `${state.mode} ${state.topic}: ${why}; resubscribing`));
    const id = this.#nextId++;
    this.#pending.set(id, { kind: 'unsubscribe', resolve() {}, reject() {} });
    this.#send({ type: 'unsubscribe', id, topic: state.topic });
    this.#sendSubscribe(state);
  }

  #onErrorFrame(frame) {
    const err = new TribuneError(frame.code, frame.message, { id: frame.id });
    if (frame.id !== null) {
      const pending = this.#takePending(frame.id);
      if (pending) {
        pending.reject(err);
        return;
      }
      const state = this.#topicBySubId(frame.id);
      if (state) {
        state.subId = null;
        if (PERMANENT_SUBSCRIBE_ERRORS.has(frame.code)) {
          this.#topics.delete(state.topic);
          for (const h of state.handles) h._fail(err);
        } else {
          for (const h of state.handles) h._emitOnly('error', err);
          const delay = backoffDelay(state.retries++, this.#opts.backoff, this.#random);
          state.retryTimer = setTimeout(() => {
            state.retryTimer = null;
            if (this.#topics.get(state.topic) === state && this.#state === ConnectionState.CONNECTED) {
              this.#sendSubscribe(state);
            }
          }, delay);
        }
        return;
      }
    }
    this.#emitError(err);
  }

  #onStats(frame) {
    const state = this.#topics.get(frame.topic);
    if (!state) return;
    const event = {
      type: 'stats',
      topic: frame.topic,
      audience: frame.audience,
      reactions: { ...frame.reactions },
      windowMs: frame.window_ms,
    };
    state.stats = event;
    for (const h of state.handles) h._deliver(event);
  }

  #onDrain(frame) {
    const delayMs = Math.floor(this.#random() * frame.retry_ms);
    this.#emitter.emit('drain', { retry_ms: frame.retry_ms, delayMs });
    if (this.#drainTimer) return;
    const ws = this.#ws;
    // Keep being served until our random moment, then move: a node's fans
    // spread their returns over retry_ms instead of stampeding another node.
    this.#drainTimer = setTimeout(() => {
      this.#drainTimer = null;
      if (this.#state === ConnectionState.CLOSED) return;
      if (this.#ws === ws && ws !== null) this.#dropTransport(CloseCode.CLIENT_RESTART, 'moving off a draining node');
      this.#attempt = 0;
      this.#open();
    }, delayMs);
  }

  #onClose(ws, code, reason, dropped = false) {
    if (!dropped) {
      if (ws !== this.#ws) return;
      this.#ws = null;
      this.#cleanupConnection();
    }
    if (this.#state === ConnectionState.CLOSED) return;
    if (this.#openedAt === 0 && !(ws instanceof HttpTransport) && this.#fallbackAllowed()) {
      // The open never completed: a proxy that refuses the upgrade looks
      // like this in a browser (1006, no open). Twice in a row: HTTP now.
      this.#wsFailures += 1;
      if (this.#wsFailures >= 2) {
        this.#transportKind = 'http';
        this.#fallbackFresh = true;
        this.#scheduleWsProbe();
        this.#scheduleReconnect('immediately', { code, reason, transport: 'http' });
        return;
      }
    }
    const policy = reconnectPolicy(code);
    if (policy === 'never') {
      this.#unwatchNetwork();
      clearTimeout(this.#drainTimer);
      this.#drainTimer = null;
      // 1000 ends subscriptions normally; 1008 (policy) makes them throw.
      const error =
        code === CloseCode.NORMAL
          ? null
          : new TribuneError('closed', `hub closed the connection (${code}${reason ? `: ${reason}` : ''})`, { code });
      for (const state of this.#topics.values()) {
        clearTimeout(state.retryTimer);
        for (const h of state.handles) (error ? h._fail(error) : h._end());
      }
      this.#topics.clear();
      this.#setState(ConnectionState.CLOSED, { code, reason });
      return;
    }
    if (this.#drainTimer) {
      // The draining node closed before our moment came: the drain timer
      // reconnects; backing off on top of it would only delay the resume.
      this.#setState(ConnectionState.RECONNECTING, { code, reason, draining: true });
      return;
    }
    this.#scheduleReconnect(policy, { code, reason });
  }

  #scheduleReconnect(policy, detail) {
    clearTimeout(this.#reconnectTimer);
    if (this.#openedAt && Date.now() - this.#openedAt >= this.#opts.backoff.stableMs) this.#attempt = 0;
    this.#openedAt = 0;
    if (this.#offline || this.#suspended) {
      this.#setState(ConnectionState.RECONNECTING, { ...detail, offline: this.#offline, suspended: this.#suspended });
      return;
    }
    const delayMs = policy === 'immediately' ? 0 : backoffDelay(this.#attempt++, this.#opts.backoff, this.#random);
    this.#setState(ConnectionState.RECONNECTING, { ...detail, delayMs });
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      if (this.#state === ConnectionState.RECONNECTING && !this.#offline && !this.#suspended) this.#open();
    }, delayMs);
  }

  /** Everything tied to one socket ends with it. */
  #cleanupConnection() {
    clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = null;
    clearTimeout(this.#probeTimer);
    this.#probeTimer = null;
    clearTimeout(this.#openTimer);
    this.#openTimer = null;
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    this.#expiresAt = null;
    this.#pingOutstanding = false;
    const err = new TribuneError('disconnected', 'connection lost before the hub answered');
    for (const [id, p] of this.#pending) {
      this.#pending.delete(id);
      clearTimeout(p.timer);
      p.reject(err);
    }
    for (const state of this.#topics.values()) {
      state.subId = null;
      state.acked = false;
      clearTimeout(state.retryTimer);
      state.retryTimer = null;
    }
  }

  /** Closes the current socket without letting its close event drive reconnects. */
  #dropTransport(code, reason) {
    const ws = this.#ws;
    if (!ws) return;
    this.#ws = null;
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {};
    try {
      ws.close(code, reason);
    } catch {
      // Already closing: nothing to add.
    }
    this.#cleanupConnection();
  }

  #startHeartbeat() {
    clearInterval(this.#heartbeatTimer);
    const every = Math.max(50, Math.floor(this.#heartbeatMs / 2));
    // Browsers answer the hub's pings without telling the page, so silence is
    // measured on frames: after one interval of silence we ask with `ping`;
    // after two (plus slack) the connection is taken for dead (section 7).
    this.#heartbeatTimer = setInterval(() => {
      const silent = Date.now() - this.#lastRx;
      if (silent > this.#heartbeatMs * 2 + every) {
        this.#dropTransport(CloseCode.CLIENT_RESTART, 'no sign of life from the hub');
        this.#scheduleReconnect('backoff', { code: CloseCode.ABNORMAL, reason: 'heartbeat timeout' });
      } else if (silent >= this.#heartbeatMs && !this.#pingOutstanding) {
        this.#pingOutstanding = true;
        const id = this.#nextId++;
        this.#pending.set(id, { kind: 'ping', resolve() {}, reject() {} });
        this.#send({ type: 'ping', id });
      }
    }, every);
    this.#heartbeatTimer.unref?.();
  }

  #sendSubscribe(state) {
    const id = this.#nextId++;
    state.subId = id;
    state.acked = false;
    const frame = { type: 'subscribe', id, topic: state.topic };
    if (state.history !== undefined) frame.history = state.history;
    if (state.delayMs > 0) frame.delay_ms = state.delayMs;
    if (this.#opts.deltas && state.mode !== 'feed') frame.delta = DELTA_FORMAT;
    if (state.hasPosition && state.epoch) {
      frame.since = state.resumePoint();
      frame.epoch = state.epoch;
      state.resumedFrom = frame.since;
    } else {
      state.resumedFrom = null;
    }
    this.#send(frame);
  }

  #request(fields) {
    if (this.#state !== ConnectionState.CONNECTED || !this.#ws) {
      return Promise.reject(new TribuneError('not_connected', 'not connected to the hub'));
    }
    const id = this.#nextId++;
    const frame = { ...fields, id };
    let text;
    try {
      text = this.#encode(frame);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new TribuneError('timeout', `no answer to ${fields.type} within ${this.#opts.requestTimeoutMs} ms`));
      }, this.#opts.requestTimeoutMs);
      this.#pending.set(id, { kind: fields.type, resolve, reject, timer });
      this.#ws.send(text);
    });
  }

  #encode(frame) {
    const text = encodeClientFrame(frame);
    if (utf8Bytes(text) > this.#opts.maxFrameBytes) {
      throw new TribuneError('payload_too_large', `frame of ${utf8Bytes(text)} bytes exceeds ${this.#opts.maxFrameBytes}`);
    }
    return text;
  }

  #send(frame) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(this.#encode(frame));
    return true;
  }

  #socketOpen() {
    return this.#ws !== null && this.#ws.readyState === 1;
  }

  /** The request answered by `id`, no longer pending and without its deadline; null when none. */
  #takePending(id) {
    const pending = this.#pending.get(id);
    if (!pending) return null;
    this.#pending.delete(id);
    clearTimeout(pending.timer);
    return pending;
  }

  #topicBySubId(id) {
    for (const state of this.#topics.values()) if (state.subId === id) return state;
    return null;
  }

  #emitError(err) {
    this.#emitter.emit('error', err);
  }

  /**
   * A ping that must be answered (by any frame) within `probeTimeoutMs`,
   * or the socket is taken for dead and replaced at once, without backoff:
   * every subscription resumes with `since`.
   */
  #probe() {
    if (this.#probeTimer || !this.#socketOpen()) return;
    const ws = this.#ws;
    const id = this.#nextId++;
    this.#pending.set(id, { kind: 'ping', resolve() {}, reject() {} });
    this.#probeTimer = setTimeout(() => {
      this.#probeTimer = null;
      this.#pending.delete(id);
      if (this.#ws !== ws) return;
      this.#dropTransport(CloseCode.CLIENT_RESTART, 'no answer to a check');
      this.#attempt = 0;
      this.#scheduleReconnect('immediately', { code: CloseCode.ABNORMAL, reason: 'no answer to a check' });
    }, this.#opts.probeTimeoutMs);
    this.#send({ type: 'ping', id });
  }

  /** The fallback may be used: 'auto' and a runtime that streams responses. */
  #fallbackAllowed() {
    return this.#opts.transport === 'auto' && (this.#opts.fetch !== undefined || httpStreamingAvailable());
  }

  /**
   * While on the fallback, the websocket is tried again after a while
   * (doubling, up to 10 minutes); when it opens, the client moves back.
   */
  #scheduleWsProbe() {
    if (this.#wsProbeTimer || this.#opts.transport !== 'auto') return;
    this.#wsProbeMs = this.#wsProbeMs ? Math.min(this.#wsProbeMs * 2, 600000) : this.#opts.wsProbeMs;
    this.#wsProbeTimer = setTimeout(() => {
      this.#wsProbeTimer = null;
      if (this.#state === ConnectionState.CLOSED || this.#transportKind !== 'http') return;
      this.#probeWebSocket();
    }, this.#wsProbeMs);
    this.#wsProbeTimer.unref?.();
  }

  #probeWebSocket() {
    let test;
    try {
      test = new this.#WebSocket(this.#opts.url, [SUBPROTOCOL]);
    } catch {
      this.#scheduleWsProbe();
      return;
    }
    let settled = false;
    const done = (works) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      test.onopen = test.onmessage = test.onclose = null;
      test.onerror = () => {};
      try {
        test.close(CloseCode.NORMAL, 'probe');
      } catch {
        // Already closed.
      }
      if (this.#state === ConnectionState.CLOSED || this.#transportKind !== 'http') return;
      if (!works) {
        this.#scheduleWsProbe();
        return;
      }
      // Back to the websocket: a new connection, every topic resumed with `since`.
      this.#transportKind = 'websocket';
      this.#wsFailures = 0;
      this.#wsProbeMs = 0;
      if (this.#state === ConnectionState.CONNECTED) this.reconnect();
    };
    const timer = setTimeout(() => done(false), this.#opts.openTimeoutMs);
    // The hub's welcome proves the path, not just a TCP connection.
    test.onmessage = () => done(true);
    test.onclose = () => done(false);
    test.onerror = () => {};
  }

  #onOffline() {
    this.#offline = true;
    if (this.#state === ConnectionState.CLOSED || this.#state === ConnectionState.IDLE) return;
    // The socket would die on its own only after heartbeats; say it now and
    // stop burning backoff attempts until the network returns.
    clearTimeout(this.#reconnectTimer);
    this.#dropTransport(CloseCode.CLIENT_RESTART, 'browser offline');
    this.#setState(ConnectionState.RECONNECTING, { offline: true, reason: 'offline' });
  }

  #onOnline() {
    this.#offline = false;
    // Back on a network: at once, whatever the backoff said (a paused
    // client waits for the foreground).
    this.networkChanged();
  }

  #onBackground() {
    const after = this.#opts.backgroundCloseAfterMs;
    if (after === null || after === undefined || this.#backgroundTimer) return;
    if (this.#state === ConnectionState.CLOSED || this.#state === ConnectionState.IDLE) return;
    this.#backgroundTimer = setTimeout(() => {
      this.#backgroundTimer = null;
      this.pause();
    }, after);
  }

  #watchNetwork() {
    if (!this.#opts.watchNetwork || this.#netListeners) return;
    const sources = this.#opts.lifecycle;
    const g = globalThis;
    if (!sources.target && g.navigator && 'onLine' in g.navigator) this.#offline = g.navigator.onLine === false;
    this.#netListeners = watchLifecycle(
      {
        online: () => this.#onOnline(),
        offline: () => this.#onOffline(),
        foreground: () => this.resume(),
        background: () => this.#onBackground(),
        networkChanged: () => this.networkChanged(),
      },
      sources,
    );
  }

  #unwatchNetwork() {
    clearTimeout(this.#backgroundTimer);
    this.#backgroundTimer = null;
    if (!this.#netListeners) return;
    this.#netListeners();
    this.#netListeners = null;
  }
}

function utf8Bytes(s) {
  if (typeof TextEncoder === 'function') return new TextEncoder().encode(s).length;
  return s.length * 3;
}

const sharedClients = new Map();

/**
 * One shared client per websocket URL: widgets on the same page share one
 * connection to their hub. A later caller that brings a token the shared
 * client does not have authorizes the connection with it (`auth`), so that
 * a token widget added beside public ones reads its topics; the latest
 * token then serves the whole connection.
 */
export function sharedClient(url, options = {}) {
  let entry = sharedClients.get(url);
  if (!entry || entry.client.state === ConnectionState.CLOSED) {
    entry = { client: new TribuneClient({ ...options, url }), token: options.token };
    sharedClients.set(url, entry);
  } else if (options.token !== undefined && options.token !== entry.token) {
    entry.token = options.token;
    // Refusals are reported on the client's `error` event.
    entry.client.authorize(options.token).catch(() => {});
  }
  return entry.client;
}
