// Turns one `make bench` run's raw results into the published ones:
//
//   node scripts/bench-report.mjs RAW_DIR OUT_PREFIX
//
// RAW_DIR holds native-smollm2-<t>.json and native-minilm-<t>.json (`accel bench --json`),
// optionally llama-<t>.json (`llama-bench -o json`), and browser.json (scripts/bench-browser.mjs).
// Writes OUT_PREFIX.json (every row with its samples, the machine, the ratios), OUT_PREFIX.md
// (the tables) and OUT_PREFIX.svg (prefill and decode tokens/s per engine), prints the tables,
// and prints the ratios that matter last.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';

const [rawDir, outPrefix] = process.argv.slice(2);
if (!rawDir || !outPrefix) {
  console.error('usage: node scripts/bench-report.mjs RAW_DIR OUT_PREFIX');
  process.exit(2);
}
const read = (name) => (existsSync(join(rawDir, name)) ? JSON.parse(readFileSync(join(rawDir, name), 'utf8')) : null);

/** A single number as a metric (llama-bench reports mean ± stddev, not samples). */
const point = (value, extra = {}) => ({ median: value, min: value, max: value, samples: [value], ...extra });

const rows = [];
for (const t of [1, 2]) {
  const native = read(`native-smollm2-${t}.json`);
  for (const r of native?.results ?? []) {
    rows.push({
      engine: 'accel', where: 'native', backend: 'cpu', path: r.activations, threads: native.threads, model: 'smollm2-135m',
      metrics: { load_ms: point(native.load_ms), ttft_ms: r.time_to_first_token_ms, prefill_tokens_per_s: r.prefill_tokens_per_s, decode_tokens_per_s: r.decode_tokens_per_s, peak_rss_bytes: point(native.peak_rss_bytes) },
    });
  }
  const minilm = read(`native-minilm-${t}.json`);
  if (minilm) {
    rows.push({
      engine: 'accel', where: 'native', backend: 'cpu', path: 'f32 weights', threads: minilm.threads, model: 'minilm-l6',
      metrics: { load_ms: point(minilm.load_ms), embeddings_per_s: minilm.embeddings_per_s, peak_rss_bytes: point(minilm.peak_rss_bytes) },
    });
  }
  const llama = read(`llama-${t}.json`);
  if (llama) {
    const prefill = llama.find((r) => r.n_prompt > 0 && r.n_gen === 0);
    const decode = llama.find((r) => r.n_gen > 0 && r.n_prompt === 0);
    rows.push({
      // The opt-in build comes from the llama-cpp-python sdist, which has no git commit.
      engine: 'llama.cpp', where: 'native', backend: 'cpu', path: prefill?.build_commit && prefill.build_commit !== 'unknown' ? `build ${prefill.build_commit}` : '', threads: t, model: 'smollm2-135m',
      metrics: {
        prefill_tokens_per_s: { ...point(prefill.avg_ts), samples: prefill.samples_ts ?? [prefill.avg_ts], stddev: prefill.stddev_ts },
        decode_tokens_per_s: { ...point(decode.avg_ts), samples: decode.samples_ts ?? [decode.avg_ts], stddev: decode.stddev_ts },
      },
    });
  }
}
const browser = read('browser.json');
for (const run of browser?.runs ?? []) {
  rows.push({ engine: run.engine === 'accel-wasm' ? 'accel' : run.engine, where: 'browser', backend: run.engine === 'accel-wasm' ? 'wasm' : 'wasm (llama.cpp)', path: '', threads: run.threads, model: run.model, metrics: run.metrics ?? {}, notes: run.notes });
}

const find = (pred) => rows.find(pred);
const median = (row, metric) => row?.metrics?.[metric]?.median;
const ratio = (label, num, den, target) => ({ label, value: num && den ? num / den : null, target });
const oursBrowser = find((r) => r.where === 'browser' && r.engine === 'accel' && r.model === 'smollm2-135m');
const wllama1 = find((r) => r.engine === 'wllama' && r.threads === 1 && r.model === 'smollm2-135m');
const ratios = [
  ratio('browser WASM decode ÷ wllama 1-thread decode', median(oursBrowser, 'decode_tokens_per_s'), median(wllama1, 'decode_tokens_per_s'), 3.0),
  ratio('browser WASM prefill ÷ wllama 1-thread prefill', median(oursBrowser, 'prefill_tokens_per_s'), median(wllama1, 'prefill_tokens_per_s'), 3.0),
  ratio('browser cold load ÷ warm load (IndexedDB)', median(oursBrowser, 'cold_load_ms'), median(oursBrowser, 'warm_load_ms'), 3.0),
];
for (const t of [1, 2]) {
  const ours = find((r) => r.where === 'native' && r.engine === 'accel' && r.path === 'int16' && r.threads === t);
  const peer = find((r) => r.engine === 'llama.cpp' && r.threads === t);
  if (peer) ratios.push(ratio(`native decode ÷ llama.cpp decode, ${t} thread(s)`, median(ours, 'decode_tokens_per_s'), median(peer, 'decode_tokens_per_s'), 0.8));
}

// ---- tables ---------------------------------------------------------------------------------

