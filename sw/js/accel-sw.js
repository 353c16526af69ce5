// ipfs-accelerate-web service worker (module worker; the logic is Rust, crate `sw`).
//
// Browsers require the install/activate/fetch listeners to be added synchronously while this
// script first runs, but wasm initialisation is async: so the listeners are registered here and
// each waits on `ready`. The wasm bytes come from a static import (generated at staging,
// `pkg/sw_bg.wasm.js`) rather than a fetch: the browser stores a module service worker's static
// imports with the worker itself, so the service worker starts offline, and a new build of the
// wasm changes an imported script, which is what makes the browser install the new version.
import init, { on_install, on_fetch, on_message } from './pkg/sw.js';
import { wasmBase64 } from './pkg/sw_bg.wasm.js';

const wasmBytes = () => Uint8Array.from(atob(wasmBase64), (c) => c.charCodeAt(0));
const ready = init({ module_or_path: wasmBytes() });

self.addEventListener('install', (event) => {
  const shellList = new URL('app-shell.json', self.registration.scope).href;
  event.waitUntil(ready.then(() => on_install(shellList)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  // Take control of already-open pages at once, so the first visit's model downloads are cached.
  event.waitUntil(self.clients.claim());
});

self.addEventListener('fetch', (event) => {
  event.respondWith(ready.then(() => on_fetch(event.request)));
});

// Cache requests from host-js (`acc.cache.*`): the request is the message, the reply and any
// progress events go back over the MessageChannel port sent with it.
self.addEventListener('message', (event) => {
  const port = event.ports[0];
  if (!port) return; // not one of ours
  const progress = (update) => port.postMessage(update);
  event.waitUntil(
    ready
      .then(() => on_message(JSON.stringify(event.data), progress))
      .catch((err) => ({ type: 'error', error: { name: 'ServiceWorkerError', message: `the service worker failed: ${err}` } }))
      .then((reply) => port.postMessage(reply)),
  );
});
