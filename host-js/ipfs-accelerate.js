// ipfs-accelerate-web: the main-thread library. A thin proxy: every call becomes a request to
// the engine's dedicated worker (Rust wasm); no model logic runs on this thread. The service
// worker (Rust wasm) is registered first so that the worker's downloads are cached in IndexedDB
// and the app keeps working offline.
import { AbortError, AccelerateError, ServiceWorkerError, WorkerChannel, requests } from './protocol.js';
import { ModelCache } from './cache.js';

export { AbortError, AccelerateError, ServiceWorkerError, WorkerCrashedError } from './protocol.js';

const DEFAULTS = {
  /** URL of the service-worker script, or `false` to run without one (no caching, no offline). */
  serviceWorker: new URL('../accel-sw.js', import.meta.url).href,
  /** URL of the engine worker script. */
  workerUrl: new URL('../accel-worker.js', import.meta.url).href,
  /** How long to wait for a newly installed service worker to take control of the page. */
  serviceWorkerTimeoutMs: 15000,
  /** Where bare model names resolve: `<modelsBaseUrl>/<name>/manifest.json`. */
  modelsBaseUrl: new URL('../models/', import.meta.url).href,
  /** Size limit of the shard cache in MB (undefined: leave the service worker's setting alone). */
  cacheSizeMB: undefined,
  /** Most MB of model weights the engine may hold; a load past it rejects (MemoryLimitError). */
  maxMemoryUsageMB: undefined,
  /** false: `backend: 'webgpu'` is refused (BackendUnavailableError). */
  enableWebGPU: true,
  /** false: the WASM CPU backend is refused. */
  enableWasm: true,
};

export class IPFSAccelerate {
  constructor(config = {}) {
    this.config = { ...DEFAULTS, ...config };
    this.serviceWorker = { controlled: false, scope: null };
    this._started = null;
    /** The shard cache in the service worker: list, evict, clear, estimate, persist, prefetch, pin, unpin. */
    this.cache = new ModelCache(this);
  }

  /** Registers the service worker, then starts the engine worker. Idempotent. */
  ready() {
    this._started ??= this.#start();
    return this._started;
  }

