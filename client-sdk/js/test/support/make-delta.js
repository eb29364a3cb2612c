// Fossil deltas for the JS tests, made by the reference JavaScript encoder
// (the `fossil-delta` npm package, a dev dependency): it also shows that the
// SDK's vendored apply (src/fossil-delta.js) reads what that package writes.
// Strings in, a string out: the test payloads cut no character in two, so
// the delta's bytes are UTF-8 (the hub makes sure of that for every delta,
// protocol/src/delta.rs).

import { createDelta } from 'fossil-delta';

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

export function makeDelta(base, target) {
  return dec.decode(new Uint8Array(createDelta(enc.encode(base), enc.encode(target))));
}
