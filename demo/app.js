// The demo page. Uses only the public host library (host-js/ipfs-accelerate.js): load a model
// with per-shard download progress, chat with streamed tokens, compare sentence embeddings, and
// watch the memory the weights take and the shard cache (usage, quota, budget, per model).
import { IPFSAccelerate } from '../host-js/ipfs-accelerate.js';

const $ = (id) => document.getElementById(id);
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.flat());
  return node;
}
const mib = (n) => {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20 || n === 0) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  return `${(n / 1024).toFixed(1)} KiB`;
};
const setStatus = (node, text, state) => {
  node.textContent = text;
  node.className = state;
};

const acc = new IPFSAccelerate();
/** name → {model, manifest} for every loaded model. */
const loaded = new Map();
/** [ms since page load, resident weight bytes] samples for the memory chart. */
const memorySamples = [[0, 0]];
let chatModel = null;
let embedModel = null;
let stream = null;

// ---- loading ------------------------------------------------------------------------------

/** The components with bytes in each shard, for labelling progress rows. */
function shardLabels(manifest) {
  const shardOf = new Map([...manifest.tensors, ...manifest.files].map((e) => [e.name, e.shard]));
  return new Map(manifest.shards.map((s) => {
    const names = manifest.components.filter((c) => [...c.tensors, ...(c.files ?? [])].some((n) => shardOf.get(n) === s.sha256)).map((c) => c.name);
    return [s.sha256, names.length > 3 ? `${names[0]} … ${names.at(-1)}` : names.join(' · ')];
  }));
}

function renderProgress(manifest) {
  const box = $('progress');
  box.replaceChildren();
  box.hidden = false;
  const rows = new Map();
  for (const [sha, label] of shardLabels(manifest)) {
    const fill = el('div', { className: 'fill' });
    const note = el('span', { className: 'note', textContent: 'waiting' });
    box.append(el('div', { className: 'item' }, el('span', { className: 'name', textContent: label, title: sha }), el('div', { className: 'track' }, fill), note));
    rows.set(sha, { fill, note });
  }
  return rows;
}

async function loadSelected(event) {
  event.preventDefault();
  const name = $('model-select').value;
  const button = $('load-button');
  button.disabled = true;
  const status = $('load-status');
  try {
    setStatus(status, `Fetching the manifest of ${name}…`, 'hint');
    const response = await fetch(acc.manifestUrl(name));
    if (!response.ok) throw new Error(`manifest: HTTP ${response.status}`);
    const manifest = await response.json();
    const rows = renderProgress(manifest);
    const started = performance.now();
    let downloaded = manifest.total_bytes;
    if (acc.serviceWorker.controlled) {
      // Download (or verify from the cache) shard by shard, with progress; the load that
      // follows then reads everything from IndexedDB.
      setStatus(status, `Downloading ${mib(manifest.total_bytes)} in ${manifest.shards.length} verified shards…`, 'hint');
      ({ downloadedBytes: downloaded } = await acc.cache.prefetch(name, {
        onProgress: (p) => {
          const row = rows.get(p.shard);
          row.fill.style.width = '100%';
          row.fill.classList.toggle('store', p.source === 'store');
          row.note.textContent = p.source === 'store' ? 'from cache' : 'downloaded';
        },
      }));
    }
    setStatus(status, 'Loading into the engine…', 'hint');
    loaded.get(name)?.model.unload();
    const model = await acc.loadModel(name, { backend: $('backend-select').value });
    loaded.set(name, { model, manifest });
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const origin = downloaded === 0 ? 'all from this browser\'s cache' : `${mib(downloaded)} downloaded`;
    const notStored = model.info.shards.filter((s) => !s.stored).length;
    const where = model.info.backend === 'webgpu' ? `on WebGPU, ${model.info.gpu.pipelines} pipelines compiled in ${model.info.gpu.pipelineMs.toFixed(0)} ms` : 'on WASM SIMD';
    setStatus(status, `${name} ready in ${seconds} s (${mib(model.info.totalBytes)}, ${origin}, ${where})${notStored ? ` — ${notStored} shard(s) could not be cached and run from memory` : ''}.`, notStored ? 'warn' : 'ok');
    if (model.info.kind === 'text') {
      chatModel = model;
      $('chat-card').hidden = false;
      $('chat-model').textContent = `· ${name}`;
    } else {
      embedModel = model;
      $('embed-card').hidden = false;
      $('embed-model').textContent = `· ${name}`;
    }
    renderMemory();
  } catch (err) {
    setStatus(status, `${err.name}: ${err.message}`, 'error');
  } finally {
    button.disabled = false;
    refreshCache();
  }
}