  async #start() {
    if (this.config.serviceWorker) {
      this.serviceWorker = await registerServiceWorker(this.config);
      if (this.config.cacheSizeMB !== undefined) await this.cache.send({ type: 'configure', cacheSizeMB: this.config.cacheSizeMB });
    }
    // The engine worker is created only now: a worker started before the service worker
    // controls the page would fetch around the cache.
    this._worker = new Worker(this.config.workerUrl, { type: 'module', name: 'ipfs-accelerate-engine' });
    this._channel = new WorkerChannel(this._worker);
    return this;
  }

  async #request(body) {
    await this.ready();
    return this._channel.request(body);
  }

  /** What this browser can run: the engine worker's WebGPU / WASM report, plus page-side facts. */
  async getCapabilities() {
    const worker = await this.#request(requests.capabilities());
    return {
      ...worker,
      serviceWorker: this.serviceWorker,
      webnn: typeof navigator !== 'undefined' && 'ml' in navigator,
      deviceMemoryGB: navigator.deviceMemory ?? null,
      storage: navigator.storage?.estimate ? await navigator.storage.estimate() : null,
    };
  }

  /**
   * Has the engine worker fetch `url` (through the service worker's cache when it controls the
   * page) and report `{url, bytes, sha256, source}`, where source is 'store' (IndexedDB) or
   * 'network'. A diagnostic for the download path every model load takes.
   */
  async fetchFile(url) {
    return this.#request(requests.fetchFile(new URL(url, location.href).href));
  }

  /**
   * Downloads a packed model (manifest.json + shards, through the service worker's cache) and
   * loads it in the engine worker; resolves to a `Model`. `nameOrManifestUrl` is a model name
   * (`'smollm2-135m'` → `<modelsBaseUrl>smollm2-135m/manifest.json`) or a manifest URL,
   * absolute or relative to the page.
   *
   * Options:
   * - `onProgress(progress, component, details)`: once per component, in load order, when it
   *   is resident in the engine (bytes arrived, verified, in its own buffer): `progress` (0..1,
   *   monotonic, 1 at the end), the component's name, and `details` {componentBytes,
   *   loadedBytes, totalBytes, elapsedMs, etaMs, memoryBytes, source}.
   *   `onComponentLoaded(component, stats)` follows each with {bytes, elapsedMs, source}.
   * - `progressive: true`: resolve as soon as the manifest is valid, with the rest still
   *   arriving. `model.waitForMinimumViableModel()` / `model.waitForComponents([...])` wait for
   *   parts, `model.loaded` for all; `generate()` may be called at any time and computes each
   *   layer as soon as it is resident. By default the promise resolves when everything is in.
   * - `backend`: 'auto' (default: WebGPU on a hardware adapter, else the WASM CPU backend),
   *   'wasm', or 'webgpu'; one that cannot run here rejects with a BackendUnavailableError.
   *   `model.info.backend` says where it runs, `model.info.gpu` what the GPU upload took.
   */
  async loadModel(nameOrManifestUrl, options = {}) {
    const { onProgress, onComponentLoaded, progressive = false } = options ?? {};
    // The config narrows 'auto': with one backend disabled, the other is the only choice.
    let backend = options?.backend ?? 'auto';
    if (backend === 'auto' && this.config.enableWebGPU === false) backend = 'wasm';
    if (backend === 'auto' && this.config.enableWasm === false) backend = 'webgpu';
    if (backend === 'webgpu' && this.config.enableWebGPU === false) {
      throw new AccelerateError('BackendUnavailableError', "backend 'webgpu' was asked for, but this IPFSAccelerate was created with enableWebGPU: false");
    }
    if ((backend === 'wasm' || backend === 'cpu') && this.config.enableWasm === false) {
      throw new AccelerateError('BackendUnavailableError', "the WASM CPU backend was asked for (or is the only one left), but this IPFSAccelerate was created with enableWasm: false; allow it or load with backend: 'webgpu'");
    }
    await this.ready();
    const transport = {
      request: (body) => this.#request(body),
      send: async (body, onEvent) => {
        await this.ready();
        return this._channel.send(body, onEvent);
      },
    };
    let model = null;
    let resolveStarted;
    const started = new Promise((resolve) => { resolveStarted = resolve; });
    const onEvent = ({ type, value }) => {
      if (type === 'started') {
        model = new Model(transport, value);
        resolveStarted(model);
      } else if (type === 'progress') {
        onProgress?.(value.progress, value.component, value);
        onComponentLoaded?.(value.component, { bytes: value.componentBytes, elapsedMs: value.elapsedMs, source: value.source });
      }
    };
    const { maxMemoryUsageMB } = this.config;
    const maxMemoryBytes = maxMemoryUsageMB === undefined || maxMemoryUsageMB === null ? undefined : Math.floor(maxMemoryUsageMB * 1024 * 1024);
    const result = this._channel.send(requests.loadModel(this.manifestUrl(nameOrManifestUrl), { backend, maxMemoryBytes }), onEvent).result;
    const loaded = result.then((info) => {
      model ??= new Model(transport, info);
      Object.assign(model.info, info);
      return model.info;
    });
    if (!progressive) {
      await loaded;
      return model;
    }
    loaded.catch(() => {}); // observed through model.loaded
    // The load fails before `started` (bad URL, bad manifest) or it resolves with the model.
    const early = await Promise.race([started, result.then(() => started)]);
    early.loaded = loaded;
    return early;
  }

  /** The absolute manifest URL `loadModel` fetches for a model name or URL. */
  manifestUrl(nameOrManifestUrl) {
    const value = String(nameOrManifestUrl);
    if (MODEL_NAME.test(value) && !value.endsWith('.json')) {
      return new URL(`${value}/manifest.json`, ensureTrailingSlash(this.config.modelsBaseUrl)).href;
    }
    return new URL(value, location.href).href;
  }

  /** Stops the engine worker. The service worker stays (it serves other tabs and offline use). */
  terminate() {
    this._worker?.terminate();
    this._started = null;
  }
}

/** A model name as `accel pack --name` allows it: letters, digits, '-', '_', '.'. */
const MODEL_NAME = /^[A-Za-z0-9._-]+$/;

function ensureTrailingSlash(url) {
  const href = new URL(url, location.href).href;
  return href.endsWith('/') ? href : `${href}/`;
}

