// How a TypeScript user calls the public API (README "Using it from a page"); type-checked
// against host-js/ipfs-accelerate.d.ts by tests/unit/types.test.mjs. The `@ts-expect-error`
// lines must fail to type-check: they prove the declarations reject misuse, not just accept
// anything.
import { AccelerateError, IPFSAccelerate } from '../../host-js/ipfs-accelerate.js';
import type { GenerateResult, LoadedModelInfo, MemoryUsage, Model, StreamToken } from '../../host-js/ipfs-accelerate.js';

export async function usage(): Promise<void> {
  const acc = new IPFSAccelerate({ cacheSizeMB: 512, modelsBaseUrl: '/models/' });
  const caps = await acc.getCapabilities();
  const gpu: boolean = caps.webgpu.available;
  const simd: boolean = caps.wasmSimd;

  const lm: Model = await acc.loadModel('smollm2-135m', {
    onProgress: (progress, component, details) => console.log(progress.toFixed(2), component, details.etaMs, details.source),
    onComponentLoaded: (component, stats) => console.log(component, stats.bytes),
  });
  const info: LoadedModelInfo = lm.info;
  const fromCache: boolean = (info.shards ?? []).every((s) => s.source === 'store' && s.stored);

  // Progressive: start generating while the last layers still download.
  const early: Model = await acc.loadModel('smollm2-135m', { progressive: true, backend: 'auto' });
  const resident: string[] = await early.waitForMinimumViableModel();
  const soon = early.generate('Once upon a time', { maxTokens: 8 });
  await early.waitForComponents(['layer.29']);
  const loadedInfo: LoadedModelInfo = await early.loaded;
  const layerTimes: number[] = (await soon).timings.progressive?.layerDoneAtMs ?? [];
  const usage: MemoryUsage = await early.getMemoryUsage();
  const freed: number = (await early.unloadComponent('layer.29')).freedBytes;
  const components: string[] = await early.getLoadedComponents();
  const ttft: number = (await early.getPerformanceMetrics()).timeToFirstTokenMs;
  console.log(resident, loadedInfo.loadMs, layerTimes, usage.totalBytes - usage.kvCacheBytes, freed, components, ttft);

  const controller = new AbortController();
  const out: GenerateResult = await lm.generate('Once upon a time', { maxTokens: 32, temperature: 0, signal: controller.signal });
  const ids: number[] = out.tokenIds;
  const decode: number = out.timings.decodeTokensPerS;

  const stream = lm.generateStream('What is the capital of France?', {
    chat: true,
    onTokenReceived: (t: StreamToken) => t.text,
    onStatusChange: (status) => status === 'paused',
  });
  for await (const token of stream) {
    if (token.index === 3) await stream.pause();
    if (token.index === 3) await stream.resume();
    if (token.index > 10) await stream.cancel('enough');
  }
  const final: GenerateResult = await stream.result;

  const mini = await acc.loadModel('minilm-l6');
  const { dim, embeddings } = await mini.embed(['first sentence', 'second']);
  const first: number = embeddings[0][0] * dim;

  const list = await acc.cache.list();
  const pinned: boolean[] = list.models.map((m) => m.pinned);
  const estimate = await acc.cache.estimate();
  const room: number = estimate.budget - estimate.cacheBytes;
  await acc.cache.prefetch('minilm-l6', { onProgress: (e) => e.loadedBytes / e.totalBytes });
  const { persisted } = await acc.cache.persist();
  await acc.cache.pin('minilm-l6');
  await acc.cache.evict('smollm2-135m');
  await lm.unload();

  try {
    await acc.loadModel('no-such-model');
  } catch (err) {
    if (err instanceof AccelerateError) console.log(err.name, err.message);
  }
  console.log(gpu, simd, fromCache, ids, decode, final.stopReason, first, pinned, room, persisted);

  // Misuse the declarations must reject:
  // @ts-expect-error maxTokens is a number
  await lm.generate('x', { maxTokens: '32' });
  // @ts-expect-error embed takes text, not numbers
  await mini.embed([1, 2]);
  // @ts-expect-error there is no cache.delete (it is evict)
  await acc.cache.delete('minilm-l6');
  // @ts-expect-error there is no 'cuda' backend
  await acc.loadModel('m', { backend: 'cuda' });
  // @ts-expect-error unloadComponent takes one component name
  await lm.unloadComponent(['layer.0']);
  // @ts-expect-error onProgress's progress is a number
  await acc.loadModel('m', { onProgress: (progress: string) => progress });
}
