// Progressive loading and the engine's memory ledger, in headless Chromium through the public
// API only. The site is served throttled (a slow network), so SmolLM2's shards arrive seconds
// apart (the pack in 8 MB shards, 13 of them, so the last one holds a few layers, as a large
// model's would; with the default 32 MB shards the last third of the layers arrives at once): the model must be usable (minimum viable) before the last shard has been sent,
// a generation started then must run its prompt through the first layers while the last shard
// is still on the wire (engine timestamps against the server's log, both wall clock on this
// machine), and its first token must follow the last byte sooner than a whole prefill of the
// same prompt takes on a fully loaded model. Then: getMemoryUsage against the pack's bytes,
// unloadComponent, getPerformanceMetrics, and a backend that cannot run.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DIST, openHarness } from '../lib/browser.mjs';

const MODEL = 'smollm2-135m-8mb';
// ~12 MB/s: the 98 MB model takes ~8 s to arrive.
const BYTES_PER_SECOND = 12_000_000;
// One prefill chunk (at most 128 tokens) long, so a whole prefill takes long enough to measure.
const PROMPT = [
  'The old lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a lamp,',
  'a notebook and a flask of tea. From the gallery he watched the fishing boats come home,',
  'counted the gulls on the breakwater and wrote down the colour of the sky. The villagers said',
  'he had not missed a single evening in forty years, not even during the great storm, when the',
  'waves broke over the rocks and the wind tore the shutters from the houses along the harbour.',
  'One night, as the last boat rounded the point, he noticed a light far out at sea where no',
].join(' ');

let harness;
let server;
let page;
let errors;
let manifest;

before(async () => {
  manifest = JSON.parse(await readFile(join(DIST, 'models', MODEL, 'manifest.json'), 'utf8'));
  harness = await openHarness({ bytesPerSecond: BYTES_PER_SECOND });
  ({ server, page, errors } = harness);
});

after(async () => {
  await harness?.close();
});

test('a progressive load computes the first layers before the last shard is sent', { timeout: 300_000 }, async () => {
  assert.ok(manifest.shards.length >= 10, `${manifest.shards.length} shards`);
  const out = await page.evaluate(async ({ prompt, name }) => {
    const acc = new window.accel.IPFSAccelerate();
    const events = [];
    const startedAt = Date.now();
    const model = await acc.loadModel(name, {
      progressive: true,
      onProgress: (progress, component) => events.push({ progress, component, at: Date.now() }),
    });
    const resolvedAt = Date.now();
    const resident = await model.waitForMinimumViableModel();
    const viableAt = Date.now();
    const early = await model.generate(prompt, { maxTokens: 4 });
    const info = await model.loaded;
    // The same prompt on the fully loaded model: the whole prefill's time.
    const full = await model.generate(prompt, { maxTokens: 4 });
    const metrics = await model.getPerformanceMetrics();
    window.model = model;
    return { startedAt, resolvedAt, resident, viableAt, early, full, info, events, metrics, minimumViable: model.info.minimumViable };
  }, { prompt: PROMPT, name: MODEL });

  // Which request carried the last shard, and when its last byte went out.
  const lastHash = manifest.shards.at(-1).sha256;
  const lastShard = server.requests.filter((r) => r.path.endsWith(`/shards/${lastHash}.bin`) && r.status < 300).at(-1);
  assert.ok(lastShard?.end, 'the server logged the last shard');
  const lastByteAt = lastShard.end;
  const timings = out.early.timings.progressive;
  const layersBefore = timings.layerDoneAtMs.filter((t) => t < lastByteAt).length;
  const lastByteToFirstToken = timings.firstTokenAtMs - lastByteAt;
  console.log(`progressive: loadModel resolved after ${out.resolvedAt - out.startedAt} ms, minimum viable after ${out.viableAt - out.startedAt} ms, ` +
    `last shard's last byte at +${lastByteAt - out.startedAt} ms; ${layersBefore}/${timings.layerDoneAtMs.length} layers done before it; ` +
    `first token ${lastByteToFirstToken.toFixed(0)} ms after it; a full prefill of the same ${out.full.promptTokenIds.length} tokens takes ` +
    `${out.full.timings.timeToFirstTokenMs.toFixed(0)} ms; waited ${timings.waitedMs.toFixed(0)} ms for layers`);

  assert.deepEqual(out.minimumViable, ['tokenizer', 'embeddings', 'layer.0']);
  assert.ok(out.resident.includes('layer.0'));
  assert.ok(out.full.promptTokenIds.length > 64 && out.full.promptTokenIds.length <= 128, `${out.full.promptTokenIds.length} prompt tokens`);
  assert.deepEqual(out.early.tokenIds, out.full.tokenIds, 'a progressive generation gives the tokens of a loaded model');
  assert.equal(out.full.timings.progressive, undefined, 'the second generation ran on the loaded model');
  assert.ok(out.viableAt < lastByteAt, `minimum viable (${out.viableAt}) before the last byte was sent (${lastByteAt})`);
  assert.ok(layersBefore >= 1 && timings.layerDoneAtMs[0] < lastByteAt, `layer 0 done at ${timings.layerDoneAtMs[0]}, last byte at ${lastByteAt}`);
  assert.ok(lastByteToFirstToken < out.full.timings.timeToFirstTokenMs,
    `first token ${lastByteToFirstToken} ms after the last byte; a full prefill takes ${out.full.timings.timeToFirstTokenMs} ms`);
  // Progress: one event per component, monotonic, ending at 1.
  assert.deepEqual(out.events.map((e) => e.component), manifest.components.map((c) => c.name));
  assert.ok(out.events.every((e, i) => i === 0 || e.progress >= out.events[i - 1].progress));
  assert.equal(out.events.at(-1).progress, 1);
  assert.equal(out.info.shards.length, manifest.shards.length);
  assert.ok(out.metrics.loadMs > 0 && out.metrics.minimumViableMs > 0 && out.metrics.minimumViableMs < out.metrics.loadMs, JSON.stringify(out.metrics));
  assert.equal(out.metrics.generations, 2);
  assert.equal(out.metrics.timeToFirstTokenMs, out.full.timings.timeToFirstTokenMs);
  assert.deepEqual(errors, []);
});

