// Types for host-js/ipfs-accelerate.js.

export class AccelerateError extends Error {
  constructor(name: string, message: string);
}
export class WorkerCrashedError extends AccelerateError {}
/** A generation was cancelled (cancel(), an AbortSignal, leaving a for-await loop). `name` is 'AbortError'. */
export class AbortError extends AccelerateError {
  constructor(message: string, cause?: unknown);
}
export class ServiceWorkerError extends AccelerateError {}

export interface IPFSAccelerateConfig {
  /** Service-worker script URL, or false to run without caching. */
  serviceWorker?: string | false;
  /** Engine worker script URL. */
  workerUrl?: string;
  serviceWorkerTimeoutMs?: number;
  /** Where bare model names are looked up (default: the site's `/models/`). */
  modelsBaseUrl?: string;
  /** Shard-cache size limit in MB; the budget is min(this, free quota − reserve). */
  cacheSizeMB?: number | null;
  /** false: loadModel with backend 'webgpu' rejects with BackendUnavailableError. */
  enableWebGPU?: boolean;
  /** false: the WASM CPU backend is refused (BackendUnavailableError). */
  enableWasm?: boolean;
  /** Most MB of weights the engine may hold; a load past it rejects with MemoryLimitError. */
  maxMemoryUsageMB?: number;
}

export interface CachedModel {
  name: string;
  manifestUrl: string;
  totalBytes: number;
  storedBytes: number;
  complete: boolean;
  pinned: boolean;
  loading: boolean;
  lastUse: number;
  shards: string[];
}

export interface CachedShard {
  sha256: string;
  bytes: number;
  lastUse: number;
  uses: number;
  priority: number;
  models: string[];
  score: number;
  pinned: boolean;
  state: 'complete' | 'partial';
  received: number;
  chunks: number;
}

export interface Eviction {
  sha256: string;
  bytes: number;
  models: string[];
  at: number;
  reason: string;
}

export interface PrefetchProgress {
  type: 'progress';
  model: string;
  shard: string;
  index: number;
  count: number;
  loadedBytes: number;
  totalBytes: number;
  source: 'store' | 'network';
}

export class ModelCache {
  list(): Promise<{ models: CachedModel[]; shards: CachedShard[]; evictions: Eviction[]; inflation: number }>;
  evict(model: string): Promise<{ model: string; evicted: string[]; freedBytes: number }>;
  clear(): Promise<{ freedBytes: number }>;
  estimate(): Promise<{ usage: number; quota: number; cacheBytes: number; budget: number; configuredBytes: number | null; reserve: number }>;
  pin(model: string): Promise<{ model: string; pinned: true }>;
  unpin(model: string): Promise<{ model: string; pinned: false }>;
  configure(options: { cacheSizeMB?: number | null }): Promise<{ configuredBytes: number | null }>;
  prefetch(
    nameOrManifestUrl: string,
    options?: { onProgress?: (event: PrefetchProgress) => void },
  ): Promise<{ model: string; totalBytes: number; downloadedBytes: number; stored: boolean; notStored: { sha256: string; reason: string }[] }>;
  persist(): Promise<{ persisted: boolean; reason?: string }>;
}

export interface AdapterSummary {
  vendor: string;
  architecture: string;
  description: string;
  isFallbackAdapter: boolean;
  shaderF16: boolean;
  subgroups: boolean;
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
}

export interface Capabilities {
  webgpu: { available: boolean; reason?: string; adapter?: AdapterSummary };
  wasmSimd: boolean;
  crossOriginIsolated: boolean;
  hardwareConcurrency: number;
  serviceWorker: { controlled: boolean; scope: string | null };
  webnn: boolean;
  deviceMemoryGB: number | null;
  storage: StorageEstimate | null;
}

export interface FetchedFile {
  url: string;
  bytes: number;
  sha256: string;
  source: 'store' | 'network';
}

export interface LoadedShard {
  sha256: string;
  bytes: number;
  /** Where the bytes came from: IndexedDB via the service worker, or the network. */
  source: 'store' | 'network';
  /** False when the service worker served the shard but could not keep it. */
  stored: boolean;
  /** Why it was not stored (the service worker's `x-accel-not-stored`). */
  notStored?: string;
}

