// Subscription: the caller's handle on one topic, an async iterable and a
// callback source, with a bounded iteration buffer whose overflow is said
// with a gap event. It calls back into the client instance it is given
// (`_release`, `react`) and imports no client code, so no import circle forms.

import { Emitter } from './emitter.js';

/**
 * A subscription handle. Iterate it (`for await (const ev of sub)`) to
 * receive events `{type:'message'|'gap'|'retract'|'stats', ...}`, or listen with
 * `sub.on('message', fn)`. It ends when unsubscribed or when the client closes;
 * it throws when the hub refuses the subscription for good, or ends it (an
 * `unsubscribed` event `{topic, code}` first: a refreshed token no longer
 * grants the topic).
 */
export class Subscription {
  #client;
  #state;
  #emitter = new Emitter();
  #queue = [];
  #waiters = [];
  #buffering;
  #bufferSize;
  #done = false;
  #failure = null;

  /** @internal */
  constructor(client, state, options) {
    this.#client = client;
    this.#state = state;
    this.topic = state.topic;
    this.#bufferSize = options.bufferSize ?? 1024;
    const callbacks = ['onMessage', 'onGap', 'onRetract', 'onStats', 'onError', 'onSubscribed', 'onUnsubscribed', 'onEvent'];
    // A caller that passes callbacks has chosen callbacks: events are not
    // buffered for iteration unless it starts iterating.
    this.#buffering = !callbacks.some((k) => typeof options[k] === 'function');
    if (options.onMessage) this.on('message', options.onMessage);
    if (options.onGap) this.on('gap', options.onGap);
    if (options.onRetract) this.on('retract', options.onRetract);
    if (options.onStats) this.on('stats', options.onStats);
    if (options.onError) this.on('error', options.onError);
    if (options.onSubscribed) this.on('subscribed', options.onSubscribed);
    if (options.onUnsubscribed) this.on('unsubscribed', options.onUnsubscribed);
    if (options.onEvent) {
      this.on('message', options.onEvent);
      this.on('gap', options.onEvent);
      this.on('retract', options.onEvent);
      this.on('stats', options.onEvent);
    }
  }

  /** `state` or `feed` once the hub acked, else null. */
  get mode() {
    return this.#state.mode;
  }

  /** The bus epoch of the last ack, else null. */
  get epoch() {
    return this.#state.epoch;
  }

  /** Seq of the last message delivered (0 when none in this epoch). */
  get lastSeq() {
    return this.#state.lastSeq;
  }

  /** State topics: the latest message event, or null. */
  get latest() {
    return this.#state.latest;
  }

  /** The spoiler shield's delay of the topic, in ms (0: live). */
  get delayMs() {
    return this.#state.delayMs;
  }

  /**
   * Changes the topic's delay (0 to 120000 ms) for every handle on it: the
   * subscription is renewed where it is (`since`), with the new delay.
   * Throws a TribuneError `bad_request` for a delay out of range.
   */
  setDelay(delayMs) {
    this.#client._setDelay(this.#state, delayMs);
  }

  /** The latest `stats` event of the topic, or null. */
  get stats() {
    return this.#state.stats;
  }

  /** Whether the subscription has ended. */
  get closed() {
    return this.#done;
  }

  /** Adds a listener for `message`, `gap`, `retract`, `stats`, `subscribed` or `error`; returns a remover. */
  on(event, fn) {
    return this.#emitter.on(event, fn);
  }

  off(event, fn) {
    this.#emitter.off(event, fn);
  }

  /** Sends a reaction to this topic (see `TribuneClient.react`). */
  react(reaction) {
    return this.#client.react(this.topic, reaction);
  }

  /** Stops this handle; the topic is unsubscribed when no handle is left. */
  unsubscribe() {
    if (this.#done) return;
    this.#client._release(this.#state, this);
    this.#finish(null);
  }

  /** @internal Delivers one event to listeners and the iteration buffer. */
  _deliver(event) {
    if (this.#done) return;
    this.#emitter.emit(event.type, event);
    if (!this.#buffering) return;
    if (event.type === 'retract') {
      // A retracted item still waiting in the buffer is never handed out;
      // the event itself is, for what the consumer already took.
      this.#queue = this.#queue.filter((e) => !(e.type === 'message' && e.seq === event.seq));
    }
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter.resolve({ value: event, done: false });
      return;
    }
    this.#queue.push(event);
    if (this.#queue.length > this.#bufferSize) {
      // Bounded: a consumer that stopped reading costs at most bufferSize
      // events. The oldest go, and the loss is said (one gap event at the
      // head counting every dropped message), never silent.
      let gap = this.#queue[0].reason === 'buffer_overflow' ? this.#queue.shift() : null;
      const dropped = this.#queue.splice(0, this.#queue.length - this.#bufferSize + 1);
      const lost = dropped.filter((e) => e.type === 'message');
      if (!gap) {
        gap = { type: 'gap', topic: this.topic, reason: 'buffer_overflow', after: lost[0]?.prev ?? null, dropped: 0 };
      }
      gap.dropped += lost.length;
      this.#queue.unshift(gap);
    }
  }

  /** @internal */
  _emitOnly(type, value) {
    if (!this.#done) this.#emitter.emit(type, value);
  }

  /** @internal Ends the handle; `error` set makes iteration throw it. */
  _fail(error) {
    if (this.#done) return;
    this.#emitter.emit('error', error);
    this.#finish(error);
  }

  /** @internal */
  _end() {
    this.#finish(null);
  }

  #finish(error) {
    if (this.#done) return;
    this.#done = true;
    this.#failure = error;
    for (const w of this.#waiters.splice(0)) {
      if (error && this.#queue.length === 0) w.reject(error);
      else w.resolve({ value: undefined, done: true });
    }
    this.#emitter.clear();
  }

  [Symbol.asyncIterator]() {
    this.#buffering = true;
    return {
      next: () => {
        if (this.#queue.length) return Promise.resolve({ value: this.#queue.shift(), done: false });
        if (this.#done) {
          if (this.#failure) {
            const err = this.#failure;
            this.#failure = null;
            return Promise.reject(err);
          }
          return Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
      },
      return: () => {
        this.unsubscribe();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  /** Async iterator of `message` events only. */
  async *messages() {
    for await (const event of this) {
      if (event.type === 'message') yield event;
    }
  }
}
