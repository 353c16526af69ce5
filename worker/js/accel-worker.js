// ipfs-accelerate-web dedicated worker (module worker; the engine is Rust, crate `worker`).
//
// Every host message is handed to the engine as JSON and its JSON reply posted back; the
// protocol is defined in worker/src/protocol.rs and mirrored by host-js/protocol.js. Messages
// that arrive while the wasm is still loading simply wait for it.
//
// Messages are handled concurrently: each one is its own call into the engine, and a
// generation gives way to the event loop between steps, so `pause` / `resume` / `cancel` (and
// any other request) are answered while it runs. A generateStream's progress events (`token`,
// `metrics`) are posted as they happen, through `emit`, before its final reply.
import init, { handle_message_with_events } from './pkg/worker.js';

const ready = init({ module_or_path: new URL('./pkg/worker_bg.wasm', import.meta.url) });

const emit = (json) => self.postMessage(JSON.parse(json));

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
  let reply;
  try {
    reply = JSON.parse(await handle_message_with_events(JSON.stringify(data), emit));
  } catch (err) {
    // The engine answers every failure as a reply; reaching here is a bug (a panic), but the
    // request still gets a named error rather than hanging.
    reply = { id: data?.id ?? 0, type: 'error', error: { name: 'EnginePanicError', message: `the engine failed unexpectedly: ${err}` } };
  }
  self.postMessage(reply);
};