export interface ComponentInfo {
  name: string;
  bytes: number;
  priority: number;
}

export interface LoadedModelInfo {
  modelId: string;
  name: string;
  architecture: string;
  kind: 'text' | 'embedding';
  totalBytes: number;
  /** In load order. */
  components: ComponentInfo[];
  /** What waitForMinimumViableModel() waits for. */
  minimumViable: string[];
  /** Set once every component is resident (a progressive load's `model.loaded`). */
  loadMs?: number;
  shards?: LoadedShard[];
  /** Where generations run (set once loaded): 'wasm' (CPU, WASM SIMD) or 'webgpu'. */
  backend?: 'wasm' | 'webgpu';
  /** The GPU upload, on the webgpu backend. */
  gpu?: GpuLoadInfo;
}

export interface ComponentMemory {
  name: string;
  /** Held by the engine now (0 once unloaded). */
  bytes: number;
  /** The component's bytes in the pack. */
  packedBytes: number;
  resident: boolean;
}

/** The engine's memory ledger for one model. */
export interface MemoryUsage {
  modelId: string;
  /** weightsBytes + kvCacheBytes. */
  totalBytes: number;
  weightsBytes: number;
  /** KV caches of the generations running now. */
  kvCacheBytes: number;
  packedBytes: number;
  /** The same tensors at f16. */
  originalBytes: number;
  /** 1 − (weightsBytes + the GPU's weight bytes, on WebGPU) / originalBytes. */
  reduction: number;
  components: ComponentMemory[];
  /** Everything the engine's heap holds (all models), counted by its allocator. */
  engineHeapBytes?: number;
  /**
   * GPU memory of the model on the WebGPU backend (weights in their storage types, the KV
   * cache for the whole context, activations; allocated at load). 0 on the wasm backend.
   * Not part of totalBytes.
   */
  gpuBytes: number;
}

/** A model's upload to the GPU (backend 'webgpu'). */
export interface GpuLoadInfo {
  /** Adapter, backend, binding limit, optional features. */
  adapter: string;
  /** Buffers, pipelines and warm-up together. */
  loadMs: number;
  pipelineMs: number;
  pipelines: number;
  /** GPU buffers: weights, KV cache, activations. */
  bytes: number;
  /** KV-cache positions allocated. */
  context: number;
}

export interface PerformanceMetrics {
  loadMs: number;
  minimumViableMs: number;
  generations: number;
  tokensGenerated: number;
  /** Of the last generation. */
  timeToFirstTokenMs: number;
  prefillTokensPerS: number;
  decodeTokensPerS: number;
}

export interface GenerateOptions {
  /** Default 128. */
  maxTokens?: number;
  /** Default 0: greedy. */
  temperature?: number;
  /** 0 (default) = off. */
  topK?: number;
  /** 1 (default) = off. */
  topP?: number;
  seed?: number;
  /** Wrap the prompt in the model's chat template (one user turn, default system prompt). */
  chat?: boolean;
  /** Aborting cancels generation in the worker; the call rejects with an AbortError. */
  signal?: AbortSignal;
}

export interface StreamToken {
  /** The text this token made visible (may be empty while a character is incomplete). */
  text: string;
  tokenId: number;
  /** 0 for the first generated token. */
  index: number;
  /** elapsedMs: since generation started (pauses included); stepMs: computing this token. */
  timing: { elapsedMs: number; stepMs: number };
}

export interface StreamMetrics {
  tokens: number;
  elapsedMs: number;
  pausedMs: number;
  timeToFirstTokenMs: number;
  /** Pauses left out. */
  decodeTokensPerS: number;
}

export type StreamStatus = 'generating' | 'paused' | 'done' | 'cancelled' | 'error';

export interface GenerateStreamOptions extends GenerateOptions {
  onTokenReceived?: (token: StreamToken) => void;
  /** Every 8 tokens, and once at the end. */
  onMetricsUpdate?: (metrics: StreamMetrics) => void;
  onStatusChange?: (status: StreamStatus) => void;
}

