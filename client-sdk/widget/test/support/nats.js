// A real nats-server for the browser tests that need several hubs on one
// bus (admin, HTTP fallback): JetStream on a random loopback port, its
// store under the test's own directory. scripts/test puts nats-server on
// PATH.
import { spawn } from 'node:child_process';
import path from 'node:path';

/**
 * Starts nats-server with its store in `dir`; `url` resolves with its
 * client URL once it listens (or rejects after 30 s with its output).
 */
export function startNats(dir) {
  const child = spawn('nats-server', ['-js', '-a', '127.0.0.1', '-p', '-1', '-sd', path.join(dir, 'nats')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const url = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nats-server did not listen in 30 s:\n${out}`)), 30000);
    const read = (d) => {
      out += d.toString();
      const m = /Listening for client connections on (\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(`nats://${m[1]}`);
      }
    };
    child.stdout.on('data', read);
    child.stderr.on('data', read);
    child.once('error', (e) => reject(new Error(`nats-server (put it on PATH; scripts/test does): ${e.message}`)));
  });
  return { child, url };
}
