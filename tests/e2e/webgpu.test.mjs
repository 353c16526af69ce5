// The WebGPU backend in headless Chromium, through the public API only: the engine worker
// uploads the model to the page's WebGPU adapter (SwiftShader here: `--enable-unsafe-webgpu`,
// a software GPU) and generates on it. Its greedy tokens must be the WASM CPU backend's, run in
// the same worker on the same files:
//   - a 2-layer Llama cut from SmolLM2 (scripts/make-test-gguf.py), packed as stored
//     (Q4_1 projections, Q8_0 embedding/head) and requantized to q3 — 8 tokens each;
//   - SmolLM2-135M itself on the reference fixture's prompt — the first 3 tokens (software
//     WebGPU runs the 30 layers at under a token per second), which must also be
//     `accel generate`'s natively on the same pack, and the fixture's.
// Prints decode tokens/s of both backends (SwiftShader vs WASM SIMD on this machine).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DIST, REPO, harnessPerFile } from '../lib/browser.mjs';

const ACCEL = join(process.env.CARGO_TARGET_DIR ?? join(REPO, 'target'), 'release', 'accel');

const harness = harnessPerFile();

/** Loads `name` on both backends in one engine worker and generates greedily on each. */
async function bothBackends(name, prompt, maxTokens) {
  return harness.page.evaluate(async ({ name, prompt, maxTokens }) => {
    const acc = new window.accel.IPFSAccelerate();
    const run = async (backend) => {
      const model = await acc.loadModel(name, { backend });
      const out = await model.generate(prompt, { temperature: 0, maxTokens });
      const memory = await model.getMemoryUsage();
      await model.unload();
      return { info: model.info, out, memory };
    };
    const gpu = await run('webgpu');
    const wasm = await run('wasm');
    return { gpu, wasm };
  }, { name, prompt, maxTokens });
}

function report(label, { gpu, wasm }) {
  const g = gpu.info.gpu;
  console.log(`${label}: webgpu ${gpu.out.tokenIds.join(',')} | wasm ${wasm.out.tokenIds.join(',')}`);
  console.log(`  decode: webgpu ${gpu.out.timings.decodeTokensPerS.toFixed(2)} tok/s, wasm ${wasm.out.timings.decodeTokensPerS.toFixed(2)} tok/s; ` +
    `prefill: webgpu ${gpu.out.timings.prefillTokensPerS.toFixed(1)} tok/s, wasm ${wasm.out.timings.prefillTokensPerS.toFixed(1)} tok/s`);
  console.log(`  GPU upload ${g.loadMs.toFixed(0)} ms (pipelines ${g.pipelineMs.toFixed(0)} ms, ${g.pipelines} of them), ` +
    `${(g.bytes / 1e6).toFixed(1)} MB of GPU buffers for ${g.context} positions, on ${g.adapter}`);
}

function assertRanOnTheGpu({ gpu, wasm }) {
  assert.equal(gpu.info.backend, 'webgpu', JSON.stringify(gpu.info));
  assert.equal(wasm.info.backend, 'wasm', JSON.stringify(wasm.info));
  const g = gpu.info.gpu;
  assert.ok(g && g.pipelines > 0 && g.bytes > 0 && g.context > 0, JSON.stringify(g));
  // The ledger counts the GPU buffers (weights + KV cache + activations), the CPU run has none.
  assert.equal(gpu.memory.gpuBytes, g.bytes);
  assert.equal(wasm.memory.gpuBytes, 0);
  // The engine freed its own copies of the weights once they were on the GPU: only the
  // tokenizer stays in wasm memory, every component is still resident (on the GPU).
  const tokenizer = gpu.memory.components.find((c) => c.name === 'tokenizer');
  assert.equal(gpu.memory.weightsBytes, tokenizer.bytes, JSON.stringify(gpu.memory));
  assert.ok(gpu.memory.components.every((c) => c.resident), JSON.stringify(gpu.memory.components));
  // Weights counted wherever they are: the same reduction against f16 on both backends (the
  // GPU pads Q8_0 blocks by 2 bytes, hence not exactly).
  assert.ok(Math.abs(gpu.memory.reduction - wasm.memory.reduction) < 0.05, `${gpu.memory.reduction} vs ${wasm.memory.reduction}`);
  assert.ok(gpu.memory.gpuBytes > wasm.memory.weightsBytes * 0.9, `GPU ${gpu.memory.gpuBytes} B vs the wasm backend's weights ${wasm.memory.weightsBytes} B`);
}

