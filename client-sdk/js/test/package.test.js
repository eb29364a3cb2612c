// The npm package as a consumer gets it: `npm pack` of client-sdk/js (its
// prepack lays out sdk/ and widget/ as a hub serves them), the tarball
// installed into a fresh project, both entry points imported by name in Node
// and their declarations compiled with `tsc --strict` from there. Also what
// the tarball holds: every SDK and widget module with their types, nothing
// else of the repository, and no staged copies left behind.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { repoRoot } from './support/util.js';

const run = promisify(execFile);
const pkgDir = path.join(repoRoot, 'client-sdk/js');
const manifest = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

let tmp;
let packed; // npm pack --json's description of the tarball
let project; // a consumer project with the tarball installed

/** Runs a command, failing with its output. */
async function sh(cmd, args, cwd) {
  try {
    return await run(cmd, args, { cwd, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, npm_config_update_notifier: 'false' } });
  } catch (err) {
    throw new Error(`${cmd} ${args.join(' ')} failed in ${cwd}:\n${err.stdout}${err.stderr}`);
  }
}

before(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'tribune-npm-'));
  const { stdout } = await sh(npm, ['pack', '--json', '--pack-destination', tmp], pkgDir);
  [packed] = JSON.parse(stdout);
  project = path.join(tmp, 'consumer');
  await sh('mkdir', [project], tmp);
  writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  // A local tarball without dependencies: nothing is fetched.
  await sh(npm, ['install', '--no-audit', '--no-fund', '--offline', path.join(tmp, packed.filename)], project);
  for (const f of ['usage.ts', 'load.mjs']) copyFileSync(path.join(pkgDir, 'test/package', f), path.join(project, f));
});

after(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('package.json is publishable: name, version, license, exports with types, no private flag', () => {
  assert.equal(manifest.private, undefined);
  assert.match(manifest.name, /^@tribune\/client$/);
  assert.match(manifest.version, /^\d+\.\d+\.\d+/);
  assert.equal(manifest.license, 'Apache-2.0');
  for (const entry of ['.', './widget']) {
    assert.ok(manifest.exports[entry]?.types, `exports["${entry}"].types`);
    assert.ok(manifest.exports[entry]?.default, `exports["${entry}"].default`);
  }
});

test('the tarball holds the SDK and the widget with their types, and nothing else', () => {
  const files = packed.files.map((f) => f.path).sort();
  const shipped = (dir, prefix) =>
    readdirSync(path.join(repoRoot, dir))
      .filter((f) => /\.(js|d\.ts)$/.test(f))
      .map((f) => `${prefix}/${f}`);
  const expected = [
    'README.md',
    'package.json',
    ...shipped('client-sdk/js/src', 'sdk'),
    ...shipped('client-sdk/widget/src', 'widget'),
  ].sort();
  assert.deepEqual(files, expected);
  for (const f of ['sdk/tribune.d.ts', 'widget/tribune-widget.d.ts', 'widget/tribune-results.js', 'widget/tribune-clips.js']) {
    assert.ok(files.includes(f), f);
  }
  // postpack removed the staged copies from the working tree.
  assert.equal(existsSync(path.join(pkgDir, 'sdk')), false);
  assert.equal(existsSync(path.join(pkgDir, 'widget')), false);
});

test('installed from the tarball, both entry points import by name in Node', async () => {
  const { stdout } = await sh(process.execPath, ['load.mjs'], project);
  const got = JSON.parse(stdout);
  const installed = path.join(project, 'node_modules/@tribune/client');
  assert.equal(fileURLToPath(got.sdkUrl), path.join(installed, 'sdk/tribune.js'));
  assert.equal(fileURLToPath(got.widgetUrl), path.join(installed, 'widget/tribune-widget.js'));
  // The same API as the repository's SDK.
  const sdk = await import(path.join(pkgDir, 'src/tribune.js'));
  assert.deepEqual(got.sdk, Object.keys(sdk).sort());
  assert.deepEqual(got.widget, ['TribuneClips', 'TribuneResults', 'resolveWsUrl', 'safeUrl']);
  assert.deepEqual(got.elements, { 'tribune-results': true, 'tribune-clips': true });
});

test('installed from the tarball, the types of both entry points compile with tsc --strict', async () => {
  const tsc = path.join(repoRoot, 'client-sdk/node_modules/typescript/bin/tsc');
  await sh(
    process.execPath,
    [tsc, '--noEmit', '--strict', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--lib', 'es2022,dom', 'usage.ts'],
    project,
  );
});
