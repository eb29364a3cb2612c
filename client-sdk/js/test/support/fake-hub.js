// A scripted fake hub for unit tests of the SDK: a real websocket server on
// loopback (the `ws` package) whose frames the test writes by hand, so that
// malformed frames, prev mismatches and close codes can be produced at will.

import { WebSocketServer } from 'ws';

/** Starts the fake hub; `welcome: false` skips the automatic welcome frame. */
export async function startFakeHub({ welcome = true, heartbeatMs = 25000, protocols = true } = {}) {
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    path: '/v1/ws',
    handleProtocols: protocols ? (set) => (set.has('tribune.v1') ? 'tribune.v1' : false) : undefined,
  });
  await new Promise((resolve) => wss.once('listening', resolve));
  const port = wss.address().port;
  const connections = [];
  const waiting = [];
  wss.on('connection', (socket, req) => {
    const conn = new FakeConnection(socket, req, connections.length);
    connections.push(conn);
    if (welcome) {
      conn.send({ type: 'welcome', protocol: 1, node: 'fake', conn: `c-${conn.index}`, heartbeat_ms: heartbeatMs });
    }
    for (const w of waiting.splice(0)) w();
  });
  return {
    port,
    url: `ws://127.0.0.1:${port}/v1/ws`,
    connections,
    /** Resolves with connection number `index` (0-based) once it exists. */
    async connection(index, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (connections.length <= index) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`fake hub: connection ${index} did not come within ${timeoutMs} ms`);
        await new Promise((resolve) => {
          const t = setTimeout(resolve, left);
          waiting.push(() => {
            clearTimeout(t);
            resolve();
          });
        });
      }
      return connections[index];
    },
    async close() {
      for (const c of connections) c.socket.terminate();
      await new Promise((resolve) => wss.close(resolve));
    },
  };
}

class FakeConnection {
  constructor(socket, req, index) {
    this.socket = socket;
    this.index = index;
    this.url = req.url;
    this.protocol = socket.protocol;
    /** Frames received from the client, parsed. */
    this.frames = [];
    this.closed = null;
    this.waiters = [];
    socket.on('message', (data, isBinary) => {
      const frame = isBinary ? { binary: true } : JSON.parse(data.toString());
      this.frames.push(frame);
      this.#wake();
    });
    socket.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.#wake();
    });
  }

  #wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Sends an object as JSON, or a string as is. */
  send(frame) {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  sendBinary(bytes) {
    this.socket.send(Buffer.from(bytes), { binary: true });
  }

  close(code, reason = '') {
    this.socket.close(code, reason);
  }

  /** Kills the TCP connection without a close frame (client sees 1006). */
  terminate() {
    this.socket.terminate();
  }

  /**
   * Resolves with the first received frame (from `from` on) matching
   * `predicate` (a type name or a function).
   */
  async next(predicate, { from = 0, timeoutMs = 5000 } = {}) {
    const match = typeof predicate === 'string' ? (f) => f.type === predicate : predicate;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.frames.slice(from).find(match);
      if (found) return found;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`fake hub: no matching frame within ${timeoutMs} ms; got ${JSON.stringify(this.frames)}`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Resolves once the client closed this connection. */
  async waitClosed(timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('fake hub: connection not closed in time');
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.closed;
  }
}
