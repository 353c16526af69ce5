// The demo page as a visitor uses it: load SmolLM2 with per-shard progress, chat, see the
// metrics, memory and cache panels fill in; then with the server gone, reload and do it again
// from the cache, and load it once more on the WebGPU backend through the backend switch.
// Screenshots go to test-results/ (look at them).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO, launchBrowser, serveSite, watchErrors } from '../lib/browser.mjs';

async function loadAndChat(page, prompt) {
  await page.selectOption('#model-select', 'smollm2-135m');
  await page.click('#load-button');
  await page.waitForSelector('#load-status.ok', { timeout: 90_000 });
  await page.fill('#chat-prompt', prompt);
  await page.click('#send-button');
  // Done when the reply stops streaming and the final metrics (with decode speed) are shown.
  await page.waitForFunction(() => !document.querySelector('.msg.assistant.streaming') && /decode [\d.]+ tok\/s/.test(document.querySelector('#metrics').textContent), null, { timeout: 90_000 });
  return (await page.locator('.msg.assistant').last().textContent()).trim();
}

test('the demo loads SmolLM2, chats, and works again with the server stopped', { timeout: 300_000 }, async () => {
  const server = await serveSite();
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    await page.setViewportSize({ width: 1280, height: 900 });
    const errors = watchErrors(page);
    await page.goto(`${server.url}/`);
    await page.waitForSelector('#pill-engine.ok', { timeout: 30_000 });
    assert.match(await page.textContent('#caps'), /WASM SIMD on/);
    const manifestLink = await page.getAttribute('link[rel=manifest]', 'href');
    const webManifest = await page.evaluate(async (href) => (await fetch(href)).json(), manifestLink);
    assert.ok(webManifest.icons.some((i) => i.sizes === '512x512'), 'installable: a 512 px icon');
    const icon = await page.evaluate(async () => {
      const r = await fetch('demo/icon-512.png');
      return { status: r.status, type: r.headers.get('content-type') };
    });
    assert.deepEqual(icon, { status: 200, type: 'image/png' });

    const reply = await loadAndChat(page, 'What is the capital of France?');
    assert.match(reply, /Paris/, `a sensible reply: ${reply}`);
    assert.match(await page.textContent('#load-status'), /smollm2-135m ready/);
    const progressRows = await page.locator('#progress .item').count();
    assert.equal(progressRows, 3, 'one progress row per shard');
    assert.equal(await page.locator('#progress .note', { hasText: 'downloaded' }).count(), 3);
    assert.match(await page.textContent('#memory-bars'), /total/);
    await page.waitForFunction(() => /offline-ready/.test(document.querySelector('#pill-network').textContent) && document.querySelectorAll('#cache-models tr').length > 0);
    assert.match(await page.textContent('#cache-models'), /smollm2-135m/);

    await mkdir(join(REPO, 'test-results'), { recursive: true });
    await page.screenshot({ path: join(REPO, 'test-results', 'demo.png'), fullPage: true });
    assert.deepEqual(errors, [], 'no console errors or failed requests');

    // Offline: the page, the engine and the model all come from the service worker's storage.
    await server.close();
    await page.reload();
    await page.waitForSelector('#pill-engine.ok', { timeout: 30_000 });
    const again = await loadAndChat(page, 'What is the capital of France?');
    assert.equal(again, reply, 'the same reply offline');
    assert.equal(await page.locator('#progress .note', { hasText: 'from cache' }).count(), 3);
    assert.match(await page.textContent('#load-status'), /all from this browser's cache/);
    await page.screenshot({ path: join(REPO, 'test-results', 'demo-offline.png'), fullPage: true });

    // The backend switch: WebGPU is offered (software adapter here, and the option says so),
    // the model goes onto the GPU and the memory panel shows its GPU buffers.
    assert.match(await page.textContent('#backend-select [value=webgpu]'), /software adapter/);
    await page.selectOption('#backend-select', 'webgpu');
    await page.click('#load-button');
    await page.waitForSelector('#load-status.ok', { timeout: 120_000 });
    assert.match(await page.textContent('#load-status'), /on WebGPU, \d+ pipelines compiled/);
    await page.waitForFunction(() => /GPU buffers/.test(document.querySelector('#memory-bars').textContent));
    await page.screenshot({ path: join(REPO, 'test-results', 'demo-webgpu.png'), fullPage: true });
    assert.deepEqual(errors, [], 'no console errors or failed requests');
  } finally {
    await browser.close();
    await server.close();
  }
});