/**
 * A streaming generation: an async iterator of tokens. Cancelling (cancel(), the signal,
 * `break` out of for-await) rejects the pending or next `next()` with an AbortError.
 */
export class GenerationStream implements AsyncIterableIterator<StreamToken> {
  readonly status: StreamStatus;
  /** The latest metrics event. */
  readonly metrics: StreamMetrics | null;
  /** The final result (stopReason 'cancelled' after a cancel); rejects if generation fails. */
  readonly result: Promise<GenerateResult>;
  [Symbol.asyncIterator](): GenerationStream;
  next(): Promise<IteratorResult<StreamToken, undefined>>;
  return(value?: unknown): Promise<IteratorResult<StreamToken, undefined>>;
  /** Resolves once the worker has stopped computing (no token events after it). */
  pause(): Promise<void>;
  resume(): Promise<void>;
  cancel(reason?: unknown): Promise<void>;
}

export interface GenerateResult {
  text: string;
  tokenIds: number[];
  promptTokenIds: number[];
  stopReason: 'eos' | 'stopSequence' | 'maxTokens' | 'contextFull' | 'cancelled';
  timings: {
    prefillTokensPerS: number;
    decodeTokensPerS: number;
    timeToFirstTokenMs: number;
    /** Only when generation started before the model was fully resident. Times are ms since the epoch. */
    progressive?: { layerDoneAtMs: number[]; waitedMs: number; firstTokenAtMs: number };
  };
}

export interface Embeddings {
  dim: number;
  embeddings: number[][];
}

export class Model {
  readonly info: LoadedModelInfo;
  /** Resolves to the completed info once every component is resident. */
  readonly loaded: Promise<LoadedModelInfo>;
  generate(prompt: string, options?: GenerateOptions): Promise<GenerateResult>;
  generateStream(prompt: string, options?: GenerateStreamOptions): GenerationStream;
  embed(texts: string | string[]): Promise<Embeddings>;
  /** Tokenizer, embeddings and first layer resident (every component for an embedding model). */
  waitForMinimumViableModel(): Promise<string[]>;
  waitForComponents(components: Iterable<string>): Promise<string[]>;
  getMemoryUsage(): Promise<MemoryUsage>;
  getLoadedComponents(): Promise<string[]>;
  unloadComponent(component: string): Promise<{ modelId: string; component: string; freedBytes: number }>;
  getPerformanceMetrics(): Promise<PerformanceMetrics>;
  unload(): Promise<void>;
}

export interface LoadProgressDetails {
  progress: number;
  component: string;
  componentBytes: number;
  loadedBytes: number;
  totalBytes: number;
  elapsedMs: number;
  etaMs: number;
  /** Bytes of the model's components resident in the engine so far. */
  memoryBytes: number;
  source: 'store' | 'network';
}

export interface LoadOptions {
  /** Once per component, in load order, when it is resident (bytes arrived and verified); progress is monotonic and ends at 1. */
  onProgress?: (progress: number, component: string, details: LoadProgressDetails) => void;
  onComponentLoaded?: (component: string, stats: { bytes: number; elapsedMs: number; source: 'store' | 'network' }) => void;
  /** Resolve as soon as the manifest is valid; parts arrive after (see Model.waitForComponents). */
  progressive?: boolean;
  /** Default 'auto'. A backend that cannot run here rejects with BackendUnavailableError. */
  backend?: 'auto' | 'wasm' | 'webgpu';
}

export class IPFSAccelerate {
  constructor(config?: IPFSAccelerateConfig);
  readonly config: Required<IPFSAccelerateConfig>;
  serviceWorker: { controlled: boolean; scope: string | null };
  /** The shard cache held by the service worker. */
  readonly cache: ModelCache;
  ready(): Promise<IPFSAccelerate>;
  getCapabilities(): Promise<Capabilities>;
  fetchFile(url: string): Promise<FetchedFile>;
  /** A model name (looked up under `modelsBaseUrl`) or a manifest.json URL. */
  loadModel(nameOrManifestUrl: string, options?: LoadOptions): Promise<Model>;
  manifestUrl(nameOrManifestUrl: string): string;
  terminate(): void;
}
