// Small test helpers: eventual assertions instead of sleeps, repo paths, and
// a lossless JSON reader for the golden vectors (ids up to 2^64-1).

import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');

/**
 * Polls `check` until it returns a truthy value (returned) or throws after
 * `timeoutMs` with the last error or `message`.
 */
export async function eventually(check, { timeoutMs = 5000, intervalMs = 10, message = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const detail = lastError ? `: ${lastError.message}` : '';
      throw new Error(`not within ${timeoutMs} ms: ${message}${detail}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Resolves with the next value `register(resolve)` produces, or rejects after `timeoutMs`. */
export function waitFor(register, { timeoutMs = 5000, message = 'event' } = {}) {
  return new Promise((resolve, reject) => {
    let off;
    const timer = setTimeout(() => {
      off?.();
      reject(new Error(`not within ${timeoutMs} ms: ${message}`));
    }, timeoutMs);
    off = register((value) => {
      clearTimeout(timer);
      off?.();
      resolve(value);
    });
  });
}

/**
 * Parses JSON keeping integers beyond 2^53 exact (as BigInt), so that a
 * vector id of 18446744073709551615 compares as itself.
 */
export function parseLossless(text) {
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  const value = () => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const obj = {};
      ws();
      if (text[i] === '}') {
        i++;
        return obj;
      }
      for (;;) {
        ws();
        const key = string();
        ws();
        if (text[i++] !== ':') throw new SyntaxError(`expected ':' at ${i}`);
        obj[key] = value();
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i++] !== '}') throw new SyntaxError(`expected '}' at ${i}`);
        return obj;
      }
    }
    if (c === '[') {
      i++;
      const arr = [];
      ws();
      if (text[i] === ']') {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(value());
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i++] !== ']') throw new SyntaxError(`expected ']' at ${i}`);
        return arr;
      }
    }
    if (c === '"') return string();
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?|^true|^false|^null/.exec(text.slice(i));
    if (!m) throw new SyntaxError(`unexpected ${JSON.stringify(c)} at ${i}`);
    i += m[0].length;
    if (m[0] === 'true') return true;
    if (m[0] === 'false') return false;
    if (m[0] === 'null') return null;
    if (!m[2] && !m[3]) {
      const n = Number(m[0]);
      return Number.isSafeInteger(n) ? n : BigInt(m[0]);
    }
    return Number(m[0]);
  };
  const string = () => {
    const start = i;
    if (text[i++] !== '"') throw new SyntaxError(`expected string at ${start}`);
    while (text[i] !== '"') {
      if (text[i] === '\\') i++;
      i++;
      if (i >= text.length) throw new SyntaxError('unterminated string');
    }
    i++;
    return JSON.parse(text.slice(start, i));
  };
  const out = value();
  ws();
  if (i !== text.length) throw new SyntaxError(`trailing text at ${i}`);
  return out;
}
