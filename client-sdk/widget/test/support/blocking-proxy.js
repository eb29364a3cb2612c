// An HTTP proxy like an office's or a hotel's: it forwards plain HTTP
// (streamed both ways, nothing buffered) to its hubs in turn (round robin,
// no stickiness) and refuses every websocket upgrade with 403, until
// `allowUpgrades()` lets upgrades through (to the hubs in turn as well).
// `only(port)` sends everything to one hub, for a test that must know
// which node serves a request.

import http from 'node:http';
import net from 'node:net';

/** Starts the proxy on a loopback port in front of hub `ports`. */
export async function startBlockingProxy(ports) {
  let next = 0;
  let blockUpgrades = true;
  let pinned = null;
  const pick = () => pinned ?? ports[next++ % ports.length];
  const stats = { requests: 0, refusedUpgrades: 0, upgrades: 0, byPort: {} };
  const sockets = new Set();
  const agent = new http.Agent({ keepAlive: false });
  const server = http.createServer((req, res) => {
    stats.requests += 1;
    const port = pick();
    stats.byPort[port] = (stats.byPort[port] ?? 0) + 1;
    const upstream = http.request(
      { host: '127.0.0.1', port, method: req.method, path: req.url, headers: req.headers, agent },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        res.flushHeaders();
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req, socket, head) => {
    if (blockUpgrades) {
      stats.refusedUpgrades += 1;
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    stats.upgrades += 1;
    const upstream = net.connect(pick(), '127.0.0.1', () => {
      let raw = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) raw += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      upstream.write(`${raw}\r\n`);
      if (head?.length) upstream.write(head);
      socket.pipe(upstream);
      upstream.pipe(socket);
    });
    sockets.add(upstream);
    const end = () => {
      socket.destroy();
      upstream.destroy();
      sockets.delete(upstream);
    };
    socket.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  return {
    port,
    httpUrl: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/v1/ws`,
    stats,
    /** The proxy is gone from the path: upgrades pass. */
    allowUpgrades() {
      blockUpgrades = false;
    },
    /** Sends every new request to `port` (null: round robin again). */
    only(port) {
      pinned = port;
    },
    /** Cuts every connection (streams and sockets): clients reconnect. */
    dropAll() {
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    close() {
      this.dropAll();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