test('getMemoryUsage is the pack plus the KV cache; unloadComponent frees a component', { timeout: 300_000 }, async () => {
  const out = await page.evaluate(async () => {
    const model = window.model;
    const idle = await model.getMemoryUsage();
    // While a stream is paused its KV cache is allocated and counted.
    const stream = model.generateStream('Once upon a time', { maxTokens: 64 });
    const iterator = stream[Symbol.asyncIterator]();
    await iterator.next();
    await stream.pause();
    const generating = await model.getMemoryUsage();
    await stream.cancel('measured');
    const before = await model.getMemoryUsage();
    const unloaded = await model.unloadComponent('layer.29');
    const after = await model.getMemoryUsage();
    const components = await model.getLoadedComponents();
    const generateAfter = await model.generate('Once upon a time', { maxTokens: 1 }).then(() => null, (e) => ({ name: e.name, message: e.message }));
    const unknown = await model.unloadComponent('layer.99').then(() => null, (e) => e.name);
    return { idle, generating, before, unloaded, after, components, generateAfter, unknown };
  });
  const packed = manifest.total_bytes;
  const { generating, before, after } = out;
  console.log(`memory: weights ${before.weightsBytes} B for a ${packed} B pack (tokenizer ${before.components[0].bytes} B in memory for ` +
    `${before.components[0].packedBytes} B packed), KV cache while streaming ${generating.kvCacheBytes} B, engine heap ${before.engineHeapBytes} B, ` +
    `reduction vs f16 ${(before.reduction * 100).toFixed(1)} %`);
  assert.equal(out.idle.kvCacheBytes, 0);
  assert.ok(generating.kvCacheBytes > 0, 'a running generation holds a KV cache');
  const expected = packed + generating.kvCacheBytes;
  assert.ok(Math.abs(generating.totalBytes - expected) / expected < 0.1, `total ${generating.totalBytes} vs pack + KV cache ${expected}`);
  assert.equal(generating.totalBytes, generating.weightsBytes + generating.kvCacheBytes);
  assert.ok(before.engineHeapBytes >= before.weightsBytes, 'the allocator counts at least the ledger');
  const layer = before.components.find((c) => c.name === 'layer.29');
  assert.ok(Math.abs(layer.bytes - layer.packedBytes) / layer.packedBytes < 0.01, JSON.stringify(layer));
  assert.equal(out.unloaded.freedBytes, layer.bytes);
  assert.equal(after.weightsBytes, before.weightsBytes - layer.bytes, 'memory usage drops by the component');
  assert.ok(after.engineHeapBytes <= before.engineHeapBytes - layer.bytes, `the heap drops too: ${before.engineHeapBytes} → ${after.engineHeapBytes}`);
  assert.ok(!out.components.includes('layer.29') && out.components.includes('layer.28'));
  assert.equal(out.generateAfter?.name, 'ComponentNotLoadedError', JSON.stringify(out.generateAfter));
  assert.equal(out.unknown, 'InvalidParameterError');
  assert.deepEqual(errors, []);
});

test('a backend that cannot run, or a model past maxMemoryUsageMB, is a named error and the worker goes on', { timeout: 300_000 }, async () => {
  const out = await page.evaluate(async () => {
    const acc = new window.accel.IPFSAccelerate();
    const webgpu = await acc.loadModel('minilm-l6', { backend: 'webgpu' }).then(() => null, (e) => ({ name: e.name, message: e.message }));
    const unknown = await acc.loadModel('minilm-l6', { backend: 'cuda' }).then(() => null, (e) => e.name);
    const noGpu = await new window.accel.IPFSAccelerate({ enableWebGPU: false }).loadModel('minilm-l6', { backend: 'webgpu' }).then(() => null, (e) => e.name);
    const tooBig = await new window.accel.IPFSAccelerate({ maxMemoryUsageMB: 50 }).loadModel('minilm-l6').then(() => null, (e) => ({ name: e.name, message: e.message }));
    const model = await acc.loadModel('minilm-l6', { backend: 'wasm' });
    const { dim } = await model.embed('still working');
    return { webgpu, unknown, noGpu, tooBig, dim };
  });
  assert.equal(out.webgpu?.name, 'BackendUnavailableError', JSON.stringify(out.webgpu));
  assert.match(out.webgpu.message, /webgpu/i);
  assert.equal(out.unknown, 'InvalidParameterError');
  assert.equal(out.noGpu, 'BackendUnavailableError');
  assert.equal(out.dim, 384);
  // Each IPFSAccelerate has its own engine worker: a fresh one holds nothing, so the limit is
  // about minilm-l6 alone (86.5 MB of f32 weights).
  assert.equal(out.tooBig?.name, 'MemoryLimitError', JSON.stringify(out.tooBig));
  assert.match(out.tooBig.message, /maxMemoryUsageMB/);
  assert.deepEqual(errors, []);
});
