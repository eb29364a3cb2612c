// GET /v1/history (PROTOCOL.md section 12): one page of a topic's retained
// messages, older than `before` (the newest when absent), oldest first. A
// plain HTTP read beside the websocket: no subscription, no connection
// needed. The token goes in an `Authorization: Bearer` header, never in the
// URL; every frame is checked as the websocket's are (decodeServerFrame).

import { TribuneError, decodeServerFrame, validateTopic } from './protocol.js';

/** The most messages one page may hold (the hub refuses more). */
export const MAX_HISTORY_LIMIT = 100;

/** The hub's history URL for its websocket URL (`wss://h/v1/ws` → `https://h/v1/history`). */
export function historyUrl(wsUrl) {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
  url.pathname = url.pathname.replace(/\/v1\/ws\/?$/, '') + '/v1/history';
  url.search = '';
  url.hash = '';
  return url.toString();
}

/**
 * Reads one page. `token` is a JWT or a provider function (as the client's
 * option); `fetchImpl` defaults to the global fetch.
 * Resolves with `{topic, epoch, messages, gaps, before}`: `messages` are
 * message events (`replay: true`), `gaps` the holes (`reason: 'lost'`) the
 * page crosses, `before` the argument for the next (older) page or null when
 * nothing older is retained. Rejects with a TribuneError carrying the hub's
 * code (`rate_limited` with `details.retryAfter` in seconds).
 */
export async function fetchHistory({ wsUrl, token, fetchImpl }, topic, { before, limit } = {}) {
  const invalid = validateTopic(topic);
  if (invalid) throw new TribuneError('bad_request', invalid);
  const doFetch = fetchImpl ?? globalThis.fetch;
  if (typeof doFetch !== 'function') throw new TribuneError('bad_request', 'no fetch available for history()');
  const url = new URL(historyUrl(wsUrl));
  url.searchParams.set('topic', topic);
  if (before !== undefined && before !== null) {
    if (!Number.isSafeInteger(before) || before < 1) throw new TribuneError('bad_request', 'before must be a seq of at least 1');
    url.searchParams.set('before', String(before));
  }
  if (limit !== undefined && limit !== null) {
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_HISTORY_LIMIT) {
      throw new TribuneError('bad_request', `limit must be 1..${MAX_HISTORY_LIMIT}`);
    }
    url.searchParams.set('limit', String(limit));
  }
  const headers = { accept: 'application/json' };
  const jwt = typeof token === 'function' ? await token() : token;
  if (jwt) headers.authorization = `Bearer ${jwt}`;
  let res;
  try {
    res = await doFetch(url.toString(), { headers, credentials: 'omit', cache: 'no-store' });
  } catch (err) {
    throw new TribuneError('unavailable', `history request failed: ${err?.message ?? err}`);
  }
  let body;
  try {
    body = await res.json();
  } catch {
    throw new TribuneError('unavailable', `history answer is not JSON (HTTP ${res.status})`);
  }
  if (!res.ok) {
    const code = typeof body?.error?.code === 'string' ? body.error.code : 'unavailable';
    const message = typeof body?.error?.message === 'string' ? body.error.message : `HTTP ${res.status}`;
    const retryAfter = Number(res.headers.get('retry-after')) || undefined;
    throw new TribuneError(code, message, { status: res.status, retryAfter });
  }
  if (body?.topic !== topic || typeof body.epoch !== 'string' || !Array.isArray(body.messages)) {
    throw new TribuneError('unavailable', 'history answer has not the page shape');
  }
  const messages = [];
  const gaps = [];
  for (const item of body.messages) {
    // Checked as the websocket's frames: the same rules, the same errors.
    const frame = decodeServerFrame(JSON.stringify(item));
    if (frame.topic !== topic) throw new TribuneError('unavailable', 'history answer holds another topic');
    if (frame.type === 'message') {
      messages.push({ type: 'message', topic, seq: frame.seq, prev: frame.prev, ts: frame.ts, replay: true, data: frame.data });
    } else if (frame.type === 'gap') {
      gaps.push({ type: 'gap', topic, reason: 'lost', after: frame.after, before: frame.before });
    } else {
      throw new TribuneError('unavailable', `history answer holds a ${frame.type} frame`);
    }
  }
  const next = Number.isSafeInteger(body.before) && body.before > 0 ? body.before : null;
  return { topic, epoch: body.epoch, messages, gaps, before: next };
}
