// The host side of the host <-> worker protocol. Mirrors worker/src/protocol.rs field for field;
// both sides' tests parse tests/fixtures/protocol.json.
//
//   host -> worker   {id, type: 'capabilities'} | {id, type: 'fetchFile', url}
//                  | {id, type: 'loadModel', url, backend?, maxMemoryBytes?}  (absolute manifest URL)
//                  | {id, type: 'generate', modelId, prompt, maxTokens?, temperature?, topK?,
//                     topP?, seed?, chat?}
//                  | {id, type: 'embed', modelId, texts}
//                  | {id, type: 'unloadModel', modelId}
//                  | {id, type: 'generateStream', ...as generate}
//                  | {id, type: 'pause' | 'resume', target} | {id, type: 'cancel', target, reason?}
//                  | {id, type: 'waitForComponents', modelId, components}
//                  | {id, type: 'unloadComponent', modelId, component}
//                  | {id, type: 'memoryUsage' | 'performanceMetrics', modelId}
//   worker -> host   {id, type: 'result', value} | {id, type: 'error', error: {name, message}}
//                  | {id, type: 'token', value: {text, tokenId, index, timing: {elapsedMs, stepMs}}}
//                  | {id, type: 'metrics', value: {tokens, elapsedMs, pausedMs, timeToFirstTokenMs,
//                     decodeTokensPerS}}
//                  | {id, type: 'progress', value: {progress, component, componentBytes, loadedBytes,
//                     totalBytes, elapsedMs, etaMs, memoryBytes, source}}   (loadModel)
//                  | {id, type: 'started', value: {modelId, name, architecture, kind, totalBytes,
//                     components: [{name, bytes, priority}], minimumViable}}   (loadModel, first)
//   Every request gets one final reply (result or error); a generateStream's token and metrics
//   events come before it, with the same id.

/** Base class of every error this library rejects with; `name` says which failure it is. */
export class AccelerateError extends Error {
  constructor(name, message) {
    super(message);
    this.name = name;
  }
}

/** The engine worker died (script failed to load, out of memory); create a new IPFSAccelerate. */
export class WorkerCrashedError extends AccelerateError {
  constructor(message) {
    super('WorkerCrashedError', message);
  }
}

/** The service worker could not be registered or did not take control in time. */
export class ServiceWorkerError extends AccelerateError {
  constructor(message) {
    super('ServiceWorkerError', message);
  }
}

/** A generation was cancelled (`cancel()`, an AbortSignal, or leaving a for-await loop). */
export class AbortError extends AccelerateError {
  constructor(message, cause) {
    super('AbortError', message);
    if (cause !== undefined) this.cause = cause;
  }
}

/** Rebuilds a named error from a worker reply's `{name, message}`. */
export function errorFromPayload({ name, message }) {
  return new AccelerateError(name || 'AccelerateError', message || 'unknown error from the engine worker');
}

/** Request builders: the only place message shapes are spelled out on this side. */
export const requests = {
  capabilities: () => ({ type: 'capabilities' }),
  fetchFile: (url) => ({ type: 'fetchFile', url }),
  loadModel: (url, { backend, maxMemoryBytes } = {}) => ({
    type: 'loadModel',
    url,
    ...(backend === undefined || backend === null ? {} : { backend }),
    ...(maxMemoryBytes === undefined || maxMemoryBytes === null ? {} : { maxMemoryBytes }),
  }),
  /** Only the options given are sent; the worker fills in the rest (greedy, 128 tokens). */
  generate: (modelId, prompt, options = {}) => ({ type: 'generate', modelId, prompt, ...generateOptions(options) }),
  embed: (modelId, texts) => ({ type: 'embed', modelId, texts }),
  unloadModel: (modelId) => ({ type: 'unloadModel', modelId }),
  /** As generate, with a `token` event per generated token before the result. */
  generateStream: (modelId, prompt, options = {}) => ({ type: 'generateStream', modelId, prompt, ...generateOptions(options) }),
  /** Control a running generate / generateStream by its request id. */
  pause: (target) => ({ type: 'pause', target }),
  resume: (target) => ({ type: 'resume', target }),
  waitForComponents: (modelId, components) => ({ type: 'waitForComponents', modelId, components }),
  unloadComponent: (modelId, component) => ({ type: 'unloadComponent', modelId, component }),
  memoryUsage: (modelId) => ({ type: 'memoryUsage', modelId }),
  performanceMetrics: (modelId) => ({ type: 'performanceMetrics', modelId }),
  cancel: (target, reason) => (reason === undefined || reason === null ? { type: 'cancel', target } : { type: 'cancel', target, reason: reasonText(reason) }),
};

