// Emitter: the small listener list behind the client's and the subscriptions'
// `on`/`off`. A throwing listener never breaks delivery to the others.

export class Emitter {
  #listeners = new Map();

  on(event, fn) {
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  off(event, fn) {
    this.#listeners.get(event)?.delete(fn);
  }

  emit(event, value) {
    const set = this.#listeners.get(event);
    if (!set) return 0;
    for (const fn of [...set]) {
      try {
        fn(value);
      } catch (err) {
        // A throwing listener must not break delivery to the others nor the
        // connection; it is surfaced asynchronously like an uncaught error.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
    return set.size;
  }

  clear() {
    this.#listeners.clear();
  }
}
