// Tribune wire protocol v1 for JavaScript (PROTOCOL.md): topic validation,
// strict decoding of hub frames, canonical encoding of client frames, close
// codes and the reconnect rule after each. Pure functions only: no sockets,
// no timers, so every rule here is unit-tested without a network.

/** Protocol version this SDK speaks (`welcome.protocol`). */
export const PROTOCOL_VERSION = 1;

/** WebSocket subprotocol a client offers; the hub echoes it (section 1). */
export const SUBPROTOCOL = 'tribune.v1';

/** Topic limits of PROTOCOL.md section 2. */
export const MAX_TOPIC_BYTES = 200;
export const MAX_TOKEN_LEN = 64;
export const MIN_TOKENS = 2;
export const MAX_TOKENS = 8;

/** Client frame size limit of PROTOCOL.md section 8 (default). */
export const MAX_CLIENT_FRAME_BYTES = 4096;

/**
 * Close codes of PROTOCOL.md section 6, and the two a client uses itself:
 * `ABNORMAL` (RFC 6455: never sent; what a connection that died without a
 * close frame reports) and `CLIENT_RESTART` (the client leaves on its own to
 * come back at once; 4000-4999 is the application range browsers allow).
 */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  DRAINING: 1001,
  BINARY_FRAME: 1003,
  ABNORMAL: 1006,
  POLICY: 1008,
  FRAME_TOO_LARGE: 1009,
  INTERNAL: 1011,
  CLIENT_RESTART: 4000,
  SLOW_CONSUMER: 4008,
  FLOOD: 4029,
});

/** Error codes a hub may send in an `error` frame (section 4). */
export const ERROR_CODES = Object.freeze([
  'bad_request',
  'bad_topic',
  'unknown_namespace',
  'forbidden',
  'too_many_subscriptions',
  'rate_limited',
  'payload_too_large',
  'unavailable',
]);

/**
 * An error of this SDK or one reported by the hub. `code` is one of the
 * protocol's error codes, or an SDK code: `bad_frame` (the hub sent a frame
 * that breaks the protocol), `discontinuity` (a feed message skipped one:
 * the SDK resubscribes with `since`), `not_connected`, `disconnected`,
 * `closed`, `timeout`, `protocol_mismatch`.
 */
export class TribuneError extends Error {
  constructor(code, message, details) {
    super(message);
    this.name = 'TribuneError';
    this.code = code;
    if (details !== undefined) this.details = details;
  }
}

/**
 * What a client must do after a close (section 6): `never` after 1000 and
 * 1008, `immediately` after 4008 (resume at once with `since`), otherwise
 * `backoff` (jittered exponential).
 */
export function reconnectPolicy(code) {
  if (code === CloseCode.NORMAL || code === CloseCode.POLICY) return 'never';
  if (code === CloseCode.SLOW_CONSUMER) return 'immediately';
  return 'backoff';
}

/**
 * Full-jitter exponential backoff: a uniform delay in
 * [0, min(maxMs, initialMs * 2^attempt)). Full jitter spreads a crowd of
 * clients that lost the same node over the whole window instead of letting
 * them return in waves.
 */
export function backoffDelay(attempt, { initialMs = 500, maxMs = 30000 } = {}, random = Math.random) {
  const exp = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * exp);
}

const TOKEN_RE = /^[A-Za-z0-9_-]+$/;

/**
 * Checks a topic against every rule of section 2. Returns `null` when the
 * topic is valid, or a reason. Mirrors `tribune_protocol::validate_topic`.
 */
export function validateTopic(topic) {
  if (typeof topic !== 'string') return 'topic must be a string';
  if (utf8Length(topic) > MAX_TOPIC_BYTES) return `topic is longer than ${MAX_TOPIC_BYTES} bytes`;
  const tokens = topic.split('.');
  for (const token of tokens) {
    if (token.length === 0) return 'topic has an empty token';
    if (token.length > MAX_TOKEN_LEN) return `topic token is longer than ${MAX_TOKEN_LEN} characters`;
    if (!TOKEN_RE.test(token)) {
      return 'topic may only hold [A-Za-z0-9_-] and dots (no wildcards, no spaces)';
    }
  }
  if (tokens.length < MIN_TOKENS) return `topic needs at least ${MIN_TOKENS} dot-separated tokens`;
  if (tokens.length > MAX_TOKENS) return `topic has more than ${MAX_TOKENS} tokens`;
  return null;
}

/** Whether `topic` satisfies section 2. */
export function isValidTopic(topic) {
  return validateTopic(topic) === null;
}

/** The namespace (first token) of a topic. */
export function namespaceOf(topic) {
  const dot = topic.indexOf('.');
  return dot < 0 ? topic : topic.slice(0, dot);
}

function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

// ---------------------------------------------------------------------------
// Hub → client frames (section 4)

const U64_MAX = 18446744073709551615n;
const U32_MAX = 4294967295;

