// `acc.cache`: the shard cache held by the service worker (Rust, crate `sw`), asked over
// postMessage. Each request travels with a MessageChannel port; the service worker answers on it
// with {type: 'result', value} or {type: 'error', error: {name, message}}, after any
// {type: 'progress', ...} events (prefetch). Message shapes: sw/src/messages.rs.
import { ServiceWorkerError, errorFromPayload } from './protocol.js';

export class ModelCache {
  #acc;

  constructor(acc) {
    this.#acc = acc;
  }

  async #ask(body, onProgress) {
    await this.#acc.ready();
    return this.send(body, onProgress);
  }

  /** Sends one request to the controlling service worker (internal: no wait for ready()). */
  send(body, onProgress) {
    const worker = navigator.serviceWorker?.controller;
    if (!worker) {
      return Promise.reject(new ServiceWorkerError('no service worker controls this page, so there is no cache to ask; construct IPFSAccelerate with a serviceWorker URL (the default) over http://localhost or https'));
    }
    const channel = new MessageChannel();
    return new Promise((resolve, reject) => {
      channel.port1.onmessage = ({ data }) => {
        if (data?.type === 'progress') {
          onProgress?.(data);
          return;
        }
        channel.port1.close();
        if (data?.type === 'result') resolve(data.value);
        else reject(errorFromPayload(data?.error ?? {}));
      };
      worker.postMessage(body, [channel.port2]);
    });
  }

  /** Models and shards held ({models, shards, evictions}), with bytes, last use, pinned. */
  list() { return this.#ask({ type: 'list' }); }

  /** Drops a model and every shard no other model uses: {model, evicted, freedBytes}. */
  evict(model) { return this.#ask({ type: 'evict', model }); }

  /** Drops every model and shard: {freedBytes}. */
  clear() { return this.#ask({ type: 'clear' }); }

  /** {usage, quota, cacheBytes, budget, configuredBytes, reserve}: the browser's figures and ours. */
  estimate() { return this.#ask({ type: 'estimate' }); }

  /** Pinned models are never evicted. */
  pin(model) { return this.#ask({ type: 'pin', model }); }

  unpin(model) { return this.#ask({ type: 'unpin', model }); }

  /** Sets the cache's size limit (MB; null: as much as the quota allows, less a reserve). */
  configure({ cacheSizeMB = null } = {}) { return this.#ask({ type: 'configure', cacheSizeMB }); }

  /**
   * Downloads a whole model for offline use. `onProgress({model, shard, index, count,
   * loadedBytes, totalBytes, source})` after each shard. Resolves to {model, totalBytes,
   * downloadedBytes, stored, notStored}.
   */
  prefetch(nameOrUrl, { onProgress } = {}) {
    const url = this.#acc.manifestUrl(nameOrUrl);
    return this.#ask({ type: 'prefetch', url }, onProgress);
  }

  /**
   * Asks the browser to keep this origin's storage under pressure (`navigator.storage.persist()`,
   * a window-only API, so it is asked here rather than in the service worker). Resolves to
   * {persisted: boolean}: the browser's answer.
   */
  async persist() {
    if (!navigator.storage?.persist) return { persisted: false, reason: 'navigator.storage.persist is not available in this browser' };
    return { persisted: await navigator.storage.persist() };
  }
}
