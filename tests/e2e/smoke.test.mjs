// The plumbing, end to end in headless Chromium: page -> host module -> engine worker (Rust wasm)
// -> service worker (Rust wasm) -> IndexedDB, online and then with the server stopped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DIST, launchBrowser, serveSite, watchErrors } from '../lib/browser.mjs';

const FILE = '/models/minilm-l6/tokenizer.json';
// Pin from ../shared/fixtures/MODELS.md.
const PINNED_SHA256 = 'be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037';

async function openHarness(page, url) {
  await page.goto(`${url}/test/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
}

test('a model file travels worker -> service worker -> IndexedDB and survives the server going away', { timeout: 120_000 }, async () => {
  const onDisk = createHash('sha256').update(await readFile(join(DIST, FILE))).digest('hex');
  assert.equal(onDisk, PINNED_SHA256, 'the staged model file must be the pinned one');

  const server = await serveSite();
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    await openHarness(page, server.url);

    const online = await page.evaluate(async (file) => {
      const acc = new window.accel.IPFSAccelerate();
      await acc.ready();
      const first = await acc.fetchFile(file);
      const second = await acc.fetchFile(file);
      return { controlled: !!navigator.serviceWorker.controller, scope: acc.serviceWorker.scope, first, second };
    }, FILE);
    assert.equal(online.controlled, true, 'the service worker must control the page before the worker starts');
    assert.equal(online.scope, `${server.url}/`);
    assert.equal(online.first.sha256, PINNED_SHA256);
    assert.equal(online.first.source, 'network', 'first fetch comes from the network');
    assert.equal(online.second.source, 'store', 'second fetch comes from IndexedDB');
    assert.equal(online.second.sha256, PINNED_SHA256);
    assert.equal(online.second.bytes, online.first.bytes);
    const served = server.requests.filter((r) => r.path === FILE);
    assert.equal(served.length, 1, `the server sent ${FILE} ${served.length} times; the cache must make it once`);

    // Reload once online (the page itself now comes through the service worker and is stored),
    // then take the server away and reload again.
    await page.reload();
    await page.waitForFunction(() => window.harnessReady === true);
    assert.deepEqual(errors, [], 'no console errors, page errors or failed requests while online');
    await server.close();

    await page.reload();
    await page.waitForFunction(() => window.harnessReady === true);
    const offline = await page.evaluate(async (file) => {
      const acc = new window.accel.IPFSAccelerate();
      await acc.ready();
      const cached = await acc.fetchFile(file);
      const missing = await acc.fetchFile('/models/minilm-l6/config.json').then(
        () => null,
        (err) => ({ name: err.name, message: err.message }),
      );
      return { cached, missing };
    }, FILE);
    assert.equal(offline.cached.sha256, online.first.sha256, 'same bytes offline, by sha256');
    assert.equal(offline.cached.source, 'store');
    assert.ok(offline.missing, 'a file never cached cannot be fetched offline');
    assert.equal(offline.missing.name, 'FetchError');
    assert.match(offline.missing.message, /NetworkError/, 'the service worker names why');
  } finally {
    await browser.close();
    await server.close();
  }
});

async function adapterReport(webgpu) {
  const server = await serveSite();
  const browser = await launchBrowser({ webgpu });
  try {
    const page = await browser.context.newPage();
    await openHarness(page, server.url);
    return await page.evaluate(async () => {
      const acc = new window.accel.IPFSAccelerate();
      return (await acc.getCapabilities()).webgpu;
    });
  } finally {
    await browser.close();
    await server.close();
  }
}

test('the engine worker finds a WebGPU adapter with --enable-unsafe-webgpu', { timeout: 60_000 }, async () => {
  const webgpu = await adapterReport(true);
  assert.equal(webgpu.available, true, JSON.stringify(webgpu));
  assert.ok(webgpu.adapter.maxStorageBufferBindingSize >= 128 * 1024 * 1024, JSON.stringify(webgpu.adapter));
});

test('the engine worker reports no adapter without --enable-unsafe-webgpu', { timeout: 60_000 }, async () => {
  const webgpu = await adapterReport(false);
  assert.equal(webgpu.available, false, JSON.stringify(webgpu));
  assert.match(webgpu.reason, /navigator\.gpu/);
  assert.equal(webgpu.adapter, undefined);
});
