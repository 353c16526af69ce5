// The host library's TypeScript declarations (host-js/ipfs-accelerate.d.ts) against a usage
// example (tests/types/usage.ts): `tsc --noEmit` must accept the example — including its
// `@ts-expect-error` lines, which fail the check if the declarations stop rejecting misuse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO } from '../lib/browser.mjs';

test('the .d.ts type-checks the usage example (tsc --noEmit, strict)', { timeout: 120_000 }, () => {
  const tsc = join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');
  const run = spawnSync(process.execPath, [tsc, '--noEmit', '-p', join(REPO, 'tests', 'types')], { encoding: 'utf8' });
  assert.equal(run.error, undefined, `cannot run tsc (npm ci installs it): ${run.error}`);
  assert.equal(run.status, 0, `tsc reported:\n${run.stdout}${run.stderr}`);
});