/**
 * A model loaded in the engine worker (from `acc.loadModel`). `info` is the worker's load
 * report: `{modelId, name, architecture, kind: 'text' | 'embedding', totalBytes, components:
 * [{name, bytes, priority}], minimumViable: [names]}`, completed once everything is in with
 * `{loadMs, shards: [{sha256, bytes, source, stored, notStored?}]}`. `loaded` (a progressive
 * load's) resolves to the completed info.
 */
export class Model {
  #transport;
  #unloaded = false;
  /** Resolves to the completed `info` once every component is resident. */
  loaded;

  /**
   * `transport`: `{request(body) -> Promise<value>, send(body, onEvent) -> {id, result}` (or
   * a promise of it)} — a WorkerChannel's shape, or just a `request` function (no streaming, no
   * cancelling).
   */
  constructor(transport, info) {
    this.#transport = typeof transport === 'function' ? { request: transport } : transport;
    this.info = { ...info };
    this.loaded = Promise.resolve(this.info);
  }

  /**
   * Resolves once the tokenizer, the embeddings and the first layer are resident (every
   * component, for an embedding model): `generate()` can start then and computes each later
   * layer as it arrives. Resolves to the resident component names.
   */
  async waitForMinimumViableModel() {
    return this.waitForComponents(this.info.minimumViable ?? []);
  }

  /**
   * Resolves (to the resident component names) once every named component is resident;
   * rejects if the load fails, or with InvalidParameterError for a name the model lacks.
   */
  async waitForComponents(components) {
    const { resident } = await this.#transport.request(requests.waitForComponents(this.info.modelId, Array.from(components)));
    return resident;
  }

  /**
   * The engine's memory ledger for this model: `{totalBytes, weightsBytes, kvCacheBytes,
   * packedBytes, originalBytes (the same tensors at f16), reduction, components: [{name,
   * bytes, packedBytes, resident}], engineHeapBytes, gpuBytes}`. Bytes are what the engine allocated (the
   * tokenizer's tables measured by its allocator); the KV cache is that of running generations.
   */
  async getMemoryUsage() {
    return this.#transport.request(requests.memoryUsage(this.info.modelId));
  }

  /** Names of the components resident now, in load order. */
  async getLoadedComponents() {
    const usage = await this.getMemoryUsage();
    return usage.components.filter((c) => c.resident).map((c) => c.name);
  }

  /**
   * Frees one component's memory in the engine (`'layer.29'`, `'embeddings'`, ...). Resolves
   * `{modelId, component, freedBytes}`. Requests that need it then reject with
   * ComponentNotLoadedError; load the model again to get it back.
   */
  async unloadComponent(component) {
    return this.#transport.request(requests.unloadComponent(this.info.modelId, String(component)));
  }

  /**
   * `{loadMs, minimumViableMs, generations, tokensGenerated, timeToFirstTokenMs,
   * prefillTokensPerS, decodeTokensPerS}`: the load, and the last generation's rates.
   */
  async getPerformanceMetrics() {
    return this.#transport.request(requests.performanceMetrics(this.info.modelId));
  }