// A u64 in a decoded frame must also be a safe integer: beyond 2^53 a JS
// number silently rounds, and a rounded `seq` would break every continuity
// check that follows, so such a frame is refused rather than half-trusted.
const isU64 = (v) => Number.isSafeInteger(v) && v >= 0;
const isU32 = (v) => Number.isSafeInteger(v) && v >= 0 && v <= U32_MAX;
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// Field rules per frame type. `?` marks optional fields (absent or null);
// unknown extra fields are ignored, as the Rust decoder does.
const FIELD_CHECKS = {
  u64: isU64,
  u32: isU32,
  string: (v) => typeof v === 'string',
  bool: (v) => typeof v === 'boolean',
  topic: (v) => typeof v === 'string' && isValidTopic(v),
  mode: (v) => v === 'state' || v === 'feed',
  code: (v) => typeof v === 'string' && v.length > 0,
  counts: (v) => isObject(v) && Object.values(v).every(isU64),
  any: () => true,
};

const SERVER_FRAMES = {
  welcome: { protocol: 'u32', node: 'string', conn: 'string', heartbeat_ms: 'u64', 'expires_at?': 'u64' },
  ack: {
    id: 'u64',
    'topic?': 'topic',
    'mode?': 'mode',
    'epoch?': 'string',
    'seq?': 'u64',
    'recovered?': 'bool',
    'delta?': 'bool',
    'expires_at?': 'u64',
  },
  message: { topic: 'topic', seq: 'u64', prev: 'u64', ts: 'u64', 'replay?': 'bool', 'delta?': 'bool', data: 'any' },
  error: { 'id?': 'u64', code: 'code', message: 'string' },
  pong: { id: 'u64' },
  drain: { retry_ms: 'u64' },
  stats: { topic: 'topic', audience: 'u64', reactions: 'counts', window_ms: 'u64' },
  gap: { topic: 'topic', after: 'u64', before: 'u64' },
  unsubscribed: { topic: 'topic', code: 'code' },
  retract: { topic: 'topic', seq: 'u64', at: 'u64', prev: 'u64', ts: 'u64', 'replay?': 'bool' },
};

function badFrame(reason, text) {
  const sample = typeof text === 'string' ? text.slice(0, 200) : undefined;
  return new TribuneError('bad_frame', `hub sent a bad frame: ${reason}`, { frame: sample });
}

/**
 * Decodes and validates one text frame from the hub. Returns the frame object
 * (optional fields that were null are removed; `replay` and `delta` default
 * to false on messages); throws a `TribuneError` with code `bad_frame` for anything that
 * breaks section 4: invalid JSON, not an object, unknown `type`, a missing
 * field, a wrong JSON type, a `message` whose `prev` is not before its `seq`,
 * or a `gap` whose `after` is not before its `before`.
 */
export function decodeServerFrame(text) {
  if (typeof text !== 'string') throw badFrame('not a text frame');
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    throw badFrame('invalid JSON', text);
  }
  if (!isObject(frame)) throw badFrame('not a JSON object', text);
  const spec = Object.hasOwn(SERVER_FRAMES, frame.type) ? SERVER_FRAMES[frame.type] : undefined;
  if (!spec) throw badFrame(`unknown type ${JSON.stringify(frame.type)}`, text);
  for (const [key, kind] of Object.entries(spec)) {
    const optional = key.endsWith('?');
    const name = optional ? key.slice(0, -1) : key;
    const present = Object.hasOwn(frame, name);
    if (optional && (!present || frame[name] === null)) {
      // error.id is null when not tied to a request: keep it, in place.
      if (present && !(frame.type === 'error' && name === 'id')) delete frame[name];
      continue;
    }
    if (!present) throw badFrame(`${frame.type} lacks '${name}'`, text);
    if (!FIELD_CHECKS[kind](frame[name])) throw badFrame(`${frame.type}.${name} is not a valid ${kind}`, text);
  }
  if (frame.type === 'error' && !Object.hasOwn(frame, 'id')) frame.id = null;
  if (frame.type === 'message') {
    if (frame.seq < 1) throw badFrame('message.seq must be at least 1', text);
    if (frame.prev >= frame.seq) throw badFrame('message.prev must be lower than its seq', text);
    if (frame.replay === undefined) frame.replay = false;
    if (frame.delta === undefined) frame.delta = false;
    // A delta travels as a JSON string (the Fossil delta's text).
    if (frame.delta && typeof frame.data !== 'string') throw badFrame('a delta message carries a string', text);
  }
  if (frame.type === 'retract') {
    // It retracts an older message and takes its own place after its prev
    // (`at` equals `seq` only for a retracted message replayed in place).
    if (frame.seq < 1 || frame.at < frame.seq || frame.prev >= frame.at) {
      throw badFrame('retract needs 1 <= seq <= at and prev < at', text);
    }
    if (frame.replay === undefined) frame.replay = false;
  }
  // A hole needs two ends in order; the reverse could only be a broken hub.
  if (frame.type === 'gap' && frame.after >= frame.before) throw badFrame('gap.after must be lower than its before', text);
  return frame;
}