for (const name of ['smollm2-2layer', 'smollm2-2layer-q3']) {
  test(`${name}: WebGPU (SwiftShader) gives the WASM backend's 8 greedy tokens`, { timeout: 300_000 }, async () => {
    const both = await bothBackends(name, 'Once upon a time, in a small village by the sea,', 8);
    report(name, both);
    assertRanOnTheGpu(both);
    assert.equal(both.gpu.out.tokenIds.length, 8);
    assert.deepEqual(both.gpu.out.tokenIds, both.wasm.out.tokenIds);
    assert.equal(both.gpu.out.text, both.wasm.out.text);
    assert.deepEqual(harness.errors, []);
  });
}

test('smollm2-135m: WebGPU (SwiftShader) gives the native CLI\'s, the WASM backend\'s and the fixture\'s first tokens', { timeout: 600_000 }, async () => {
  const fixture = JSON.parse(await readFile(join(REPO, 'tests', 'fixtures', 'smollm2_once_upon.json'), 'utf8'));
  const MAX_TOKENS = 3;
  const both = await bothBackends('smollm2-135m', fixture.prompt, MAX_TOKENS);
  report('smollm2-135m', both);
  assertRanOnTheGpu(both);
  // `accel generate` natively on the very pack the site serves.
  const native = JSON.parse(execFileSync(ACCEL, ['generate', '--model', join(DIST, 'models', 'smollm2-135m'), '--json', '--prompt', fixture.prompt,
    '--temperature', '0', '--max-tokens', String(MAX_TOKENS)], { encoding: 'utf8' }));
  assert.deepEqual(both.gpu.out.tokenIds, native.token_ids, 'the native CLI\'s tokens');
  assert.deepEqual(both.gpu.out.promptTokenIds, fixture.prompt_ids);
  assert.deepEqual(both.gpu.out.tokenIds, both.wasm.out.tokenIds);
  assert.deepEqual(both.gpu.out.tokenIds, fixture.greedy_ids.slice(0, MAX_TOKENS));
  assert.deepEqual(harness.errors, []);
});

test('a generation on the GPU streams, a second one waits for the GPU model instead of sharing its KV cache, and its components stay together', { timeout: 300_000 }, async () => {
  const out = await harness.page.evaluate(async () => {
    const acc = new window.accel.IPFSAccelerate();
    const model = await acc.loadModel('smollm2-2layer', { backend: 'webgpu' });
    const prompt = 'The lighthouse keeper';
    const alone = await model.generate(prompt, { temperature: 0, maxTokens: 6 });
    // Two at once on one GPU model: each must get the tokens it gets alone.
    const streamed = [];
    const stream = (async () => {
      for await (const token of model.generateStream(prompt, { temperature: 0, maxTokens: 6 })) streamed.push(token.tokenId);
    })();
    const other = model.generate('Once upon a time', { temperature: 0, maxTokens: 4 });
    const [, second] = await Promise.all([stream, other]);
    const secondAlone = await model.generate('Once upon a time', { temperature: 0, maxTokens: 4 });
    // A GPU model's weights are one upload: components cannot be unloaded one by one.
    const unloadLayer = await model.unloadComponent('layer.0').then(() => null, (e) => ({ name: e.name, message: e.message }));
    await model.unload();
    const afterUnload = await model.generate(prompt, { maxTokens: 1 }).then(() => null, (e) => e.name);
    return { alone: alone.tokenIds, streamed, second: second.tokenIds, secondAlone: secondAlone.tokenIds, unloadLayer, afterUnload };
  });
  assert.deepEqual(out.streamed, out.alone);
  assert.deepEqual(out.second, out.secondAlone);
  assert.equal(out.unloadLayer?.name, 'InvalidParameterError', JSON.stringify(out.unloadLayer));
  assert.match(out.unloadLayer.message, /WebGPU/);
  assert.equal(out.afterUnload, 'ModelNotLoadedError');
  assert.deepEqual(harness.errors, []);
});
