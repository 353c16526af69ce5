// Packed models in headless Chromium: the page asks the host library for a model by name, the
// engine worker (Rust wasm) downloads manifest + shards through the service worker, verifies
// them, and generates / embeds on its CPU path. The tokens and vectors must be those of the
// native CLI (`accel generate|embed --json`) run on the very files the site serves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DIST, REPO, launchBrowser, serveSite, watchErrors } from '../lib/browser.mjs';

const ACCEL = join(process.env.CARGO_TARGET_DIR ?? join(REPO, 'target'), 'release', 'accel');
const fixture = async (name) => JSON.parse(await readFile(join(REPO, 'tests', 'fixtures', name), 'utf8'));

/** The native CLI on the model directory the site serves (dist/models/<name>), as JSON. */
function nativeAccel(command, model, args) {
  const stdout = execFileSync(ACCEL, [command, '--model', join(DIST, 'models', model), '--json', ...args], { encoding: 'utf8' });
  return JSON.parse(stdout);
}

function nativeGenerate(prompt, { maxTokens, chat = false }) {
  const out = nativeAccel('generate', 'smollm2-135m', ['--prompt', prompt, '--temperature', '0', '--max-tokens', String(maxTokens), ...(chat ? ['--chat'] : [])]);
  return { promptTokenIds: out.prompt_token_ids, tokenIds: out.token_ids, text: out.text };
}

function cosine(a, b) {
  let [dot, na, nb] = [0, 0, 0];
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
}

/** A fresh browser on the harness page; `body(page)` runs with the server and browser up. */
async function withHarness(body) {
  const server = await serveSite();
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    await page.goto(`${server.url}/test/harness.html`);
    await page.waitForFunction(() => window.harnessReady === true);
    return await body(page, server, errors);
  } finally {
    await browser.close();
    await server.close();
  }
}