function reasonText(reason) {
  if (typeof reason === 'string') return reason;
  if (reason instanceof Error || (reason && typeof reason.message === 'string')) return `${reason.name ?? 'Error'}: ${reason.message}`;
  return String(reason);
}

/** Options read on this side, never sent: the AbortSignal (callbacks are functions, also kept). */
const HOST_OPTIONS = ['signal'];

/** The generate options the worker reads (worker/src/protocol.rs `GenerateRequest`). */
export const GENERATE_OPTIONS = ['maxTokens', 'temperature', 'topK', 'topP', 'seed', 'chat'];

/**
 * The generate options that are set. An option this version does not implement is refused
 * here by name (InvalidParameterError) rather than silently ignored, since it would change the
 * output; functions (callbacks such as onTokenReceived) and `signal` are left out: they are
 * used on this side (generateStream), and cannot cross postMessage.
 */
function generateOptions(options) {
  const picked = {};
  for (const [name, value] of Object.entries(options ?? {})) {
    if (value === undefined || typeof value === 'function' || HOST_OPTIONS.includes(name)) continue;
    if (!GENERATE_OPTIONS.includes(name)) {
      throw new AccelerateError('InvalidParameterError', `generate option ${JSON.stringify(name)} is not supported by this version; supported: ${GENERATE_OPTIONS.join(', ')}`);
    }
    picked[name] = value;
  }
  return picked;
}

/** Reply types that are progress events: the request's final reply is still to come. */
const EVENT_TYPES = ['token', 'metrics', 'progress', 'started'];

/**
 * Sends requests to a Worker (anything with postMessage/addEventListener) and resolves each
 * with the final reply carrying its id; progress events with that id (token, metrics) go to
 * the request's `onEvent`. A crashed worker rejects everything pending.
 */
export class WorkerChannel {
  constructor(worker) {
    this.worker = worker;
    this.nextId = 1;
    this.pending = new Map();
    this.crashed = null;
    worker.addEventListener('message', (event) => this.#onReply(event.data));
    worker.addEventListener('error', (event) => {
      this.crashed = new WorkerCrashedError(`the engine worker failed: ${event.message || 'script error'}`);
      for (const { reject } of this.pending.values()) reject(this.crashed);
      this.pending.clear();
    });
  }

  request(body) {
    return this.send(body).result;
  }

  /**
   * Sends `body` and returns `{id, result}` at once: the id (what pause / resume / cancel
   * target) and the promise of the final reply. `onEvent(reply)` gets each progress event.
   */
  send(body, onEvent) {
    if (this.crashed) return { id: null, result: Promise.reject(this.crashed) };
    const id = this.nextId++;
    const result = new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onEvent });
      this.worker.postMessage({ id, ...body });
    });
    return { id, result };
  }

  #onReply(reply) {
    const waiter = this.pending.get(reply?.id);
    if (!waiter) return; // a reply for a request nobody waits for (e.g. id 0: unparseable request)
    if (EVENT_TYPES.includes(reply.type)) {
      waiter.onEvent?.(reply);
      return;
    }
    this.pending.delete(reply.id);
    if (reply.type === 'result') waiter.resolve(reply.value);
    else if (reply.type === 'error') waiter.reject(errorFromPayload(reply.error ?? {}));
    else waiter.reject(new AccelerateError('ProtocolError', `unexpected reply type ${JSON.stringify(reply.type)}`));
  }
}
