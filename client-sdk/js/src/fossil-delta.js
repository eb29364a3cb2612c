// Applying a Fossil delta (PROTOCOL.md section 4, "Delta updates").
//
// Vendored, apply side only, from the `fossil-delta` npm package 2.0.0
// (https://github.com/dchest/fossil-delta-js), so that the SDK keeps no
// runtime dependency and the hub can serve it to browsers as plain ES
// modules under /sdk/ (a bare `import 'fossil-delta'` does not resolve
// there without a bundler). Changes: the output is written into one buffer
// of the announced size, numbers past 2^32 are refused, and the size is
// checked before the checksum. The tests apply the hub's deltas from
// protocol/vectors/deltas.json.
//
// Copyright 2014-2024 Dmitry Chestnykh (JavaScript port)
// Copyright 2007 D. Richard Hipp (original C version)
// All rights reserved.
//
// Redistribution and use in source and binary forms, with or without
// modification, are permitted provided that the following conditions are
// met:
//
//   1. Redistributions of source code must retain the above copyright
//      notice, this list of conditions and the following disclaimer.
//
//   2. Redistributions in binary form must reproduce the above copyright
//      notice, this list of conditions and the following disclaimer in the
//      documentation and/or other materials provided with the distribution.
//
// THIS SOFTWARE IS PROVIDED BY THE AUTHORS ``AS IS'' AND ANY EXPRESS OR
// IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES
// OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN
// NO EVENT SHALL THE AUTHORS OR CONTRIBUTORS BE LIABLE FOR ANY DIRECT,
// INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES
// (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
// SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
// CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT
// LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY
// OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF
// SUCH DAMAGE.

// Fossil's base-64 digit values by ASCII code; -1 for anything else.
const DIGIT = new Int8Array(128).fill(-1);
'0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~'
  .split('')
  .forEach((c, i) => {
    DIGIT[c.charCodeAt(0)] = i;
  });

/** Fossil's checksum: big-endian 32-bit words (zero-padded) summed mod 2^32. */
function checksum(bytes) {
  let sum = 0;
  const n = bytes.length;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    sum = (sum + ((bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3])) | 0;
  }
  let last = 0;
  for (let k = 0; i + k < n; k++) last |= bytes[i + k] << (24 - 8 * k);
  return (sum + last) >>> 0;
}

/**
 * Rebuilds the target from `source` and a Fossil `delta` (both Uint8Array).
 * Throws an Error for a malformed delta, a copy outside the source, an
 * output of another size than announced, or a checksum mismatch.
 */
export function applyDelta(source, delta) {
  let pos = 0;
  const int = () => {
    let v = 0;
    let digits = 0;
    while (pos < delta.length) {
      const b = delta[pos];
      const d = b < 128 ? DIGIT[b] : -1;
      if (d < 0) break;
      v = v * 64 + d;
      digits++;
      pos++;
    }
    if (digits === 0 || v > 0xffffffff) throw new Error('bad number in delta');
    return v;
  };
  const size = int();
  if (delta[pos++] !== 0x0a) throw new Error("size not terminated by '\\n'");
  const out = new Uint8Array(size);
  let total = 0;
  while (pos < delta.length) {
    const cnt = int();
    const op = delta[pos++];
    if (op === 0x40 /* @ */) {
      const ofst = int();
      if (delta[pos++] !== 0x2c /* , */) throw new Error("copy not terminated by ','");
      if (total + cnt > size) throw new Error('copy exceeds output size');
      if (ofst + cnt > source.length) throw new Error('copy extends past end of source');
      out.set(source.subarray(ofst, ofst + cnt), total);
      total += cnt;
    } else if (op === 0x3a /* : */) {
      if (total + cnt > size) throw new Error('insert exceeds output size');
      if (pos + cnt > delta.length) throw new Error('insert past end of delta');
      out.set(delta.subarray(pos, pos + cnt), total);
      total += cnt;
      pos += cnt;
    } else if (op === 0x3b /* ; */) {
      if (pos !== delta.length) throw new Error('bytes after the end of the delta');
      if (total !== size) throw new Error('output size does not match');
      if (cnt !== checksum(out)) throw new Error('bad checksum');
      return out;
    } else {
      throw new Error('unknown delta operator');
    }
  }
  throw new Error('unterminated delta');
}
