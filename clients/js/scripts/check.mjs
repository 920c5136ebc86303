#!/usr/bin/env node
// The checks that keep the committed files honest (scripts/test runs them):
// - src/events.ts is what scripts/gen-types.mjs makes of docs/asyncapi.json;
// - dist/ is exactly what `npm run build` makes of src/ (the api embeds dist/
//   at cargo build time, where there is no Node to build it).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
let failed = false;

// Until the types are generated (events.ts written by hand from docs/protocol.md) there is nothing to compare.
if (readFileSync(join(root, 'src/events.ts'), 'utf8').startsWith('// GENERATED')) {
  execFileSync(process.execPath, [join(root, 'scripts/gen-types.mjs'), '--check'], { stdio: 'inherit' });
} else {
  console.log('check: src/events.ts is written by hand (no docs/asyncapi.json to generate it from yet)');
}

const fresh = mkdtempSync(join(tmpdir(), 'courier-client-dist-'));
try {
  const tsc = join(root, 'node_modules/typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json'), '--outDir', fresh], { stdio: 'inherit' });
  const built = readdirSync(fresh).sort();
  const committed = readdirSync(join(root, 'dist')).sort();
  for (const name of new Set([...built, ...committed])) {
    const a = built.includes(name) ? readFileSync(join(fresh, name), 'utf8') : null;
    const b = committed.includes(name) ? readFileSync(join(root, 'dist', name), 'utf8') : null;
    if (a !== b) {
      failed = true;
      console.error(`check: dist/${name} ${b === null ? 'is missing' : a === null ? 'is not built from src/ any more' : 'differs from a fresh build'}`);
    }
  }
} finally {
  rmSync(fresh, { recursive: true, force: true });
}
if (failed) {
  console.error('check: run `npm run build --prefix clients/js` and commit dist/');
  process.exit(1);
}
console.log('check: dist/ is what src/ builds to');
