// The HTTP fallback transport (PROTOCOL.md section 11) for networks whose
// proxies strip `Upgrade`: an object with a WebSocket's surface (readyState,
// send, close, onopen/onmessage/onclose) that client.js drives exactly as it
// drives a socket, so that continuity, resume, deltas and the widget's
// events are the same code. Under it:
//
// - one `GET /v1/sse` stream per subscribed topic, read with `fetch` and a
//   ReadableStream (not EventSource: a token goes in `Authorization`, never
//   in a URL, and the client decides about reconnects); each event's data is
//   the hub's frame, handed on as the websocket would have;
// - `react` as `POST /v1/react` with the stream's reaction key;
// - `unsubscribe` ends the stream; `auth` keeps the token for the next
//   requests (a refresh reopens the streams through a reconnect); `ping` is answered after a round trip to the hub (`/readyz`)
//   while every stream shows signs of life (frames or heartbeat comments);
//   `publish` is refused (the websocket's only).
//
// Any stream that ends, fails or carries a `close` event closes the whole
// transport with that code, and the client reconnects and resumes every
// topic with `since`, as after a socket's close. So does a stream that stays
// silent for two heartbeats (section 7's rule, per stream): a connection that
// dies without a FIN or RST (a NAT or a proxy that forgets it) never fails
// its `fetch` body, and the client's own silence rule cannot see it while
// another topic's stream is busy (any frame counts as life there).

import { PROTOCOL_VERSION } from './protocol.js';

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;

// Until a stream's `welcome` says otherwise: the hub's default.
const DEFAULT_HEARTBEAT_MS = 25000;

/** The hub's HTTP base URL for a websocket URL (`wss://h/v1/ws` → `https://h`). */
export function httpBaseFromWs(wsUrl) {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
  url.pathname = url.pathname.replace(/\/v1\/ws\/?$/, '') || '/';
  url.search = '';
  url.hash = '';
  return url.href.replace(/\/$/, '');
}

/** Whether this runtime can stream a response body (the transport's need). */
export function httpStreamingAvailable() {
  return (
    typeof globalThis.fetch === 'function' &&
    typeof globalThis.ReadableStream === 'function' &&
    typeof globalThis.TextDecoder === 'function' &&
    typeof globalThis.AbortController === 'function'
  );
}

/** The `exp` of a JWT (Unix seconds), read without verifying; null if none. */
function tokenExp(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const exp = JSON.parse(atob(part)).exp;
    return Number.isSafeInteger(exp) ? exp : null;
  } catch {
    return null;
  }
}

export class HttpTransport {
  readyState = CONNECTING;
  onopen = null;
  onmessage = null;
  onclose = null;
  onerror = null;
  #base;
  #fetch;
  #token = null;
  #streams = new Map();
  #heartbeatMs = DEFAULT_HEARTBEAT_MS;
  #watchdog = null;
  #watchEvery = 0;

