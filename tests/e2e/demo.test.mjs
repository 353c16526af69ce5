// The demo page as a visitor sees it: loads without errors, reports the runtime, and fetches a
// model file through the cache.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO, launchBrowser, serveSite, watchErrors } from '../lib/browser.mjs';

test('the demo page loads with no console errors and runs the download path', { timeout: 120_000 }, async () => {
  const server = await serveSite();
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    await page.setViewportSize({ width: 1200, height: 800 });
    const errors = watchErrors(page);
    await page.goto(`${server.url}/`);
    await page.waitForSelector('#engine-status.ok', { timeout: 30_000 });
    await page.waitForSelector('#webgpu-status.ok');
    assert.match(await page.textContent('#sw-status'), /controlling this page/);
    assert.match(await page.textContent('#engine-status'), /WASM SIMD on/);

    const row = page.locator('#model-files tr', { hasText: 'tokenizer.json' });
    await row.locator('button').click();
    await row.locator('td.source', { hasText: 'network' }).waitFor({ timeout: 30_000 });
    assert.equal(await row.locator('td.hash').getAttribute('title'), 'be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037');

    await mkdir(join(REPO, 'test-results'), { recursive: true });
    await page.screenshot({ path: join(REPO, 'test-results', 'demo.png'), fullPage: true });
    assert.deepEqual(errors, [], 'the demo must load without console errors or failed requests');
  } finally {
    await browser.close();
    await server.close();
  }
});
