// Starts the real `tribune-hub` binary on 127.0.0.1 port 0 (no mocks): reads
// the `internal listener on http://<addr>` and `listening on http://<addr>`
// lines, publishes through POST /v1/publish on the internal listener with a
// fresh key (given in TRIBUNE_PUBLISH_KEY), stops it with a signal. Also a TCP proxy in front
// of it, so that a test can cut the network or restart the hub behind one
// stable address.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { repoRoot } from './util.js';

export const hubBinary = process.env.TRIBUNE_HUB_BIN ?? path.join(repoRoot, 'target/debug/tribune-hub');

export class Hub {
  constructor(args) {
    this.args = args;
    this.child = null;
    this.addr = null;
    this.internalAddr = null;
    this.publishKey = randomBytes(24).toString('hex');
    this.output = [];
  }

  /** Starts the hub; resolves once it printed its address. */
  static async start(args = []) {
    const hub = new Hub(args);
    await hub.#spawn();
    return hub;
  }

  get httpUrl() {
    return `http://${this.addr}`;
  }

  get wsUrl() {
    return `ws://${this.addr}/v1/ws`;
  }

  get port() {
    return Number(this.addr.slice(this.addr.lastIndexOf(':') + 1));
  }

  async #spawn() {
    if (!existsSync(hubBinary)) {
      throw new Error(`hub binary ${hubBinary} is missing: run 'cargo build -p tribune-hub' (scripts/test-js does)`);
    }
    const child = spawn(hubBinary, ['--listen', '127.0.0.1:0', ...this.args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn', TRIBUNE_PUBLISH_KEY: this.publishKey },
    });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    child.stderr.on('data', (d) => this.#keep(d));
    this.addr = await new Promise((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(() => reject(new Error(`hub did not print its address in 60 s:\n${this.log()}`)), 60000);
      child.stdout.on('data', (d) => {
        this.#keep(d);
        buf += d.toString();
        const internal = /internal listener on http:\/\/(\S+)/.exec(buf);
        const m = /listening on http:\/\/(\S+)/.exec(buf);
        if (internal && m) {
          clearTimeout(timer);
          this.internalAddr = internal[1];
          resolve(m[1]);
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`hub exited (${code ?? signal}) before listening:\n${this.log()}`));
      });
    });
  }

  #keep(d) {
    this.output.push(d.toString());
    if (this.output.length > 400) this.output.splice(0, 200);
  }

  /** The hub's recent output, for failure messages. */
  log() {
    return this.output.join('').slice(-4000);
  }

  /** POST /v1/publish on the internal listener, with the key; resolves with the stored seq. */
  async publish(topic, data) {
    const res = await fetch(`http://${this.internalAddr}/v1/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${this.publishKey}` },
      body: JSON.stringify({ topic, data }),
    });
    const body = await res.text();
    if (!res.ok) throw new Error(`publish ${topic}: HTTP ${res.status} ${body}`);
    return JSON.parse(body).seq;
  }

  /** POST /v1/retract on the internal listener, with the key; resolves with the marker's seq. */
  async retract(topic, seq) {
    const res = await fetch(`http://${this.internalAddr}/v1/retract`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${this.publishKey}` },
      body: JSON.stringify({ topic, seq }),
    });
    const body = await res.text();
    if (!res.ok) throw new Error(`retract ${topic} ${seq}: HTTP ${res.status} ${body}`);
    return JSON.parse(body).seq;
  }

  /** Stops the hub (SIGKILL by default: a crash; SIGTERM drains). */
  async stop(signal = 'SIGKILL') {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill(signal);
    await this.exited;
  }

  /** Stops and starts again on a new port (the embedded bus starts a new epoch). */
  async restart() {
    await this.stop();
    await this.#spawn();
  }
}

/**
 * A loopback TCP proxy with a movable target: `dropAll()` cuts every
 * connection without a close frame (a network failure, close code 1006 for
 * the client), `block()` refuses new connections until `unblock()`,
 * `silence()` black-holes the connections open now.
 */
export async function startProxy(targetPort) {
  let target = targetPort;
  let blocked = false;
  const sockets = new Set();
  // Proxied connections as [client, upstream], for `silence()`.
  const pairs = new Set();
  const server = net.createServer((client) => {
    if (blocked || target === null) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
    pairs.add([client, upstream]);
    client.on('close', () => pairs.forEach((p) => p[0] === client && pairs.delete(p)));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  return {
    port,
    httpUrl: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/v1/ws`,
    setTarget(p) {
      target = p;
    },
    dropAll() {
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    block() {
      blocked = true;
    },
    /**
     * Black-holes every connection open now: nothing passes either way,
     * nothing closes (a phone's socket after a network change). New
     * connections pass.
     */
    silence() {
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
      pairs.clear();
    },
    unblock() {
      blocked = false;
    },
    get connections() {
      return sockets.size / 2;
    },
    close() {
      this.dropAll();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
