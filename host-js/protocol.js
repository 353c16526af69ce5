// The host side of the host <-> worker protocol. Mirrors worker/src/protocol.rs field for field;
// both sides' tests parse tests/fixtures/protocol.json.
//
//   host -> worker   {id, type: 'capabilities'} | {id, type: 'fetchFile', url}
//   worker -> host   {id, type: 'result', value} | {id, type: 'error', error: {name, message}}

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

/** Rebuilds a named error from a worker reply's `{name, message}`. */
export function errorFromPayload({ name, message }) {
  return new AccelerateError(name || 'AccelerateError', message || 'unknown error from the engine worker');
}

/** Request builders: the only place message shapes are spelled out on this side. */
export const requests = {
  capabilities: () => ({ type: 'capabilities' }),
  fetchFile: (url) => ({ type: 'fetchFile', url }),
};

/**
 * Sends requests to a Worker (anything with postMessage/addEventListener) and resolves each
 * with the reply carrying its id. A crashed worker rejects everything pending.
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
    if (this.crashed) return Promise.reject(this.crashed);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, ...body });
    });
  }

  #onReply(reply) {
    const waiter = this.pending.get(reply?.id);
    if (!waiter) return; // a reply for a request nobody waits for (e.g. id 0: unparseable request)
    this.pending.delete(reply.id);
    if (reply.type === 'result') waiter.resolve(reply.value);
    else if (reply.type === 'error') waiter.reject(errorFromPayload(reply.error ?? {}));
    else waiter.reject(new AccelerateError('ProtocolError', `unexpected reply type ${JSON.stringify(reply.type)}`));
  }
}
