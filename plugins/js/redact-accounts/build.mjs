// Builds the component: `node build.mjs [OUT.wasm]` (default dist/redact_accounts.wasm).
// Run `npm ci` first. The gateway's builder (tests/plugin-artifacts) runs this same script.
import { componentize } from '@bytecodealliance/componentize-js';
import { execFileSync } from 'node:child_process';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { install as installStringLowering } from './string-lowering.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? resolve(here, 'dist/redact_accounts.wasm'));

// componentize-js reports a syntax error without its place; `node --check` names file and line.
for (const file of await readdir(resolve(here, 'src'))) {
  if (file.endsWith('.js')) {
    execFileSync(process.execPath, ['--check', resolve(here, 'src', file)], { stdio: 'inherit' });
  }
}

// Faster string returns in the generated bindings; see string-lowering.mjs (why, and how it
// refuses any componentize-js version it was not written for).
const stringLowering = installStringLowering();
const { component } = await componentize({
  sourcePath: resolve(here, 'src/index.js'),
  witPath: resolve(here, '../../../wit'),
  worldName: 'plugin',
  // No fetch, no incoming HTTP, no clocks, no randomness: the gateway grants none of them.
  // `stdio` stays so that an uncaught exception's message reaches stderr before the trap.
  disableFeatures: ['http', 'fetch-event', 'clocks', 'random'],
});
stringLowering.finish();
await mkdir(dirname(out), { recursive: true });
await writeFile(out, component);
console.log(`wrote ${out} (${component.length} bytes)`);