  /**
   * @param {string} wsUrl the hub's websocket URL; the fallback lives beside it
   * @param {{fetch?: Function}} [options]
   */
  constructor(wsUrl, options = {}) {
    this.#base = httpBaseFromWs(wsUrl);
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    // Streams open per subscription; what opens the transport is one round
    // trip to the hub (`/healthz`), so that a hub that is down is not taken
    // for one behind a proxy. The welcome a socket would get is made here
    // (the client needs one to be connected).
    this.#fetch(`${this.#base}/healthz`, { cache: 'no-store' }).then(
      (res) => {
        if (this.readyState !== CONNECTING) return;
        if (!res.ok) {
          this.#fail(1006, `hub not reachable over HTTP (${res.status})`);
          return;
        }
        this.readyState = OPEN;
        this.#watch();
        this.onopen?.({});
        this.#deliver(
          JSON.stringify({
            type: 'welcome',
            protocol: PROTOCOL_VERSION,
            node: '',
            conn: 'http',
            heartbeat_ms: this.#heartbeatMs,
          }),
        );
      },
      (err) => this.#fail(1006, `hub not reachable over HTTP: ${err?.message ?? err}`),
    );
  }

  /** The transport's name, for the client's `transport` getter. */
  get kind() {
    return 'http';
  }

  send(text) {
    if (this.readyState !== OPEN) throw new Error('the HTTP transport is not open');
    const frame = JSON.parse(text);
    switch (frame.type) {
      case 'subscribe':
        return this.#subscribe(frame);
      case 'unsubscribe':
        this.#end(frame.topic);
        return this.#deliver(JSON.stringify({ type: 'ack', id: frame.id }));
      case 'react':
        return void this.#react(frame);
      case 'ping':
        return void this.#ping(frame.id);
      case 'auth': {
        // A stream keeps the token it was opened with, and the hub ends it
        // at that token's exp: after a refresh the transport closes with
        // 4008, which the client answers at once with a new connection that
        // resumes every topic under the new token (nothing is lost).
        const refresh = this.#token !== null && this.#token !== frame.token && this.#streams.size > 0;
        this.#token = frame.token;
        const ack = { type: 'ack', id: frame.id };
        const exp = tokenExp(frame.token);
        if (exp !== null) ack.expires_at = exp;
        this.#deliver(JSON.stringify(ack));
        if (refresh) queueMicrotask(() => this.#fail(4008, 'token refreshed: streams reopen with it'));
        return undefined;
      }
      default:
        return this.#deliver(
          JSON.stringify({
            type: 'error',
            id: frame.id ?? null,
            code: 'forbidden',
            message: `${frame.type} needs the websocket; this client is on the HTTP fallback`,
          }),
        );
    }
  }

  close(code = 1000, reason = '') {
    this.#fail(code, reason, false);
  }

  #headers(extra = {}) {
    const h = { ...extra };
    if (this.#token) h.authorization = `Bearer ${this.#token}`;
    return h;
  }

  #deliver(text) {
    if (this.readyState !== OPEN) return;
    this.onmessage?.({ data: text });
  }

  /** Ends the whole transport: every stream, and the client hears `code`. */
  #fail(code, reason, notify = true) {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    clearInterval(this.#watchdog);
    this.#watchdog = null;
    for (const topic of [...this.#streams.keys()]) this.#end(topic);
    if (notify) this.onclose?.({ code, reason });
  }

  /**
   * Every stream, from its request on, must show life (bytes: frames or the
   * hub's `: hb` comments) within two heartbeats plus one check's interval,
   * or the whole transport ends as if the stream had failed. Checked every
   * half heartbeat, as the client checks a socket; restarted when a
   * stream's `welcome` gives the hub's interval.
   */
  #watch() {
    const every = Math.max(50, Math.floor(this.#heartbeatMs / 2));
    if (this.#watchdog && every === this.#watchEvery) return;
    clearInterval(this.#watchdog);
    this.#watchEvery = every;
    this.#watchdog = setInterval(() => {
      const now = Date.now();
      for (const stream of this.#streams.values()) {
        if (now - stream.lastRx > this.#silenceLimit()) {
          this.#fail(1006, `no sign of life on the stream of ${stream.topic}`);
          return;
        }
      }
    }, every);
    this.#watchdog.unref?.();
  }

  #silenceLimit() {
    return 2 * this.#heartbeatMs + this.#watchEvery;
  }

  #end(topic) {
    const stream = this.#streams.get(topic);
    if (!stream) return;
    this.#streams.delete(topic);
    stream.abort.abort();
  }

  #subscribe(frame) {
    this.#end(frame.topic);
    const q = new URLSearchParams({ topic: frame.topic });
    for (const key of ['history', 'since', 'epoch', 'delta', 'delay_ms']) {
      if (frame[key] !== undefined && frame[key] !== null) q.set(key, String(frame[key]));
    }
    const stream = {
      topic: frame.topic,
      subId: frame.id,
      abort: new AbortController(),
      lastRx: Date.now(),
      reactKey: null,
    };
    this.#streams.set(frame.topic, stream);
    this.#read(stream, `${this.#base}/v1/sse?${q}`);
  }

  async #read(stream, url) {
    let res;
    try {
      res = await this.#fetch(url, {
        headers: this.#headers({ accept: 'text/event-stream' }),
        signal: stream.abort.signal,
        cache: 'no-store',
      });
    } catch (err) {
      if (this.#streams.get(stream.topic) === stream) this.#fail(1006, `stream failed: ${err?.message ?? err}`);
      return;
    }
    if (this.#streams.get(stream.topic) !== stream) return;
    if (!res.ok) {
      // The subscription's refusal, as the websocket's `error` frame.
      const body = await res.json().catch(() => null);
      this.#streams.delete(stream.topic);
      const code = body?.error?.code ?? (res.status === 429 ? 'rate_limited' : 'unavailable');
      const message = body?.error?.message ?? `HTTP ${res.status}`;
      this.#deliver(JSON.stringify({ type: 'error', id: stream.subId, code, message }));
      return;
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let event = { name: '', data: [] };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        stream.lastRx = Date.now();
        buffer += decoder.decode(value, { stream: true });
        let at;
        while ((at = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, at).replace(/\r$/, '');
          buffer = buffer.slice(at + 1);
          if (line === '') {
            if (event.data.length > 0) this.#event(stream, event.name || 'message', event.data.join('\n'));
            event = { name: '', data: [] };
            if (this.#streams.get(stream.topic) !== stream) return;
            continue;
          }
          if (line.startsWith(':')) continue; // heartbeat: lastRx is enough
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const v = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') event.name = v;
          else if (field === 'data') event.data.push(v);
        }
      }
    } catch (err) {
      if (this.#streams.get(stream.topic) === stream) this.#fail(1006, `stream failed: ${err?.message ?? err}`);
      return;
    }
    if (this.#streams.get(stream.topic) === stream) this.#fail(1006, 'stream ended');
  }

  #event(stream, name, data) {
    switch (name) {
      case 'message':
      case 'stats':
      case 'gap':
      case 'retract':
      case 'drain':
        return this.#deliver(data);
      case 'ack': {
        // The stream's own request id is 1: the client knows its own.
        const ack = JSON.parse(data);
        ack.id = stream.subId;
        return this.#deliver(JSON.stringify(ack));
      }
      case 'welcome': {
        const ms = JSON.parse(data).heartbeat_ms;
        if (Number.isSafeInteger(ms) && ms > 0 && ms !== this.#heartbeatMs) {
          this.#heartbeatMs = ms;
          this.#watch();
        }
        return undefined;
      }
      case 'react':
        stream.reactKey = JSON.parse(data).key ?? null;
        return undefined;
      case 'unsubscribed':
        this.#streams.delete(stream.topic);
        stream.abort.abort();
        return this.#deliver(data);
      case 'close': {
        const { code, reason } = JSON.parse(data);
        return this.#fail(code, reason ?? '');
      }
      default:
        return undefined;
    }
  }

  async #react(frame) {
    const stream = this.#streams.get(frame.topic);
    const answer = (obj) => this.#deliver(JSON.stringify(obj));
    if (!stream?.reactKey) {
      answer({ type: 'error', id: frame.id, code: 'forbidden', message: 'react only on a topic this client is subscribed to' });
      return;
    }
    try {
      const res = await this.#fetch(`${this.#base}/v1/react`, {
        method: 'POST',
        headers: this.#headers({ 'content-type': 'application/json' }),
        body: JSON.stringify({ id: frame.id, topic: frame.topic, reaction: frame.reaction, key: stream.reactKey }),
      });
      const body = await res.json().catch(() => null);
      if (res.ok) answer({ type: 'ack', id: frame.id });
      else {
        answer({
          type: 'error',
          id: frame.id,
          code: body?.error?.code ?? 'unavailable',
          message: body?.error?.message ?? `HTTP ${res.status}`,
        });
      }
    } catch (err) {
      answer({ type: 'error', id: frame.id, code: 'unavailable', message: String(err?.message ?? err) });
    }
  }

  /**
   * A `pong` needs a round trip to the hub (the network works) and every
   * stream alive within two heartbeats (the hub writes at least a comment
   * each one; the watchdog ends the transport past that); otherwise no
   * answer, and the client's liveness rules act.
   */
  async #ping(id) {
    let ok = false;
    try {
      const res = await this.#fetch(`${this.#base}/readyz`, { cache: 'no-store' });
      ok = res.status === 200 || res.status === 503;
    } catch {
      ok = false;
    }
    const now = Date.now();
    const alive = [...this.#streams.values()].every((s) => now - s.lastRx <= this.#silenceLimit());
    if (ok && alive) this.#deliver(JSON.stringify({ type: 'pong', id }));
  }
}
