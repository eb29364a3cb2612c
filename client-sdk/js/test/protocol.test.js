// The JS SDK against the golden frames of protocol/vectors/*.json and the
// pure rules of PROTOCOL.md: topics, frames, close codes, backoff.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  decodeServerFrame,
  encodeClientFrame,
  validateTopic,
  isValidTopic,
  reconnectPolicy,
  backoffDelay,
  wsUrlFromHub,
  TribuneError,
} from '../src/tribune.js';
import { parseLossless, repoRoot } from './support/util.js';
import { applyTextDelta, rawMessageData } from '../src/delta.js';
import { applyDelta } from '../src/fossil-delta.js';

const vectors = (name) => readFileSync(path.join(repoRoot, 'protocol/vectors', name), 'utf8');

test('server.json: every hub frame decodes and keeps its exact value', () => {
  const { frames } = JSON.parse(vectors('server.json'));
  assert.ok(frames.length >= 12);
  for (const { name, text } of frames) {
    const frame = decodeServerFrame(text);
    const expected = JSON.parse(text);
    if (expected.type === 'message' && expected.replay === undefined) expected.replay = false;
    if (expected.type === 'message' && expected.delta === undefined) expected.delta = false;
    assert.deepEqual(frame, expected, name);
    // Encoding the decoded value again gives the same bytes (replay: false
    // is the decoder's default and is not on the wire).
    const { ...copy } = frame;
    if (copy.type === 'message' && copy.replay === false) delete copy.replay;
    if (copy.type === 'message' && copy.delta === false) delete copy.delta;
    assert.equal(JSON.stringify(copy), text, name);
  }
});

test('client.json: the SDK encoder produces exactly the golden client frames', () => {
  const { frames } = parseLossless(vectors('client.json'));
  assert.ok(frames.length >= 8);
  for (const { name, frame } of frames) {
    const text = encodeClientFrame(frame);
    assert.deepEqual(parseLossless(text), frame, name);
    // Key order follows section 3: type first, then id, then topic.
    assert.ok(text.startsWith(`{"type":"${frame.type}","id":${frame.id}`), `${name}: ${text}`);
  }
});

test('invalid_client.json: the SDK refuses to encode what the hub would refuse', () => {
  const { frames } = JSON.parse(vectors('invalid_client.json'));
  let checked = 0;
  for (const { name, text } of frames) {
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      continue; // not JSON at all: the encoder never produces text from text
    }
    assert.throws(() => encodeClientFrame(value), TribuneError, name);
    checked++;
  }
  assert.ok(checked >= 14, `checked ${checked}`);
});

test('topics.json: the SDK validator agrees with the protocol crate', () => {
  const { valid, invalid } = JSON.parse(vectors('topics.json'));
  for (const t of valid) assert.equal(validateTopic(t), null, t);
  for (const t of invalid) {
    assert.equal(isValidTopic(t), false, JSON.stringify(t));
    assert.equal(typeof validateTopic(t), 'string');
  }
});

test('bad hub frames are refused with bad_frame', () => {
  const bad = [
    '{"type":',
    '[1,2]',
    '"welcome"',
    'null',
    '{"type":"shout"}',
    '{"type":"constructor"}',
    '{"type":"__proto__"}',
    '{"type":"welcome","protocol":1,"node":"n","conn":"c"}',
    '{"type":"welcome","protocol":"1","node":"n","conn":"c","heartbeat_ms":1}',
    '{"type":"ack","id":-1}',
    '{"type":"ack","id":1.5}',
    '{"type":"ack","id":1,"mode":"stream"}',
    '{"type":"ack","id":1,"recovered":"yes"}',
    '{"type":"message","topic":"results.a","seq":5,"prev":1,"ts":1}',
    '{"type":"message","topic":"results.a","seq":5,"prev":5,"ts":1,"data":1}',
    '{"type":"message","topic":"results.a","seq":0,"prev":0,"ts":1,"data":1}',
    '{"type":"message","topic":"results.*","seq":5,"prev":1,"ts":1,"data":1}',
    '{"type":"message","topic":"results.a","seq":18446744073709551615,"prev":1,"ts":1,"data":1}',
    '{"type":"message","topic":"results.a","seq":"5","prev":1,"ts":1,"data":1}',
    '{"type":"message","topic":"results.a","seq":5,"prev":1,"ts":1,"data":1,"replay":1}',
    '{"type":"error","id":"7","code":"forbidden","message":"x"}',
    '{"type":"error","id":7,"code":"","message":"x"}',
    '{"type":"pong"}',
    '{"type":"drain","retry_ms":-5}',
    '{"type":"stats","topic":"results.a","audience":1,"reactions":{"x":-1},"window_ms":1000}',
    '{"type":"stats","topic":"results.a","audience":1,"reactions":[],"window_ms":1000}',
    '{"type":"gap","topic":"clips.a","after":5}',
    '{"type":"gap","topic":"clips.a","after":"5","before":9}',
    '{"type":"gap","topic":"clips.a","after":9,"before":9}',
    '{"type":"gap","topic":"clips.a","after":10,"before":9}',
    '{"type":"gap","topic":"clips.*","after":5,"before":9}',
  ];
  for (const text of bad) {
    assert.throws(
      () => decodeServerFrame(text),
      (err) => err instanceof TribuneError && err.code === 'bad_frame',
      text,
    );
  }
  assert.throws(() => decodeServerFrame(new ArrayBuffer(2)), { code: 'bad_frame' });
});

