// The TypeScript declarations: they compile under --strict against a usage
// file, and they declare every value the module exports.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import * as sdk from '../src/tribune.js';
import { repoRoot } from './support/util.js';

const here = path.join(repoRoot, 'client-sdk/js');

test('tribune.d.ts declares every export of tribune.js', () => {
  const dts = readFileSync(path.join(here, 'src/tribune.d.ts'), 'utf8');
  const declared = new Set([...dts.matchAll(/^export (?:const|function|class) (\w+)/gm)].map((m) => m[1]));
  const missing = Object.keys(sdk).filter((name) => !declared.has(name));
  assert.deepEqual(missing, []);
  const stale = [...declared].filter((name) => !(name in sdk));
  assert.deepEqual(stale, []);
});

test('tribune.d.ts compiles with tsc --strict against a usage file', async () => {
  const tsc = path.join(repoRoot, 'client-sdk/node_modules/typescript/bin/tsc');
  const args = [
    tsc,
    '--noEmit',
    '--strict',
    '--target',
    'es2022',
    '--module',
    'nodenext',
    '--moduleResolution',
    'nodenext',
    '--lib',
    'es2022,dom',
    path.join(here, 'test/types/usage.ts'),
  ];
  try {
    await promisify(execFile)(process.execPath, args, { cwd: here });
  } catch (err) {
    assert.fail(`tsc failed:\n${err.stdout}${err.stderr}`);
  }
});
