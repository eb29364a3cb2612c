// Delta updates on the JS side (PROTOCOL.md section 4): the payload text a
// state subscription holds (its base), and rebuilding a `"delta":true`
// message's payload from it. Pure functions; the client keeps the base per
// topic and resubscribes with `since` when a delta does not apply.

import { applyDelta } from './fossil-delta.js';

/** The delta format this SDK asks for (`subscribe.delta`). */
export const DELTA_FORMAT = 'fossil';

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * The `data` of a `message` frame as the hub wrote it: a delta's base must
 * be the payload byte for byte, which `JSON.parse` does not keep. The hub
 * writes `data` last (section 4), so it is the text between the first
 * `,"data":` (topics and numbers cannot hold it) and the closing `}`.
 * Returns null for a frame laid out otherwise.
 */
export function rawMessageData(text) {
  const at = text.indexOf(',"data":');
  if (at < 0 || !text.startsWith('{"type":"message",') || !text.endsWith('}')) return null;
  return text.slice(at + 8, -1);
}

/**
 * The payload text a delta rebuilds from `baseText`; throws an Error when
 * it does not apply (wrong base, size, checksum) or is not UTF-8.
 */
export function applyTextDelta(baseText, delta) {
  return decoder.decode(applyDelta(encoder.encode(baseText), encoder.encode(delta)));
}
