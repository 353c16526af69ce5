// ipfs-accelerate-web dedicated worker (module worker; the engine is Rust, crate `worker`).
//
// Every host message is handed to the engine as JSON and its JSON reply posted back; the
// protocol is defined in worker/src/protocol.rs and mirrored by host-js/protocol.js. Messages
// that arrive while the wasm is still loading simply wait for it.
import init, { handle_message } from './pkg/worker.js';

const ready = init({ module_or_path: new URL('./pkg/worker_bg.wasm', import.meta.url) });

self.onmessage = async ({ data }) => {
  try {
    await ready;
  } catch (err) {
    self.postMessage({
      id: data?.id ?? 0,
      type: 'error',
      error: { name: 'WorkerInitError', message: `the engine's wasm failed to load (${err}); check that pkg/worker_bg.wasm is served as application/wasm` },
    });
    return;
  }
  self.postMessage(JSON.parse(await handle_message(JSON.stringify(data))));
};