// ---- chat ---------------------------------------------------------------------------------

const CHAT_OPTIONS = { chat: true, maxTokens: 96, temperature: 0 };

function metricsText(timings, tokens) {
  return `${tokens} tokens · first token ${timings.timeToFirstTokenMs.toFixed(0)} ms · prefill ${timings.prefillTokensPerS.toFixed(1)} tok/s · decode ${timings.decodeTokensPerS.toFixed(1)} tok/s`;
}

async function send(event) {
  event.preventDefault();
  const prompt = $('chat-prompt').value.trim();
  if (!prompt || !chatModel || stream) return;
  const log = $('chat-log');
  log.append(el('div', { className: 'msg user', textContent: prompt }));
  const reply = el('div', { className: 'msg assistant streaming' });
  log.append(reply);
  log.scrollTop = log.scrollHeight;
  $('send-button').disabled = true;
  try {
    if (typeof chatModel.generateStream === 'function') {
      stream = chatModel.generateStream(prompt, CHAT_OPTIONS);
      $('pause-button').disabled = false;
      $('stop-button').disabled = false;
      const started = performance.now();
      let count = 0;
      for await (const token of stream) {
        reply.textContent += token.text;
        count += 1;
        // The KV cache grows with every token: show it in the memory view now and then.
        if (count % 16 === 1) renderMemory();
        $('metrics').textContent = `${count} tokens · ${(count / ((performance.now() - started) / 1000)).toFixed(1)} tok/s so far`;
        log.scrollTop = log.scrollHeight;
      }
      const result = await stream.result;
      if (result) $('metrics').textContent = metricsText(result.timings, result.tokenIds.length);
      renderMemory();
    } else {
      $('metrics').textContent = 'generating…';
      const result = await chatModel.generate(prompt, CHAT_OPTIONS);
      reply.textContent = result.text;
      $('metrics').textContent = metricsText(result.timings, result.tokenIds.length);
    }
  } catch (err) {
    if (err.name === 'AbortError') reply.append(el('span', { className: 'muted', textContent: ' [stopped]' }));
    else reply.append(el('span', { className: 'error', textContent: `\n${err.name}: ${err.message}` }));
  } finally {
    reply.classList.remove('streaming');
    stream = null;
    $('send-button').disabled = false;
    $('pause-button').disabled = true;
    $('pause-button').textContent = 'Pause';
    $('stop-button').disabled = true;
  }
}

function togglePause() {
  if (!stream) return;
  const button = $('pause-button');
  if (button.textContent === 'Pause') {
    stream.pause();
    button.textContent = 'Resume';
  } else {
    stream.resume();
    button.textContent = 'Pause';
  }
}

// ---- embeddings ---------------------------------------------------------------------------

async function compare() {
  if (!embedModel) return;
  const out = $('embed-result');
  try {
    const started = performance.now();
    const { embeddings } = await embedModel.embed([$('embed-a').value, $('embed-b').value]);
    const cosine = embeddings[0].reduce((s, x, i) => s + x * embeddings[1][i], 0); // unit vectors
    out.textContent = `cosine similarity ${cosine.toFixed(3)} · ${(performance.now() - started).toFixed(0)} ms`;
  } catch (err) {
    out.textContent = `${err.name}: ${err.message}`;
  }
}

// ---- memory -------------------------------------------------------------------------------