  /**
   * Generates a completion of `prompt` (a text model). Options: maxTokens (128), temperature
   * (0 = greedy, the default), topK, topP, seed, chat (wrap the prompt in the model's chat
   * template), signal (an AbortSignal: aborting cancels generation in the worker and rejects
   * with an AbortError). Resolves `{text, tokenIds, promptTokenIds, stopReason, timings:
   * {prefillTokensPerS, decodeTokensPerS, timeToFirstTokenMs}}` — the same tokens as
   * `accel generate --json` natively.
   */
  async generate(prompt, options = {}) {
    const body = requests.generate(this.info.modelId, prompt, options);
    const signal = options?.signal;
    if (!signal) return this.#transport.request(body);
    if (signal.aborted) throw abortError(signal.reason);
    if (!this.#transport.send) throw new AccelerateError('InvalidParameterError', 'this Model cannot cancel requests (it was built with a request function only)');
    const { id, result } = await this.#transport.send(body);
    let onAbort;
    const aborted = new Promise((_, reject) => {
      onAbort = () => {
        this.#transport.request(requests.cancel(id, signal.reason)).catch(() => {});
        reject(abortError(signal.reason));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      if (signal.aborted) onAbort(); // aborted while the request was being sent
    });
    try {
      return await Promise.race([result, aborted]);
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Generates like `generate`, a token at a time: returns (at once) a `GenerationStream`, an
   * async iterator of `{text, tokenId, index, timing: {elapsedMs, stepMs}}` with `pause()`,
   * `resume()`, `cancel(reason)` and `result` (the final `generate` result). Besides
   * generate's options it reads `signal` (AbortSignal), `onTokenReceived(token)`,
   * `onMetricsUpdate(metrics)` and `onStatusChange(status)`.
   */
  generateStream(prompt, options = {}) {
    if (!this.#transport.send) throw new AccelerateError('InvalidParameterError', 'this Model cannot stream (it was built with a request function only)');
    return new GenerationStream(this.#transport, this.info.modelId, prompt, options);
  }

  /** Sentence embeddings (an embedding model): a string or an array → `{dim, embeddings}`. */
  async embed(texts) {
    return this.#transport.request(requests.embed(this.info.modelId, typeof texts === 'string' ? [texts] : Array.from(texts)));
  }

  /** Frees the model in the worker. Later calls on it reject with ModelNotLoadedError. */
  async unload() {
    if (this.#unloaded) return;
    this.#unloaded = true;
    await this.#transport.request(requests.unloadModel(this.info.modelId));
  }
}

function abortError(reason) {
  const detail = reason === undefined ? '' : `: ${reason instanceof Error || reason?.message ? reason.message : String(reason)}`;
  return new AbortError(`generation was cancelled${detail}`, reason);
}

/** Calls a user callback; one that throws is reported, never breaks the stream. */
function notify(callback, value) {
  if (typeof callback !== 'function') return;
  try {
    callback(value);
  } catch (err) {
    (globalThis.reportError ?? console.error)(err);
  }
}

/**
 * One streaming generation (from `model.generateStream`). Iterate it with `for await`; tokens
 * that arrive before they are asked for are buffered. `status` is 'generating' | 'paused' |
 * 'done' | 'cancelled' | 'error'. Cancelling (`cancel()`, the AbortSignal, or `break` out of
 * a for-await loop) ends the iteration at once: the pending or next `next()` rejects with an
 * AbortError (no more tokens are delivered), and the worker stops after its current step.
 */
export class GenerationStream {
  #transport;
  #callbacks;
  /** Promise<{id, result}> once sent; null when aborted before it was sent. */
  #sent = null;
  #queue = [];
  #waiters = [];
  /** null while running; then {done: true} or {error, abort?}. */
  #ending = null;
  #endingDelivered = false;
  #result;
  status = 'generating';
  /** The latest metrics event: {tokens, elapsedMs, pausedMs, timeToFirstTokenMs, decodeTokensPerS}. */
  metrics = null;

  constructor(transport, modelId, prompt, options = {}) {
    this.#transport = transport;
    const { signal, onTokenReceived, onMetricsUpdate, onStatusChange } = options ?? {};
    this.#callbacks = { onTokenReceived, onMetricsUpdate, onStatusChange };
    notify(onStatusChange, 'generating');
    let body;
    try {
      body = requests.generateStream(modelId, prompt, options);
      if (signal?.aborted) throw abortError(signal.reason);
    } catch (err) {
      this.#end(err.name === 'AbortError' ? 'cancelled' : 'error', { error: err, abort: err.name === 'AbortError' });
      this.#result = Promise.reject(err);
      this.#result.catch(() => {});
      return;
    }
    this.#sent = Promise.resolve(transport.send(body, (event) => this.#onEvent(event)));
    this.#result = this.#sent.then(({ result }) => result).then(
      (value) => this.#onResult(value),
      (err) => this.#onError(err),
    );
    this.#result.catch(() => {}); // observed through `result`; not an unhandled rejection here
    if (signal) {
      const onAbort = () => { this.cancel(signal.reason).catch(() => {}); };
      signal.addEventListener('abort', onAbort, { once: true });
      this.#result.finally(() => signal.removeEventListener('abort', onAbort)).catch(() => {});
    }
  }

  /**
   * The final result, as `generate` resolves it (stopReason 'cancelled' after a cancel, with
   * the tokens made until then); rejects with the error when generation fails.
   */
  get result() {
    return this.#result;
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  next() {
    if (this.#ending?.abort) return this.#deliverEnding();
    if (this.#queue.length) return Promise.resolve({ value: this.#queue.shift(), done: false });
    if (this.#ending) return this.#deliverEnding();
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Leaving a for-await loop early cancels the generation. */
  async return(value) {
    if (!this.#ending) this.cancel('the iteration was stopped');
    this.#endingDelivered = true;
    return { value, done: true };
  }

  /** Stops the worker computing after its current step; resolves once it has. */
  async pause() {
    await this.#control(requests.pause, 'generating', 'paused');
  }

  /** Continues a paused generation. */
  async resume() {
    await this.#control(requests.resume, 'paused', 'generating');
  }

  /**
   * Ends the generation: the iteration ends at once (the pending or next `next()` rejects
   * with an AbortError) and the worker stops after its current step. Resolves once the worker
   * has acknowledged. No effect once the generation has ended.
   */
  async cancel(reason) {
    if (this.#ending) return;
    this.#end('cancelled', { error: abortError(reason), abort: true });
    if (!this.#sent) return;
    try {
      const { id } = await this.#sent;
      await this.#transport.request(requests.cancel(id, reason));
    } catch (err) {
      if (err.name !== 'StreamNotFoundError' && err.name !== 'WorkerCrashedError') throw err;
    }
  }

  async #control(build, from, to) {
    if (this.#ending || !this.#sent) return;
    const { id } = await this.#sent;
    try {
      const { state } = await this.#transport.request(build(id));
      if (!this.#ending && this.status === from && state === to) this.#setStatus(to);
    } catch (err) {
      // It ended meanwhile: nothing to pause or resume.
      if (err.name !== 'StreamNotFoundError') throw err;
    }
  }

  #setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    notify(this.#callbacks.onStatusChange, status);
  }

  #onEvent(event) {
    if (this.#ending) return; // cancelled: nothing more is delivered
    if (event.type === 'token') {
      notify(this.#callbacks.onTokenReceived, event.value);
      const waiter = this.#waiters.shift();
      if (waiter) waiter.resolve({ value: event.value, done: false });
      else this.#queue.push(event.value);
    } else if (event.type === 'metrics') {
      this.metrics = event.value;
      notify(this.#callbacks.onMetricsUpdate, event.value);
    }
  }

  #onResult(value) {
    if (!this.#ending) {
      if (value.stopReason === 'cancelled') this.#end('cancelled', { error: abortError('cancelled in the worker'), abort: true });
      else this.#end('done', { done: true });
    }
    return value;
  }

  #onError(err) {
    if (!this.#ending) this.#end('error', { error: err });
    throw err;
  }

  /** Records how the stream ends and settles the `next()` calls waiting. */
  #end(status, ending) {
    this.#ending = ending;
    if (ending.abort) this.#queue.length = 0;
    this.#setStatus(status);
    // Waiters exist only while the queue is empty.
    for (const waiter of this.#waiters.splice(0)) {
      const next = this.#deliverEnding();
      next.then(waiter.resolve, waiter.reject);
    }
  }

  /** The end, once: the error (or done) to the first caller, done to any later one. */
  #deliverEnding() {
    if (this.#ending.error && !this.#endingDelivered) {
      this.#endingDelivered = true;
      return Promise.reject(this.#ending.error);
    }
    return Promise.resolve({ value: undefined, done: true });
  }
}

async function registerServiceWorker({ serviceWorker, serviceWorkerTimeoutMs }) {
  if (!('serviceWorker' in navigator)) {
    throw new ServiceWorkerError('this page cannot use service workers (it must be served over https or from localhost); pass {serviceWorker: false} to run uncached');
  }
  let registration;
  try {
    registration = await navigator.serviceWorker.register(serviceWorker, { type: 'module', updateViaCache: 'none' });
  } catch (err) {
    throw new ServiceWorkerError(`cannot register the service worker ${serviceWorker}: ${err.message}`);
  }
  if (!navigator.serviceWorker.controller) {
    // First visit: wait for the new worker to install (precache the app shell) and claim us.
    await new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new ServiceWorkerError(`the service worker did not take control within ${serviceWorkerTimeoutMs} ms; see its console in DevTools > Application`)),
        serviceWorkerTimeoutMs,
      );
      navigator.serviceWorker.addEventListener('controllerchange', () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  }
  return { controlled: true, scope: registration.scope };
}