const fmt = (m, digits = 1, scale = 1) => {
  if (!m || m.median == null) return '—';
  const v = (x) => (x / scale).toFixed(digits);
  return m.min !== m.max ? `${v(m.median)} (${v(m.min)}–${v(m.max)})` : v(m.median);
};
const label = (r) => `${r.engine}${r.path ? ` ${r.path}` : ''}`;
const llmRows = rows.filter((r) => r.model === 'smollm2-135m');
const embRows = rows.filter((r) => r.model === 'minilm-l6');
const machine = browser?.machine ?? { cpu: cpus()[0]?.model ?? '?', cores: cpus().length };
const date = new Date().toISOString();
const md = [
  `# Benchmark ${date.slice(0, 10)}`,
  '',
  `${machine.cpu} (${machine.cores} cores)${browser?.browser ? `, ${browser.browser}` : ''}. Command: \`make bench\`. Medians with (min–max) over the repetitions.`,
  '',
  '## SmolLM2-135M Q4_1 — 128-token prompt, 64 greedy tokens',
  '',
  '| engine | where | backend | threads | prefill tok/s | decode tok/s | first token ms | cold load ms | warm load ms | peak RSS MiB |',
  '|---|---|---|---|---|---|---|---|---|---|',
  ...llmRows.map((r) => `| ${label(r)} | ${r.where} | ${r.backend} | ${r.threads} | ${fmt(r.metrics.prefill_tokens_per_s)} | ${fmt(r.metrics.decode_tokens_per_s)} | ${fmt(r.metrics.ttft_ms, 0)} | ${fmt(r.metrics.cold_load_ms ?? r.metrics.load_ms, 0)} | ${fmt(r.metrics.warm_load_ms, 0)} | ${fmt(r.metrics.peak_rss_bytes, 0, 1 << 20)} |`),
  '',
  '## MiniLM-L6 — sentence embeddings',
  '',
  '| engine | where | threads | sentences/s | load ms | peak RSS MiB |',
  '|---|---|---|---|---|---|',
  ...embRows.map((r) => `| ${label(r)} | ${r.where} | ${r.threads} | ${fmt(r.metrics.embeddings_per_s)} | ${fmt(r.metrics.cold_load_ms ?? r.metrics.load_ms, 0)} | ${fmt(r.metrics.peak_rss_bytes, 0, 1 << 20)} |`),
  '',
  '## Ratios',
  '',
  '| ratio | value | target |',
  '|---|---|---|',
  ...ratios.map((q) => `| ${q.label} | ${q.value == null ? 'not measured' : `${q.value.toFixed(2)}×`} | ≥ ${q.target}× ${q.value == null ? '' : q.value >= q.target ? '✓' : '✗'} |`),
  '',
  ...rows.filter((r) => r.notes).map((r) => `- ${label(r)} (${r.where}, ${r.threads} thread(s), ${r.model}): ${r.notes}`),
].join('\n');

// ---- chart ----------------------------------------------------------------------------------

function chart() {
  const bars = llmRows.filter((r) => median(r, 'decode_tokens_per_s') || median(r, 'prefill_tokens_per_s'));
  const [rowH, left, panel, gap, top] = [26, 250, 300, 40, 46];
  const width = left + 2 * panel + gap + 20;
  const height = top + bars.length * rowH + 20;
  const panels = [['prefill tokens/s', 'prefill_tokens_per_s', '#3957d6'], ['decode tokens/s', 'decode_tokens_per_s', '#17803d']];
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`, `<rect width="100%" height="100%" fill="#fff"/>`, `<text x="10" y="20" font-size="14" font-weight="bold">SmolLM2-135M Q4_1 on ${esc(machine.cpu)} — ${date.slice(0, 10)}</text>`];
  panels.forEach(([title, metric, colour], p) => {
    const x0 = left + p * (panel + gap);
    const peak = Math.max(...bars.map((r) => median(r, metric) ?? 0), 1);
    parts.push(`<text x="${x0}" y="${top - 8}" font-weight="bold">${title}</text>`);
    bars.forEach((r, i) => {
      const v = median(r, metric);
      const y = top + i * rowH;
      if (p === 0) parts.push(`<text x="${left - 8}" y="${y + 15}" text-anchor="end">${esc(`${label(r)} · ${r.where} · ${r.threads}t`)}</text>`);
      if (v == null) return parts.push(`<text x="${x0}" y="${y + 15}" fill="#888">—</text>`);
      const w = Math.max(1, ((panel - 50) * v) / peak);
      parts.push(`<rect x="${x0}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${colour}" opacity="${r.engine === 'accel' ? 1 : 0.45}"/>`, `<text x="${x0 + w + 4}" y="${y + 15}">${v.toFixed(1)}</text>`);
    });
  });
  parts.push('</svg>');
  return parts.join('\n');
}

writeFileSync(`${outPrefix}.json`, `${JSON.stringify({ date, command: process.env.QUICK === '1' ? 'make bench-quick' : 'make bench', machine, browser: browser?.browser ?? null, rows, ratios }, null, 1)}\n`);
writeFileSync(`${outPrefix}.md`, `${md}\n`);
writeFileSync(`${outPrefix}.svg`, `${chart()}\n`);
console.log(`\n${md}\n`);
console.log(`written: ${outPrefix}.json, .md, .svg\n`);
console.log('The ratios that matter:');
for (const q of ratios) console.log(`  ${q.label}: ${q.value == null ? 'not measured' : `${q.value.toFixed(2)}×`} (target ≥ ${q.target}×)`);
