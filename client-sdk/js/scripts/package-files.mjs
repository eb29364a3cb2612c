// Lays out the npm package the way a hub serves the same files: the SDK in
// `sdk/` and the web components in `widget/`, side by side, because the
// widget imports the SDK as `../sdk/tribune.js` (client-sdk/widget/README.md,
// "How the files are served"). In the repository the two live apart
// (client-sdk/js/src and client-sdk/widget/src, embedded by the hub from
// there), so `npm pack` and `npm publish` copy them in first (`prepack`) and
// remove the copies after (`postpack`); both folders are git-ignored.
//
//   node scripts/package-files.mjs stage   # copy src → sdk/, ../widget/src → widget/
//   node scripts/package-files.mjs clean   # remove sdk/ and widget/

import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Package folder ← repository folder. */
export const LAYOUT = {
  sdk: path.join(pkg, 'src'),
  widget: path.join(pkg, '../widget/src'),
};

// Code and its declarations; nothing else of those folders is published.
const SHIPPED = /\.(js|d\.ts)$/;

export function clean() {
  for (const dir of Object.keys(LAYOUT)) rmSync(path.join(pkg, dir), { recursive: true, force: true });
}

export function stage() {
  clean();
  for (const [dir, from] of Object.entries(LAYOUT)) {
    const files = readdirSync(from, { withFileTypes: true }).filter((f) => f.isFile() && SHIPPED.test(f.name));
    if (files.length === 0) throw new Error(`${from} has no files to package`);
    mkdirSync(path.join(pkg, dir));
    for (const f of files) copyFileSync(path.join(from, f.name), path.join(pkg, dir, f.name));
  }
}

const command = process.argv[2];
if (command === 'stage') stage();
else if (command === 'clean') clean();
else {
  console.error('usage: node scripts/package-files.mjs stage|clean');
  process.exit(2);
}