/** Bytes the engine holds by component group, over every loaded model (its memory ledger). */
async function residentGroups() {
  const groups = new Map();
  for (const { model, manifest } of loaded.values()) {
    const usage = await model.getMemoryUsage();
    // Several models at once: prefix the family (smollm2, minilm) to tell their rows apart.
    const prefix = loaded.size > 1 ? `${manifest.name.split('-')[0]} ` : '';
    for (const c of usage.components) {
      if (!c.bytes) continue; // unloaded, or on the GPU (counted under "GPU buffers")
      const group = `${prefix}${c.name.startsWith('layer.') ? 'layers' : c.name}`;
      groups.set(group, (groups.get(group) ?? 0) + c.bytes);
    }
    if (usage.kvCacheBytes) groups.set(`${prefix}KV cache`, usage.kvCacheBytes);
    // On WebGPU: the GPU's copy of the weights, its KV cache and activations (GPU memory).
    if (usage.gpuBytes) groups.set(`${prefix}GPU buffers`, usage.gpuBytes);
  }
  return groups;
}

async function renderMemory() {
  let groups;
  try {
    groups = await residentGroups();
  } catch (err) {
    // A model unloaded meanwhile: the next render shows the new state.
    console.warn('memory view:', err);
    return;
  }
  const total = [...groups.values()].reduce((a, b) => a + b, 0);
  memorySamples.push([performance.now(), total]);
  const bars = $('memory-bars');
  bars.replaceChildren();
  if (!total) {
    bars.append(el('p', { className: 'muted', textContent: 'No model loaded.' }));
  }
  for (const [name, bytes] of [...groups].sort((a, b) => b[1] - a[1])) {
    const fill = el('div', { className: 'fill' });
    fill.style.width = `${(100 * bytes) / total}%`;
    bars.append(el('div', { className: 'bar' }, el('span', { textContent: name, title: name }), el('div', { className: 'track' }, fill), el('span', { className: 'size', textContent: mib(bytes) })));
  }
  if (total) bars.append(el('div', { className: 'bar total' }, el('span', { textContent: 'total' }), el('span'), el('span', { className: 'size', textContent: mib(total) })));
  drawChart();
}

function drawChart() {
  const svg = $('memory-chart');
  const now = performance.now();
  const peak = Math.max(...memorySamples.map(([, b]) => b), 1);
  const x = (t) => (300 * t) / Math.max(now, 1);
  const y = (b) => 78 - (70 * b) / peak;
  // A step line: the resident bytes change only when a model loads or unloads.
  let [d, previous] = ['M0,78', 0];
  for (const [t, bytes] of memorySamples) {
    d += ` L${x(t).toFixed(1)},${y(previous).toFixed(1)} L${x(t).toFixed(1)},${y(bytes).toFixed(1)}`;
    previous = bytes;
  }
  d += ` L300,${y(previous).toFixed(1)} L300,78 Z`;
  svg.innerHTML = `<path class="area" d="${d}"/>`;
}

// ---- cache --------------------------------------------------------------------------------