test('smollm2-135m loads by name and generates the native CLI tokens', { timeout: 300_000 }, async () => {
  const onceUpon = await fixture('smollm2_once_upon.json');
  // Greedy margins: step 12 of the reference is a near-tie (see the fixture's note), so 12.
  const MAX_TOKENS = 12;
  const ownPrompt = 'What is the capital of France?';
  // A second prompt of our own: plain text, Unicode and digits through the byte-level BPE.
  const plainPrompt = 'Recipe for 4 people: 200 g of flour, 3 eggs, a pinch of salt — and then';
  const native = {
    onceUpon: nativeGenerate(onceUpon.prompt, { maxTokens: MAX_TOKENS }),
    chat: nativeGenerate(ownPrompt, { maxTokens: MAX_TOKENS, chat: true }),
    plain: nativeGenerate(plainPrompt, { maxTokens: MAX_TOKENS }),
  };
  assert.deepEqual(native.onceUpon.tokenIds, onceUpon.greedy_ids.slice(0, MAX_TOKENS), 'the native CLI must itself match the reference fixture');

  await withHarness(async (page, server, errors) => {
    const browser = await page.evaluate(async ({ prompt, ownPrompt, plainPrompt, maxTokens }) => {
      const acc = new window.accel.IPFSAccelerate();
      const model = await acc.loadModel('smollm2-135m');
      const onceUpon = await model.generate(prompt, { temperature: 0, maxTokens });
      const chat = await model.generate(ownPrompt, { maxTokens, chat: true });
      const plain = await model.generate(plainPrompt, { temperature: 0, maxTokens });
      const wrongKind = await model.embed('a sentence').then(() => null, (e) => e.name);
      await model.unload();
      const afterUnload = await model.generate(prompt, { maxTokens: 1 }).then(() => null, (e) => e.name);
      // Loaded again, every shard comes from IndexedDB through the service worker.
      const again = await acc.loadModel('smollm2-135m');
      const againFirst = await again.generate(prompt, { maxTokens: 1 });
      return { info: model.info, onceUpon, chat, plain, wrongKind, afterUnload, againInfo: again.info, againFirst };
    }, { prompt: onceUpon.prompt, ownPrompt, plainPrompt, maxTokens: MAX_TOKENS });

    const { info } = browser;
    assert.equal(info.name, 'smollm2-135m');
    assert.equal(info.architecture, 'llama');
    assert.equal(info.kind, 'text');
    assert.match(info.modelId, /^smollm2-135m#\d+$/);
    assert.ok(info.shards.length > 1, 'the default pack has several shards');
    assert.equal(info.shards.reduce((sum, s) => sum + s.bytes, 0), info.totalBytes);
    assert.ok(info.shards.every((s) => s.source === 'network' && s.stored === true), JSON.stringify(info.shards));
    assert.ok(info.loadMs > 0);

    assert.deepEqual(browser.onceUpon.promptTokenIds, onceUpon.prompt_ids);
    assert.deepEqual(browser.onceUpon.tokenIds, native.onceUpon.tokenIds, 'greedy tokens in the browser = the native CLI');
    assert.equal(browser.onceUpon.text, native.onceUpon.text);
    assert.ok(browser.onceUpon.timings.decodeTokensPerS > 0 && browser.onceUpon.timings.timeToFirstTokenMs > 0, JSON.stringify(browser.onceUpon.timings));
    assert.deepEqual(browser.chat.promptTokenIds, native.chat.promptTokenIds, 'the chat template renders alike');
    assert.deepEqual(browser.chat.tokenIds, native.chat.tokenIds);
    assert.equal(browser.chat.text, native.chat.text);
    assert.deepEqual(browser.plain.promptTokenIds, native.plain.promptTokenIds);
    assert.deepEqual(browser.plain.tokenIds, native.plain.tokenIds);
    assert.equal(browser.plain.text, native.plain.text);

    assert.equal(browser.wrongKind, 'InvalidParameterError');
    assert.equal(browser.afterUnload, 'ModelNotLoadedError');
    assert.notEqual(browser.againInfo.modelId, info.modelId);
    assert.deepEqual(browser.againInfo.shards.map((s) => s.source), info.shards.map(() => 'store'));
    assert.deepEqual(browser.againFirst.tokenIds, native.onceUpon.tokenIds.slice(0, 1));
    for (const shard of info.shards) {
      const served = server.requests.filter((r) => r.path === `/models/smollm2-135m/shards/${shard.sha256}.bin`);
      assert.equal(served.length, 1, `shard ${shard.sha256} was sent ${served.length} times`);
    }
    assert.deepEqual(errors, [], 'no console errors, page errors or failed requests');
  });
});

test('bad model URLs reject with named errors; the worker keeps answering and minilm-l6 embeds like the CLI', { timeout: 300_000 }, async () => {
  const three = await fixture('minilm_three_sentences.json');
  const native = nativeAccel('embed', 'minilm-l6', three.sentences);

  await withHarness(async (page, server, errors) => {
    const browser = await page.evaluate(async (sentences) => {
      const outcome = (promise) => promise.then(() => ({ name: null }), (e) => ({ name: e.name, message: e.message, isAccelerateError: e instanceof window.accel.AccelerateError }));
      // Without a service worker first (this page is not controlled yet): plain HTTP errors.
      const bare = new window.accel.IPFSAccelerate({ serviceWorker: false });
      const bareMissing = await outcome(bare.loadModel('no-such-model'));
      bare.terminate();

      const acc = new window.accel.IPFSAccelerate();
      const missing = await outcome(acc.loadModel('no-such-model'));
      const truncated = await outcome(acc.loadModel('/test/truncated-manifest.json'));
      const corruptShard = await outcome(acc.loadModel('/test/corrupt-shard/manifest.json'));
      const model = await acc.loadModel('minilm-l6');
      const badOption = await outcome(model.generate('x', { stopSequences: ['.'] }));
      const one = await model.embed(sentences[0]);
      const all = await model.embed(sentences);
      const wrongKind = await outcome(model.generate('hello'));
      return { bareMissing, missing, truncated, corruptShard, badOption, info: model.info, one, all, wrongKind };
    }, three.sentences);

    assert.equal(browser.bareMissing.name, 'FetchError', JSON.stringify(browser.bareMissing));
    assert.match(browser.bareMissing.message, /no-such-model\/manifest\.json: HTTP 404/);
    assert.equal(browser.missing.name, 'HttpStatusError', `the service worker's name comes through: ${JSON.stringify(browser.missing)}`);
    assert.match(browser.missing.message, /404/);
    assert.equal(browser.truncated.name, 'ManifestError', JSON.stringify(browser.truncated));
    assert.match(browser.truncated.message, /missing field/);
    assert.equal(browser.corruptShard.name, 'IntegrityError', JSON.stringify(browser.corruptShard));
    assert.match(browser.corruptShard.message, /49abd65b/);
    assert.equal(browser.badOption.name, 'InvalidParameterError');
    for (const failure of [browser.bareMissing, browser.missing, browser.truncated, browser.corruptShard]) {
      assert.ok(failure.isAccelerateError, JSON.stringify(failure));
    }

    assert.equal(browser.info.kind, 'embedding');
    assert.equal(browser.info.architecture, 'bert');
    assert.equal(browser.one.embeddings.length, 1);
    assert.equal(browser.all.dim, native.dim);
    assert.equal(browser.all.embeddings.length, three.sentences.length);
    browser.all.embeddings.forEach((vector, i) => {
      const c = cosine(vector, native.embeddings[i]);
      assert.ok(c >= 0.9999, `sentence ${i}: cosine to the native embedding ${c}`);
    });
    assert.ok(cosine(browser.one.embeddings[0], native.embeddings[0]) >= 0.9999, 'one text alone embeds as in the batch');
    // And they mean what the reference says (fixture cosines, to 2 decimals).
    assert.ok(Math.abs(cosine(browser.all.embeddings[0], browser.all.embeddings[1]) - three.cosine[0][1]) < 0.01);
    assert.equal(browser.wrongKind.name, 'InvalidParameterError');

    // The failed requests above are expected; nothing else may fail.
    const expected = (e) => /HTTP 404 .*\/models\/no-such-model\/manifest\.json$/.test(e);
    assert.deepEqual(errors.filter((e) => !expected(e)), [], 'no other console errors, page errors or failed requests');
  });
});

test('loadModel reports progress once per component, monotonic, ending at 1', { timeout: 120_000 }, async () => {
  const manifest = JSON.parse(await readFile(join(DIST, 'models', 'minilm-l6-q4', 'manifest.json'), 'utf8'));
  await withHarness(async (page) => {
    const seen = await page.evaluate(async () => {
      const acc = new window.accel.IPFSAccelerate();
      const progress = [];
      const loaded = [];
      const model = await acc.loadModel('minilm-l6-q4', {
        onProgress: (p, component, details) => progress.push({ p, component, details }),
        onComponentLoaded: (component, stats) => loaded.push({ component, stats }),
      });
      return { progress, loaded, totalBytes: model.info.totalBytes };
    });
    const names = manifest.components.map((c) => c.name);
    assert.deepEqual(seen.progress.map((e) => e.component), names, 'every component, once, in load order');
    assert.deepEqual(seen.loaded.map((e) => e.component), names);
    const values = seen.progress.map((e) => e.p);
    assert.deepEqual(values, [...values].sort((a, b) => a - b), 'monotonic');
    assert.equal(values.at(-1), 1);
    assert.ok(values[0] > 0);
    const last = seen.progress.at(-1).details;
    assert.equal(last.loadedBytes, seen.totalBytes);
    assert.equal(last.etaMs, 0);
    for (const { component, stats } of seen.loaded) {
      assert.equal(stats.bytes, manifest.components.find((c) => c.name === component).bytes);
      assert.equal(stats.source, 'network');
    }
  });
});
