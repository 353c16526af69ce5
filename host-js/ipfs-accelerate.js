// ipfs-accelerate-web: the main-thread library. A thin proxy: every call becomes a request to
// the engine's dedicated worker (Rust wasm); no model logic runs on this thread. The service
// worker (Rust wasm) is registered first so that the worker's downloads are cached in IndexedDB
// and the app keeps working offline.
import { AccelerateError, ServiceWorkerError, WorkerChannel, requests } from './protocol.js';
import { ModelCache } from './cache.js';

export { AccelerateError, ServiceWorkerError, WorkerCrashedError } from './protocol.js';

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
   * absolute or relative to the page. `options` is reserved for later slices (progress,
   * backend, components) and not read yet.
   */
  async loadModel(nameOrManifestUrl, options = {}) {
    const info = await this.#request(requests.loadModel(this.manifestUrl(nameOrManifestUrl)));
    return new Model((body) => this.#request(body), info);
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
 * report: `{modelId, name, architecture, kind: 'text' | 'embedding', totalBytes, loadMs,
 * shards: [{sha256, bytes, source, stored, notStored?}]}`.
 */
export class Model {
  #send;
  #unloaded = false;

  constructor(send, info) {
    this.#send = send;
    this.info = info;
  }

  /**
   * Generates a completion of `prompt` (a text model). Options: maxTokens (128), temperature
   * (0 = greedy, the default), topK, topP, seed, chat (wrap the prompt in the model's chat
   * template). Resolves `{text, tokenIds, promptTokenIds, stopReason, timings:
   * {prefillTokensPerS, decodeTokensPerS, timeToFirstTokenMs}}` — the same tokens as
   * `accel generate --json` natively.
   */
  async generate(prompt, options = {}) {
    return this.#send(requests.generate(this.info.modelId, prompt, options));
  }

  /** Sentence embeddings (an embedding model): a string or an array → `{dim, embeddings}`. */
  async embed(texts) {
    return this.#send(requests.embed(this.info.modelId, typeof texts === 'string' ? [texts] : Array.from(texts)));
  }

  /** Frees the model in the worker. Later calls on it reject with ModelNotLoadedError. */
  async unload() {
    if (this.#unloaded) return;
    this.#unloaded = true;
    await this.#send(requests.unloadModel(this.info.modelId));
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