// ---------------------------------------------------------------------------
// Client → hub frames (section 3)

// Ids travel as u64. The SDK numbers requests from 1 with plain numbers; a
// BigInt is accepted so that any valid frame (up to 2^64-1) can be encoded.
function isId(v) {
  if (typeof v === 'bigint') return v >= 0n && v <= U64_MAX;
  return isU64(v);
}

function requireField(frame, name, check, what) {
  if (!Object.hasOwn(frame, name) || frame[name] === undefined) {
    throw new TribuneError('bad_request', `${frame.type} needs '${name}'`);
  }
  if (!check(frame[name])) throw new TribuneError('bad_request', `${frame.type}.${name} must be ${what}`);
}

function requireTopic(frame) {
  requireField(frame, 'topic', (v) => typeof v === 'string', 'a string');
  const reason = validateTopic(frame.topic);
  if (reason) throw new TribuneError('bad_topic', reason);
}

const optionalPresent = (frame, name) => Object.hasOwn(frame, name) && frame[name] !== undefined && frame[name] !== null;

/**
 * Validates a client frame object and encodes it as the canonical JSON text:
 * keys in the order of section 3 (`type`, `id`, `topic`, then the rest).
 * Throws a `TribuneError` (`bad_request`, `bad_topic`) for a frame the hub
 * would refuse, so that the SDK never sends one.
 */
export function encodeClientFrame(frame) {
  if (!isObject(frame)) throw new TribuneError('bad_request', 'a frame is an object');
  requireField(frame, 'id', isId, 'an unsigned 64-bit integer');
  const head = `{"type":${JSON.stringify(frame.type)},"id":${String(frame.id)}`;
  switch (frame.type) {
    case 'subscribe': {
      requireTopic(frame);
      let out = `${head},"topic":${JSON.stringify(frame.topic)}`;
      if (optionalPresent(frame, 'history')) {
        requireField(frame, 'history', isU32, 'an unsigned 32-bit integer');
        out += `,"history":${frame.history}`;
      }
      const since = optionalPresent(frame, 'since');
      const epoch = optionalPresent(frame, 'epoch');
      if (since !== epoch) throw new TribuneError('bad_request', "subscribe takes 'since' and 'epoch' together");
      if (since) {
        requireField(frame, 'since', isU64, 'an unsigned 64-bit integer');
        requireField(frame, 'epoch', (v) => typeof v === 'string', 'a string');
        out += `,"since":${frame.since},"epoch":${JSON.stringify(frame.epoch)}`;
      }
      if (optionalPresent(frame, 'delta')) {
        requireField(frame, 'delta', (v) => typeof v === 'string', 'a string');
        out += `,"delta":${JSON.stringify(frame.delta)}`;
      }
      if (optionalPresent(frame, 'delay_ms')) {
        requireField(frame, 'delay_ms', (v) => isU32(v) && v <= 120000, 'an integer from 0 to 120000');
        out += `,"delay_ms":${frame.delay_ms}`;
      }
      return `${out}}`;
    }
    case 'unsubscribe':
      requireTopic(frame);
      return `${head},"topic":${JSON.stringify(frame.topic)}}`;
    case 'publish': {
      requireTopic(frame);
      if (!Object.hasOwn(frame, 'data') || frame.data === undefined) {
        throw new TribuneError('bad_request', "publish needs 'data'");
      }
      let data;
      try {
        data = JSON.stringify(frame.data);
      } catch (err) {
        throw new TribuneError('bad_request', `publish.data is not JSON: ${err.message}`);
      }
      if (data === undefined) throw new TribuneError('bad_request', 'publish.data is not JSON');
      return `${head},"topic":${JSON.stringify(frame.topic)},"data":${data}}`;
    }
    case 'ping':
      return `${head}}`;
    case 'react':
      requireTopic(frame);
      requireField(frame, 'reaction', (v) => typeof v === 'string' && v.length > 0, 'a non-empty string');
      return `${head},"topic":${JSON.stringify(frame.topic)},"reaction":${JSON.stringify(frame.reaction)}}`;
    case 'auth':
      requireField(frame, 'token', (v) => typeof v === 'string' && v.length > 0, 'a non-empty string');
      return `${head},"token":${JSON.stringify(frame.token)}}`;
    default:
      throw new TribuneError('bad_request', `unknown frame type ${JSON.stringify(frame.type)}`);
  }
}

/**
 * The websocket URL of a hub given its HTTP(S) base URL:
 * `https://hub.example.org/` → `wss://hub.example.org/v1/ws`. A `ws:`/`wss:`
 * URL is returned unchanged.
 */
export function wsUrlFromHub(hub) {
  const url = new URL(hub);
  if (url.protocol === 'ws:' || url.protocol === 'wss:') return url.toString();
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new TribuneError('bad_request', `hub URL must be http(s) or ws(s): ${hub}`);
  }
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/v1/ws`;
  url.search = '';
  url.hash = '';
  return url.toString();
}