test('hub frames: unknown fields are ignored, null optionals dropped', () => {
  const f = decodeServerFrame('{"type":"ack","id":3,"topic":null,"future":true}');
  assert.deepEqual(f, { type: 'ack', id: 3, future: true });
  const e = decodeServerFrame('{"type":"error","code":"bad_request","message":"m"}');
  assert.equal(e.id, null);
});

test('client frames: since and epoch go together; sizes and types checked', () => {
  assert.throws(() => encodeClientFrame({ type: 'subscribe', id: 1, topic: 'clips.a', since: 3 }), { code: 'bad_request' });
  assert.throws(() => encodeClientFrame({ type: 'subscribe', id: 1, topic: 'clips.*' }), { code: 'bad_topic' });
  assert.throws(() => encodeClientFrame({ type: 'react', id: 1, topic: 'results.a', reaction: '' }), { code: 'bad_request' });
  assert.throws(() => encodeClientFrame({ type: 'ping', id: 2n ** 64n }), { code: 'bad_request' });
  assert.equal(encodeClientFrame({ type: 'ping', id: 2n ** 64n - 1n }), '{"type":"ping","id":18446744073709551615}');
  assert.equal(
    encodeClientFrame({ type: 'subscribe', id: 2, topic: 'clips.a', epoch: 'E', since: 0, history: 3 }),
    '{"type":"subscribe","id":2,"topic":"clips.a","history":3,"since":0,"epoch":"E"}',
  );
});

test('close codes decide the reconnect (section 6)', () => {
  assert.equal(reconnectPolicy(1000), 'never');
  assert.equal(reconnectPolicy(1008), 'never');
  assert.equal(reconnectPolicy(4008), 'immediately');
  for (const code of [1001, 1003, 1006, 1009, 1011, 4029]) assert.equal(reconnectPolicy(code), 'backoff', String(code));
});

test('backoff is full jitter, exponential, capped', () => {
  const opts = { initialMs: 100, maxMs: 1000 };
  assert.equal(backoffDelay(0, opts, () => 0), 0);
  assert.equal(backoffDelay(0, opts, () => 0.999), 99);
  assert.equal(backoffDelay(3, opts, () => 0.5), 400);
  assert.equal(backoffDelay(10, opts, () => 0.5), 500);
  assert.equal(backoffDelay(1000, opts, () => 0.999), 999);
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(i % 8, opts);
    assert.ok(d >= 0 && d < Math.min(1000, 100 * 2 ** (i % 8)));
  }
});

test('hub URLs map to websocket URLs', () => {
  assert.equal(wsUrlFromHub('https://hub.example.org'), 'wss://hub.example.org/v1/ws');
  assert.equal(wsUrlFromHub('http://127.0.0.1:8080/'), 'ws://127.0.0.1:8080/v1/ws');
  assert.equal(wsUrlFromHub('https://example.org/tribune/'), 'wss://example.org/tribune/v1/ws');
  assert.equal(wsUrlFromHub('wss://x.org/v1/ws'), 'wss://x.org/v1/ws');
  assert.throws(() => wsUrlFromHub('ftp://x.org'), TribuneError);
});

test('deltas.json: the hub\'s Fossil deltas rebuild their targets byte for byte', () => {
  const { cases } = JSON.parse(vectors('deltas.json'));
  assert.ok(cases.length >= 5);
  for (const { name, base, target, delta } of cases) {
    assert.equal(applyTextDelta(base, delta), target, name);
  }
});

test('a delta refuses a wrong base, a truncated delta and a bad checksum', () => {
  const { cases } = JSON.parse(vectors('deltas.json'));
  const { base, delta } = cases[0];
  const enc = (s) => new TextEncoder().encode(s);
  assert.throws(() => applyTextDelta(base.replace('Joy', 'Jay'), delta), /checksum/);
  assert.throws(() => applyTextDelta(base.slice(0, 40), delta), /past end/);
  assert.throws(() => applyDelta(enc(base), enc(delta.slice(0, -1))), Error);
  for (const bad of ['', '\n', '1\n1:', '2\n1:x1;', '1\n9@0,1;', '1\n1:x0;junk']) {
    assert.throws(() => applyDelta(enc('abc'), enc(bad)), Error, JSON.stringify(bad));
  }
});

test('message frames: a delta carries a string; the raw data is read back exactly', () => {
  const delta = '{"type":"message","topic":"results.a.b","seq":5,"prev":4,"ts":1,"delta":true,"data":"x"}';
  assert.equal(decodeServerFrame(delta).delta, true);
  assert.throws(() => decodeServerFrame(delta.replace('"x"', '{"a":1}')), { code: 'bad_frame' });
  const full = '{"type":"message","topic":"results.a.b","seq":5,"prev":4,"ts":1,"data":{"a": "é,\\"data\\":1"} }';
  assert.equal(rawMessageData(full.replace(/ }$/, '}')), '{"a": "é,\\"data\\":1"}');
  assert.equal(rawMessageData('{"type":"gap","data":1}'), null);
});