async function refreshCache() {
  if (!acc.serviceWorker.controlled) {
    $('cache-summary').textContent = 'No service worker controls this page: nothing is cached.';
    return;
  }
  try {
    const [estimate, list, persisted] = await Promise.all([acc.cache.estimate(), acc.cache.list(), navigator.storage?.persisted?.() ?? false]);
    $('cache-meter').style.width = `${Math.min(100, (100 * estimate.cacheBytes) / Math.max(estimate.budget, 1))}%`;
    $('cache-summary').textContent = `${mib(estimate.cacheBytes)} of shards cached · budget ${mib(estimate.budget)} · origin uses ${mib(estimate.usage)} of ${mib(estimate.quota)} · storage ${persisted ? 'kept (persistent)' : 'may be cleared under pressure'}`;
    const body = $('cache-models');
    body.replaceChildren();
    for (const m of list.models) {
      const actions = el('td');
      const act = (label, fn) => {
        const b = el('button', { type: 'button', className: 'small secondary', textContent: label });
        b.addEventListener('click', async () => {
          b.disabled = true;
          try {
            await fn();
          } finally {
            refreshCache();
          }
        });
        actions.append(b, ' ');
      };
      if (!m.complete) act('Make offline', () => acc.cache.prefetch(m.name));
      act(m.pinned ? 'Unpin' : 'Pin', () => (m.pinned ? acc.cache.unpin(m.name) : acc.cache.pin(m.name)));
      act('Evict', () => acc.cache.evict(m.name));
      body.append(el('tr', {}, el('td', { textContent: `${m.pinned ? '📌 ' : ''}${m.name}` }), el('td', { textContent: `${mib(m.storedBytes)} / ${mib(m.totalBytes)}` }), actions));
    }
    const ready = list.models.filter((m) => m.complete).length;
    setStatus($('pill-network'), `${ready} model${ready === 1 ? '' : 's'} offline-ready`, ready ? 'ok' : 'pending');
  } catch (err) {
    $('cache-summary').textContent = `${err.name}: ${err.message}`;
  }
}

async function persist() {
  const { persisted } = await acc.cache.persist();
  $('persist-button').textContent = persisted ? 'Storage kept ✓' : 'Not granted';
  refreshCache();
}

async function clearCache() {
  await acc.cache.clear();
  refreshCache();
}

// ---- capabilities -------------------------------------------------------------------------

function renderCapabilities(caps) {
  const a = caps.webgpu.adapter;
  const rows = [
    ['Engine', `WASM SIMD ${caps.wasmSimd ? 'on' : 'off'} · ${caps.hardwareConcurrency} cores · ${caps.crossOriginIsolated ? 'cross-origin isolated' : 'not isolated (1 thread)'}`],
    ['WebGPU', caps.webgpu.available ? `${[a.vendor, a.architecture, a.description].filter(Boolean).join(' · ') || 'adapter'}${a.isFallbackAdapter ? ' (software)' : ''} · f16 ${a.shaderF16 ? 'yes' : 'no'} · subgroups ${a.subgroups ? 'yes' : 'no'}` : `unavailable: ${caps.webgpu.reason}`],
    ['WebNN', caps.webnn ? 'present' : 'absent'],
    ['Memory', caps.deviceMemoryGB ? `${caps.deviceMemoryGB} GB (device)` : 'not reported'],
  ];
  $('caps').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { textContent: k }), el('dd', { textContent: v })]));
  // WebGPU is offered when the browser has an adapter; a software one (SwiftShader, llvmpipe)
  // is slower than the WASM SIMD path, so it is offered but says so, and 'auto' skips it.
  const gpu = $('backend-select').querySelector('[value=webgpu]');
  gpu.disabled = !caps.webgpu.available;
  gpu.textContent = !caps.webgpu.available ? 'WebGPU (unavailable here)' : a.isFallbackAdapter ? 'WebGPU (software adapter: slower than WASM here)' : 'WebGPU';
}

async function main() {
  $('load-form').addEventListener('submit', loadSelected);
  $('chat-form').addEventListener('submit', send);
  $('pause-button').addEventListener('click', togglePause);
  $('stop-button').addEventListener('click', () => stream?.cancel('stopped by the user'));
  $('embed-button').addEventListener('click', compare);
  $('persist-button').addEventListener('click', persist);
  $('clear-button').addEventListener('click', clearCache);
  try {
    await acc.ready();
    setStatus($('pill-sw'), acc.serviceWorker.controlled ? 'cache: service worker on' : 'cache: off', acc.serviceWorker.controlled ? 'ok' : 'warn');
    const caps = await acc.getCapabilities();
    setStatus($('pill-engine'), `engine: WASM SIMD${caps.wasmSimd ? '' : ' off'}`, 'ok');
    renderCapabilities(caps);
  } catch (err) {
    setStatus($('pill-sw'), `${err.name}: ${err.message}`, 'error');
  }
  refreshCache();
  setInterval(drawChart, 2000); // the time axis moves on even when nothing loads
}

main();
