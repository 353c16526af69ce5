// The demo page. Uses only the public host library.
import { IPFSAccelerate } from '../host-js/ipfs-accelerate.js';

// The default models as `make demo` serves them (see README: "Where models live").
const MODEL_FILES = [
  ['smollm2-135m', 'SmolLM2-135M-Instruct.Q4_1.gguf'],
  ['minilm-l6', 'config.json'],
  ['minilm-l6', 'tokenizer.json'],
  ['minilm-l6', 'model.safetensors'],
];

const $ = (id) => document.getElementById(id);
const show = (id, text, state = 'ok') => {
  const el = $(id);
  el.textContent = text;
  el.className = state;
};
const mib = (n) => `${(n / 1048576).toFixed(1)} MiB`;

const acc = new IPFSAccelerate();

function renderModelRows() {
  const body = $('model-files');
  for (const [model, file] of MODEL_FILES) {
    const row = document.createElement('tr');
    const url = `models/${model}/${file}`;
    row.innerHTML = `<td>${model}</td><td><code>${file}</code></td><td class="size">–</td><td class="hash">–</td><td class="source">–</td><td><button type="button">Fetch &amp; verify</button></td>`;
    const button = row.querySelector('button');
    button.addEventListener('click', async () => {
      button.disabled = true;
      row.querySelector('.source').textContent = 'fetching…';
      try {
        const got = await acc.fetchFile(url);
        row.querySelector('.size').textContent = mib(got.bytes);
        row.querySelector('.hash').textContent = `${got.sha256.slice(0, 16)}…`;
        row.querySelector('.hash').title = got.sha256;
        row.querySelector('.source').textContent = got.source === 'store' ? 'IndexedDB' : 'network';
      } catch (err) {
        row.querySelector('.source').textContent = `${err.name}: ${err.message}`;
        row.querySelector('.source').className = 'source error';
      } finally {
        button.disabled = false;
      }
    });
    body.append(row);
  }
}

async function main() {
  renderModelRows();
  try {
    await acc.ready();
    show('sw-status', `controlling this page (scope ${acc.serviceWorker.scope})`);
    const caps = await acc.getCapabilities();
    show('engine-status', `running · WASM SIMD ${caps.wasmSimd ? 'on' : 'off'} · ${caps.hardwareConcurrency} cores`);
    if (caps.webgpu.available) {
      const a = caps.webgpu.adapter;
      show('webgpu-status', `${[a.vendor, a.architecture, a.description].filter(Boolean).join(' · ') || 'adapter'}${a.isFallbackAdapter ? ' (software fallback)' : ''} · f16 ${a.shaderF16 ? 'yes' : 'no'} · max binding ${mib(a.maxStorageBufferBindingSize)}`);
    } else {
      show('webgpu-status', `unavailable — ${caps.webgpu.reason}; the WASM SIMD backend runs instead`, 'warn');
    }
    if (caps.storage) show('storage-status', `${mib(caps.storage.usage)} used of ${mib(caps.storage.quota)} quota`);
  } catch (err) {
    show('sw-status', `${err.name}: ${err.message}`, 'error');
  }
}

main();
