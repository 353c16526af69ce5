// Browser benchmark: our engine (accel-wasm, through the public host API) against the peer
// wllama (npm @wllama/wllama, llama.cpp compiled to wasm) on the same SmolLM2-135M Q4_1 GGUF,
// in the same headless Chromium on this machine, in one run.
//
//   node scripts/bench-browser.mjs --out FILE.json [--reps N] [--quick] [--only LIST]
//
//   --reps N     trials per engine (default 3); each trial is a fresh browser profile
//   --quick      one trial per engine (no cold-load repeats)
//   --only LIST  comma-separated subset of: accel, minilm, wllama1, wllama2 (default: all)
//
// Needs the staged site (`make web`: dist/ with /models/smollm2-135m/ and its GGUF) and
// `npm ci` (playwright-core, @wllama/wllama). Engines, one browser launch per trial:
//
//   accel-wasm  smollm2-135m  /test/harness.html, window.accel (the host library); single thread
//                             (our engine has no wasm threads), WASM SIMD CPU path
//   accel-wasm  minilm-l6     the same page; embeddings of a batch of 16 sentences
//   wllama 1    smollm2-135m  /bench/wllama.html (bench/), n_threads 1, n_gpu_layers 0, no headers
//   wllama 2    smollm2-135m  the same page served with COOP/COEP (cross-origin isolated), n_threads 2
//
// Every browser runs without --enable-unsafe-webgpu (launchBrowser({webgpu: false})), so both
// engines take their CPU paths. A trial is: fresh profile → page → cold load (empty cache,
// network from the local server) → page reload → warm load (ours: shards from IndexedDB via the
// service worker; wllama: the GGUF from its OPFS cache) → one short warm-up generation (8 tokens;
// lets V8 tier the wasm up) → one measured generation of 64 greedy tokens after a 128-token prompt
// (MiniLM: one warm-up batch, then EMBED_REPS timed batches). Load times are page-side wall clock
// from constructing the engine to a loaded model. Peak memory is the peak, over the whole trial,
// of the summed RSS of every Chromium process (descendants of this node process), read from
// /proc/<pid>/statm every ~100 ms.
//
// Results: the JSON at --out (see `report` below for the shape), a summary on stdout, and last
// the three ratios issue 8 asks for. An engine that fails is recorded (named error in its notes)
// and the run goes on.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { DIST, REPO, launchBrowser } from '../tests/lib/browser.mjs';
import { startServer } from './serve.mjs';

const MODEL_GGUF = '/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf';
const WLLAMA_DIR = join(REPO, 'node_modules', '@wllama', 'wllama');
const PROMPT_TOKENS = 128;
const GEN_TOKENS = 64;
const EMBED_REPS = 5;
const SAMPLE_MS = 100;
const ISOLATION = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };

// 115 words of plain prose that SmolLM2's tokenizer turns into exactly 128 tokens (checked at run
// time against promptTokenIds; if a tokenizer change breaks that, the first accel trial searches
// LONG_TEXT for a word count that gives 128 and every engine uses that instead). Greedy decoding
// of it runs 64 tokens without reaching EOS.
const LONG_TEXT = 'The old lighthouse stood at the edge of the cliff, its white paint peeling after decades of salt and wind. Every evening the keeper climbed the narrow spiral staircase, one hundred and twelve steps, to light the great lamp that warned ships away from the rocks below. He had done this for thirty years, through storms that shook the glass and calm nights when the sea lay flat as a mirror. The village below knew him only as a quiet man who bought bread on Tuesdays and never missed a night. But the keeper kept a journal, and in it he wrote about every ship he saw, every storm he survived, and every strange light he noticed far out on the water. Nobody in the village had ever read a single page of it.';
const PROMPT_WORDS = 115;
const WARMUP_PROMPT = 'Once upon a time';
const SENTENCES = [
  'The cat sits on the mat.',
  'A dog is playing in the park.',
  'Stock markets fell sharply on Monday after the announcement.',
  'She baked a chocolate cake for her brother\'s birthday.',
  'The train to Berlin leaves at seven in the morning.',
  'Quantum computers use qubits instead of classical bits.',
  'He forgot his umbrella and got soaked in the rain.',
  'The museum opens a new exhibition about ancient Egypt next week.',
  'Regular exercise improves both mood and sleep quality.',
  'The committee postponed its decision until further notice.',
  'Fresh bread smells wonderful in the early morning.',
  'The spacecraft entered orbit around Mars after a seven month journey.',
  'Please remember to water the plants while I am away.',
  'The orchestra played Beethoven\'s ninth symphony to a full house.',
  'Heavy traffic delayed the delivery by two hours.',
  'Children learn languages faster than most adults do.',
];

// ---------------------------------------------------------------------------------------------
// Small helpers.

function parseArgs(argv) {
  const opts = { out: null, reps: 3, quick: false, only: ['accel', 'minilm', 'wllama1', 'wllama2'] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--out') opts.out = argv[++i];
    else if (a === '--reps') opts.reps = Number(argv[++i]);
    else if (a === '--quick') opts.quick = true;
    else if (a === '--only') opts.only = argv[++i].split(',').map((s) => s.trim()).filter(Boolean);
    else if (a === '--help' || a === '-h') {
      console.log('usage: node scripts/bench-browser.mjs --out FILE.json [--reps N] [--quick] [--only accel,minilm,wllama1,wllama2]');
      process.exit(0);
    } else {
      console.error(`error: UsageError: unknown argument ${a}`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(opts.reps) || opts.reps < 1) {
    console.error('error: UsageError: --reps takes a positive integer');
    process.exit(2);
  }
  const known = ['accel', 'minilm', 'wllama1', 'wllama2'];
  const unknown = opts.only.filter((name) => !known.includes(name));
  if (unknown.length || !opts.only.length) {
    console.error(`error: UsageError: --only takes a comma-separated subset of ${known.join(',')} (got ${unknown.join(',') || 'nothing'})`);
    process.exit(2);
  }
  if (opts.quick) opts.reps = 1;
  opts.out ??= join(REPO, 'bench-results', `browser-${new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}.json`);
  return opts;
}

const log = (...args) => console.error('[bench-browser]', ...args);

/** Rejects with a named TimeoutError after `ms` (the browser is closed by the caller's finally). */
function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`${what} took longer than ${ms / 1000} s`), { name: 'TimeoutError' })), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** {samples, median, min, max}, or undefined when there are no samples. */
function summarize(samples, digits) {
  const xs = samples.filter((x) => Number.isFinite(x));
  if (!xs.length) return undefined;
  const round = (x) => (digits === 0 ? Math.round(x) : Number(x.toFixed(digits)));
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { samples: xs.map(round), median: round(median), min: round(sorted[0]), max: round(sorted[sorted.length - 1]) };
}

/** `Name: message` on one line; Playwright's `page.evaluate: XError: …` is unwrapped to XError. */
function errorText(err) {
  let message = String(err?.message ?? err).split('\n')[0].replace(/^page\.\w+: /, '');
  let name = err?.name ?? 'Error';
  const inner = /^([A-Z]\w*(?:Error|Exception)): (.*)$/.exec(message);
  if (inner) [, name, message] = inner;
  return `${name}: ${message}`;
}

// ---------------------------------------------------------------------------------------------
// Peak RSS of the Chromium process tree (all descendants of this node process).

const PAGE_SIZE = (() => {
  try {
    return Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).trim()) || 4096;
  } catch {
    return 4096;
  }
})();

function descendants(root) {
  const children = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(name));
    } catch { /* the process ended meanwhile */ }
  }
  const out = [];
  const stack = [...(children.get(root) ?? [])];
  while (stack.length) {
    const pid = stack.pop();
    out.push(pid);
    stack.push(...(children.get(pid) ?? []));
  }
  return out;
}

function treeRss() {
  let bytes = 0;
  let processes = 0;
  for (const pid of descendants(process.pid)) {
    try {
      bytes += Number(readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ')[1]) * PAGE_SIZE;
      processes++;
    } catch { /* gone */ }
  }
  return { bytes, processes };
}

/** Summed PSS (shared pages split between their processes) of the tree: ~30 ms, so read rarely. */
function treePss() {
  let bytes = 0;
  for (const pid of descendants(process.pid)) {
    try {
      bytes += Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0) * 1024;
    } catch { /* gone */ }
  }
  return bytes;
}

function rssSampler() {
  let peak = 0;
  let peakProcesses = 0;
  const sample = () => {
    const { bytes, processes } = treeRss();
    if (bytes > peak) [peak, peakProcesses] = [bytes, processes];
    return bytes;
  };
  sample();
  const timer = setInterval(sample, SAMPLE_MS);
  return {
    now: sample,
    stop() {
      clearInterval(timer);
      sample();
      return { peak, peakProcesses };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// One trial = one browser launch with a fresh profile.

async function openPage(context, url, readyFlag) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => { if (msg.type() === 'error') errors.push(`console: ${msg.text().slice(0, 300)}`); });
  page.on('crash', () => errors.push('page crashed'));
  await withTimeout(page.goto(url), 60_000, `opening ${url}`);
  await withTimeout(page.waitForFunction((flag) => window[flag] === true, readyFlag), 60_000, `${url} ready`);
  return { page, errors };
}

async function reload(page, readyFlag) {
  await withTimeout(page.reload(), 60_000, 'page reload');
  await withTimeout(page.waitForFunction((flag) => window[flag] === true, readyFlag), 60_000, 'page ready after reload');
}

/** Runs `body(ctx)` in a fresh browser + RSS sampler; returns {result, peakRss, peakProcesses}. */
async function withBrowser(body) {
  const sampler = rssSampler();
  let browser;
  try {
    browser = await withTimeout(launchBrowser({ webgpu: false }), 60_000, 'launching Chromium');
    const result = await body({ context: browser.context, sampler });
    const { peak, peakProcesses } = sampler.stop();
    return { result, peakRss: peak, peakProcesses };
  } finally {
    sampler.stop();
    await browser?.close().catch(() => {});
  }
}

/**
 * Our engine's cold load (fresh profile: every shard from the network) then, after a page
 * reload, its warm load (from IndexedDB); the model stays in `window.benchModel`.
 */
async function coldAndWarmLoad(page, name) {
  const load = () => withTimeout(page.evaluate(async (name) => {
    const t0 = performance.now();
    const acc = new window.accel.IPFSAccelerate();
    const model = await acc.loadModel(name);
    window.benchModel = model;
    return { ms: performance.now() - t0, info: model.info };
  }, name), 180_000, `accel loadModel(${name})`);
  const cold = await load();
  if (!cold.info.shards.every((s) => s.source === 'network')) throw Object.assign(new Error(`cold load took shards from ${cold.info.shards.map((s) => s.source)}`), { name: 'NotColdError' });
  await reload(page, 'harnessReady');
  const warm = await load();
  return { cold, warm, warmFromStore: warm.info.shards.every((s) => s.source === 'store') };
}

/** Our engine, a text model: cold + warm load, warm-up, one measured generation. */
async function accelTextTrial(server, state) {
  return withBrowser(async ({ context, sampler }) => {
    const { page, errors } = await openPage(context, `${server.url}/test/harness.html`, 'harnessReady');
    const baselineRss = sampler.now();
    const baselinePss = treePss();
    try {
      const { cold, warm, warmFromStore } = await coldAndWarmLoad(page, 'smollm2-135m');

      if (!state.prompt) state.prompt = await findPrompt(page);
      const gen = await withTimeout(page.evaluate(async ({ prompt, warmup, maxTokens }) => {
        const model = window.benchModel;
        await model.generate(warmup, { maxTokens: 8, temperature: 0 });
        const t0 = performance.now();
        const out = await model.generate(prompt, { maxTokens, temperature: 0 });
        return { wallMs: performance.now() - t0, promptTokens: out.promptTokenIds.length, tokens: out.tokenIds.length, stopReason: out.stopReason, timings: out.timings };
      }, { prompt: state.prompt, warmup: WARMUP_PROMPT, maxTokens: GEN_TOKENS }), 300_000, 'accel generate');
      return { cold, warm, warmFromStore, gen, baselineRss, baselinePss, endPss: treePss() };
    } catch (err) {
      err.pageErrors = errors;
      throw err;
    }
  });
}

/** The 128-token prompt: LONG_TEXT's first PROMPT_WORDS words, else a word count that fits. */
async function findPrompt(page) {
  return withTimeout(page.evaluate(async ({ text, words, target }) => {
    const model = window.benchModel;
    const all = text.split(' ');
    const count = async (n) => (await model.generate(all.slice(0, n).join(' '), { maxTokens: 1, temperature: 0 })).promptTokenIds.length;
    if (await count(words) === target) return all.slice(0, words).join(' ');
    let [lo, hi] = [1, all.length]; // smallest n with count(n) >= target
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (await count(mid) >= target) hi = mid; else lo = mid + 1;
    }
    if (await count(lo) !== target) throw Object.assign(new Error(`no prefix of the prompt text tokenizes to exactly ${target} tokens`), { name: 'PromptError' });
    return all.slice(0, lo).join(' ');
  }, { text: LONG_TEXT, words: PROMPT_WORDS, target: PROMPT_TOKENS }), 120_000, 'finding the 128-token prompt');
}

/** Our engine, MiniLM: cold + warm load, warm-up batch, EMBED_REPS timed batches. */
async function accelEmbedTrial(server) {
  return withBrowser(async ({ context, sampler }) => {
    const { page, errors } = await openPage(context, `${server.url}/test/harness.html`, 'harnessReady');
    const baselineRss = sampler.now();
    const baselinePss = treePss();
    try {
      const { cold, warm, warmFromStore } = await coldAndWarmLoad(page, 'minilm-l6');
      const embed = await withTimeout(page.evaluate(async ({ sentences, reps }) => {
        const model = window.benchModel;
        const first = await model.embed(sentences);
        const rates = [];
        for (let i = 0; i < reps; i++) {
          const t0 = performance.now();
          const out = await model.embed(sentences);
          const ms = performance.now() - t0;
          if (out.embeddings.length !== sentences.length) throw new Error(`got ${out.embeddings.length} embeddings for ${sentences.length} sentences`);
          rates.push((sentences.length * 1000) / ms);
        }
        return { dim: first.dim, rates };
      }, { sentences: SENTENCES, reps: EMBED_REPS }), 180_000, 'accel embed');
      return { cold, warm, warmFromStore, embed, baselineRss, baselinePss, endPss: treePss() };
    } catch (err) {
      err.pageErrors = errors;
      throw err;
    }
  });
}

/** wllama: cold + warm load, warm-up, one measured completion. */
async function wllamaTrial(server, threads, prompt) {
  return withBrowser(async ({ context, sampler }) => {
    const { page, errors } = await openPage(context, `${server.url}/bench/wllama.html`, 'benchReady');
    const baselineRss = sampler.now();
    const baselinePss = treePss();
    const ggufBytes = (from) => server.requests.slice(from).filter((r) => r.path === MODEL_GGUF).reduce((n, r) => n + r.bytes, 0);
    const load = () => withTimeout(page.evaluate(async ({ url, threads }) => {
      const { Wllama, LoggerWithoutDebug } = window.wllama;
      const t0 = performance.now();
      const w = new Wllama(window.wllamaPaths, { suppressNativeLog: true, logger: LoggerWithoutDebug });
      await w.loadModelFromUrl(new URL(url, location.href).href, { n_threads: threads, n_gpu_layers: 0, n_ctx: 1024 });
      window.benchWllama = w;
      return {
        ms: performance.now() - t0,
        isolated: self.crossOriginIsolated,
        multithread: w.isMultithread(),
        threads: w.getNumThreads(),
        llamaCpp: Wllama.getLibllamaVersion?.() ?? null,
      };
    }, { url: MODEL_GGUF, threads }), 180_000, 'wllama loadModelFromUrl');
    try {
      let mark = server.requests.length;
      const cold = await load();
      cold.ggufBytes = ggufBytes(mark);
      if (cold.threads !== threads) throw Object.assign(new Error(`asked for ${threads} threads, wllama runs ${cold.threads} (crossOriginIsolated: ${cold.isolated})`), { name: 'ThreadsError' });
      await reload(page, 'benchReady');
      mark = server.requests.length;
      const warm = await load();
      warm.ggufBytes = ggufBytes(mark);
      const gen = await withTimeout(page.evaluate(async ({ prompt, warmup, maxTokens }) => {
        const w = window.benchWllama;
        await w.createCompletion({ prompt: warmup, max_tokens: 8, temperature: 0, cache_prompt: false });
        const t0 = performance.now();
        const out = await w.createCompletion({ prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, cache_prompt: false });
        return { wallMs: performance.now() - t0, usage: out.usage, timings: out.timings };
      }, { prompt, warmup: WARMUP_PROMPT, maxTokens: GEN_TOKENS }), 400_000, 'wllama createCompletion');
      return { cold, warm, gen, baselineRss, baselinePss, endPss: treePss() };
    } catch (err) {
      err.pageErrors = errors;
      throw err;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Engines: run the trials, turn them into a `runs[]` entry.

const MIB = 1 << 20;
const mib = (b) => `${(b / MIB).toFixed(0)} MiB`;
const med = (xs) => summarize(xs, 3)?.median;

function rssNote(trials) {
  const r = trials.map((t) => t.result);
  return `peak_rss_bytes: the peak over each trial (launch → close) of the summed RSS of all Chromium processes (${trials.map((t) => t.peakProcesses).join('/')} at the peak), sampled every ${SAMPLE_MS} ms from /proc/<pid>/statm. Shared pages (libraries, shared memory) count once per process, so it overstates real use: the idle browser with the page open already sums to ${mib(med(r.map((x) => x.baselineRss)))} RSS (median), i.e. the model run added ${mib(med(trials.map((t) => t.peakRss - t.result.baselineRss)))} at the peak. Summed PSS (shared pages split, from smaps_rollup; read only twice per trial, it costs ~30 ms): ${mib(med(r.map((x) => x.baselinePss)))} idle, ${mib(med(r.map((x) => x.endPss)))} at the end of the trial with the model loaded (medians).`;
}

/** Runs `trial` `reps` times; a failed trial is logged and kept as a note, not fatal. */
async function runTrials(label, reps, trial) {
  const trials = [];
  const failures = [];
  for (let i = 0; i < reps; i++) {
    log(`${label}: trial ${i + 1}/${reps}`);
    try {
      trials.push(await trial());
    } catch (err) {
      failures.push(`trial ${i + 1}: ${errorText(err)}${err.pageErrors?.length ? ` (page: ${err.pageErrors.slice(0, 3).join(' | ')})` : ''}`);
      log(`  failed: ${failures.at(-1)}`);
    }
  }
  return { trials, failures };
}

async function runAccelText(server, opts, state) {
  const { trials, failures } = await runTrials('accel-wasm smollm2-135m', opts.reps, () => accelTextTrial(server, state));
  const r = trials.map((t) => t.result);
  const notes = ['Our engine through the public host API (/host-js/ipfs-accelerate.js on /test/harness.html), WASM SIMD CPU path, one thread (no wasm threads), no WebGPU in the browser.'];
  if (r.length) {
    const gens = r.map((x) => x.gen);
    notes.push(
      `cold_load_ms / warm_load_ms: page wall clock from new IPFSAccelerate() to loadModel resolving (service-worker registration, engine worker + wasm start, shard download or IndexedDB read, verification, model build); cold = fresh profile, empty cache, shards from the local server; warm = after a page reload, ${r.every((x) => x.warmFromStore) ? 'every shard from IndexedDB' : `NOT every shard from IndexedDB (${r.map((x) => x.warm.info.shards.map((s) => s.source).join('+')).join('; ')})`}. The engine's own model.info.loadMs (fetch + verify + build, no worker start-up) was median ${med(r.map((x) => x.cold.info.loadMs)).toFixed(0)} ms cold, ${med(r.map((x) => x.warm.info.loadMs)).toFixed(0)} ms warm.`,
      `Generation (after an 8-token warm-up): prompt = the bench text's first ${state.prompt?.split(' ').length} words (${[...new Set(gens.map((g) => g.promptTokens))].join('/')} tokens), greedy, generated ${gens.map((g) => `${g.tokens} (${g.stopReason})`).join(', ')} tokens; the engine's own timings: prefill_tokens_per_s = prompt tokens / prefill time, ttft_ms = from the start of generate in the worker to the first sampled token, decode_tokens_per_s = (generated tokens - 1) / time after the first token. Page-side wall clock of the whole generate call: median ${med(gens.map((g) => g.wallMs)).toFixed(0)} ms.`,
      rssNote(trials),
    );
    if (gens.some((g) => g.promptTokens !== PROMPT_TOKENS)) notes.push(`WARNING: the prompt was not ${PROMPT_TOKENS} tokens.`);
    if (gens.some((g) => g.tokens !== GEN_TOKENS)) notes.push(`WARNING: a generation stopped before ${GEN_TOKENS} tokens.`);
  }
  if (failures.length) notes.push(`FAILED ${failures.length}/${opts.reps} trials: ${failures.join('; ')}`);
  const metrics = {
    cold_load_ms: summarize(r.map((x) => x.cold.ms), 1),
    warm_load_ms: summarize(r.map((x) => x.warm.ms), 1),
    ttft_ms: summarize(r.map((x) => x.gen.timings.timeToFirstTokenMs), 1),
    prefill_tokens_per_s: summarize(r.map((x) => x.gen.timings.prefillTokensPerS), 2),
    decode_tokens_per_s: summarize(r.map((x) => x.gen.timings.decodeTokensPerS), 2),
    peak_rss_bytes: summarize(trials.map((t) => t.peakRss), 0),
  };
  return runEntry('accel-wasm', 1, 'smollm2-135m', metrics, notes);
}

async function runAccelEmbed(server, opts) {
  const { trials, failures } = await runTrials('accel-wasm minilm-l6', opts.reps, () => accelEmbedTrial(server));
  const r = trials.map((t) => t.result);
  const notes = ['Our engine through the public host API, MiniLM-L6 (f32 pack), WASM SIMD CPU path, one thread.'];
  if (r.length) {
    notes.push(
      `cold_load_ms / warm_load_ms as for smollm2-135m (page wall clock; warm ${r.every((x) => x.warmFromStore) ? 'from IndexedDB' : 'NOT all from IndexedDB'}; engine loadMs median ${med(r.map((x) => x.cold.info.loadMs)).toFixed(0)} ms cold, ${med(r.map((x) => x.warm.info.loadMs)).toFixed(0)} ms warm).`,
      `embeddings_per_s: ${SENTENCES.length} sentences (6-12 words) per model.embed call, page wall clock, after one warm-up batch; ${EMBED_REPS} timed batches per trial, every batch is a sample (dim ${r[0].embed.dim}). wllama is not compared here (no MiniLM GGUF in the project).`,
      rssNote(trials),
    );
  }
  if (failures.length) notes.push(`FAILED ${failures.length}/${opts.reps} trials: ${failures.join('; ')}`);
  const metrics = {
    cold_load_ms: summarize(r.map((x) => x.cold.ms), 1),
    warm_load_ms: summarize(r.map((x) => x.warm.ms), 1),
    embeddings_per_s: summarize(r.flatMap((x) => x.embed.rates), 2),
    peak_rss_bytes: summarize(trials.map((t) => t.peakRss), 0),
  };
  return runEntry('accel-wasm', 1, 'minilm-l6', metrics, notes);
}

async function runWllama(server, threads, opts, prompt, version) {
  const { trials, failures } = await runTrials(`wllama ${threads} thread(s) smollm2-135m`, opts.reps, () => wllamaTrial(server, threads, prompt));
  const r = trials.map((t) => t.result);
  const prefill = (g) => (g.timings.prompt_n * 1000) / g.timings.prompt_ms;
  const decode = (g) => ((g.timings.predicted_n - 1) * 1000) / g.timings.predicted_ms;
  const notes = [`wllama ${version} (npm @wllama/wllama${r[0]?.cold.llamaCpp ? `, llama.cpp ${r[0].cold.llamaCpp}` : ''}) on the same GGUF (${MODEL_GGUF}), /bench/wllama.html, CPU only (n_gpu_layers 0; no WebGPU in the browser), n_threads ${threads}, n_ctx 1024, ${threads > 1 ? 'page cross-origin isolated (COOP same-origin + COEP require-corp on every response), multi-thread build' : 'no COOP/COEP headers, single-thread'}.`];
  if (r.length) {
    const gens = r.map((x) => x.gen);
    notes.push(
      `cold_load_ms / warm_load_ms: page wall clock from new Wllama() to loadModelFromUrl resolving (GGUF download into wllama's OPFS cache or read from it, wasm start, model load); cold = fresh profile (GGUF bytes from the server: ${r.map((x) => mib(x.cold.ggufBytes)).join(', ')}), warm = after a page reload (GGUF bytes from the server: ${r.map((x) => mib(x.warm.ggufBytes)).join(', ')}; 0 = from the OPFS cache).`,
      `Generation: createCompletion with the same prompt string (prompt_n ${[...new Set(gens.map((g) => g.timings.prompt_n))].join('/')} tokens, cache_n ${[...new Set(gens.map((g) => g.timings.cache_n))].join('/')}, cache_prompt false) after an 8-token warm-up, max_tokens ${GEN_TOKENS}, temperature 0, ignore_eos (predicted_n ${gens.map((g) => g.timings.predicted_n).join('/')}). Rates from llama.cpp's own timings: prefill_tokens_per_s = prompt_n / prompt_ms, ttft_ms = prompt_ms (prompt processing to the first sampled token), decode_tokens_per_s = (predicted_n - 1) / predicted_ms — the same definitions as ours. Page-side wall clock of the whole call: median ${med(gens.map((g) => g.wallMs)).toFixed(0)} ms.`,
      rssNote(trials),
    );
    if (gens.some((g) => g.timings.prompt_n !== PROMPT_TOKENS)) notes.push(`WARNING: the prompt was not ${PROMPT_TOKENS} tokens for llama.cpp.`);
  }
  if (failures.length) notes.push(`FAILED ${failures.length}/${opts.reps} trials: ${failures.join('; ')}`);
  const metrics = {
    cold_load_ms: summarize(r.map((x) => x.cold.ms), 1),
    warm_load_ms: summarize(r.map((x) => x.warm.ms), 1),
    ttft_ms: summarize(r.map((x) => x.gen.timings.prompt_ms), 1),
    prefill_tokens_per_s: summarize(r.map((x) => prefill(x.gen)), 2),
    decode_tokens_per_s: summarize(r.map((x) => decode(x.gen)), 2),
    peak_rss_bytes: summarize(trials.map((t) => t.peakRss), 0),
  };
  return runEntry('wllama', threads, 'smollm2-135m', metrics, notes);
}

/** The FAILED / WARNING parts of each run's notes, for the summary. */
const PROBLEMS = new WeakMap();

/** A `runs[]` entry; notes starting with FAILED or WARNING are repeated in the summary. */
function runEntry(engine, threads, model, metrics, notes) {
  const run = { engine, threads, model, metrics: clean(metrics), notes: notes.join(' ') };
  PROBLEMS.set(run, notes.filter((n) => /^(FAILED|WARNING)/.test(n)));
  return run;
}

const clean = (metrics) => Object.fromEntries(Object.entries(metrics).filter(([, v]) => v !== undefined));

// ---------------------------------------------------------------------------------------------
// Machine facts, summary, ratios.

function machineInfo() {
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  const cpu = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1].trim() ?? cpus()[0]?.model ?? 'unknown';
  return { cpu, cores: cpus().length };
}

function browserVersion() {
  try {
    // Debian's wrapper script prints shell noise on stderr; the version is stdout.
    return execFileSync(process.env.CHROMIUM_PATH ?? '/usr/bin/chromium', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch (err) {
    return `unknown (${errorText(err)})`;
  }
}

function wllamaVersion() {
  try {
    return JSON.parse(readFileSync(join(WLLAMA_DIR, 'package.json'), 'utf8')).version;
  } catch {
    return null;
  }
}

/** Other heavy work on the machine (builds, test suites, other browsers), for a noise warning. */
function busyNote() {
  const ours = new Set([process.pid, ...descendants(process.pid)]);
  const seen = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || ours.has(Number(name))) continue;
    let argv;
    try {
      argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').filter(Boolean);
    } catch {
      continue;
    }
    const exe = (argv[0] ?? '').split('/').pop();
    const what = ['cargo', 'rustc', 'chromium', 'llama-bench', 'accel'].includes(exe) ? exe
      : exe === 'node' && argv.some((a) => a.startsWith('--test')) ? 'node --test' : null;
    if (what) seen.set(what, (seen.get(what) ?? 0) + 1);
  }
  if (!seen.size) return null;
  const list = [...seen].map(([what, n]) => `${what} ×${n}`).join(', ');
  return `WARNING: other work was running on this machine during the benchmark (${list}); numbers are noisy.`;
}

function printSummary(report, busy) {
  const fmt = (m, digits = 1) => (m ? `${m.median.toFixed(digits)} [${m.min.toFixed(digits)}–${m.max.toFixed(digits)}]` : '—');
  console.log(`\nBrowser benchmark, ${report.date}: ${report.browser}, ${report.machine.cpu} (${report.machine.cores} cores); medians [min–max]\n`);
  console.log('| engine | threads | model | cold load ms | warm load ms | TTFT ms | prefill tok/s | decode tok/s | embeddings/s | peak RSS MiB |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const run of report.runs) {
    const m = run.metrics;
    const rss = m.peak_rss_bytes ? `${(m.peak_rss_bytes.median / MIB).toFixed(0)} [${(m.peak_rss_bytes.min / MIB).toFixed(0)}–${(m.peak_rss_bytes.max / MIB).toFixed(0)}]` : '—';
    console.log(`| ${run.engine} | ${run.threads} | ${run.model} | ${fmt(m.cold_load_ms, 0)} | ${fmt(m.warm_load_ms, 0)} | ${fmt(m.ttft_ms, 0)} | ${fmt(m.prefill_tokens_per_s)} | ${fmt(m.decode_tokens_per_s)} | ${fmt(m.embeddings_per_s)} | ${rss} |`);
  }
  for (const run of report.runs) {
    const problems = PROBLEMS.get(run) ?? [];
    if (problems.length) console.log(`\n${run.engine} ${run.threads}t ${run.model}: ${problems.join(' ')}`);
  }
  if (busy) console.log(`\n${busy}`);

  const find = (engine, threads, model) => report.runs.find((r) => r.engine === engine && r.threads === threads && r.model === model)?.metrics;
  const ours = find('accel-wasm', 1, 'smollm2-135m');
  const peer = find('wllama', 1, 'smollm2-135m');
  const ratio = (a, b) => (a && b ? a.median / b.median : null);
  const show = (x, what) => (x === null ? `n/a (${what} missing)` : `${x.toFixed(2)}×`);
  const decode = ratio(ours?.decode_tokens_per_s, peer?.decode_tokens_per_s);
  const prefill = ratio(ours?.prefill_tokens_per_s, peer?.prefill_tokens_per_s);
  const load = ratio(ours?.warm_load_ms, ours?.cold_load_ms);
  console.log('\nRatios (medians):');
  console.log(`  accel-wasm decode ÷ wllama 1-thread decode:   ${show(decode, 'a decode figure')}`);
  console.log(`  accel-wasm prefill ÷ wllama 1-thread prefill: ${show(prefill, 'a prefill figure')}`);
  console.log(`  accel-wasm warm load ÷ cold load:             ${load === null ? 'n/a (a load figure missing)' : `${load.toFixed(2)} (warm is ${(1 / load).toFixed(2)}× faster)`}`);
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (!existsSync(join(DIST, MODEL_GGUF)) || !existsSync(join(DIST, 'models', 'smollm2-135m', 'manifest.json'))) {
    console.error(`error: SiteNotStaged: ${join(DIST, MODEL_GGUF)} or the packed model is missing; run \`make web\` (scripts/build-web.sh) first`);
    process.exit(1);
  }
  let busy = busyNote();
  if (busy) log(busy);
  const version = wllamaVersion();
  const mounts = {
    '/test/': join(REPO, 'tests', 'pages'),
    // More specific prefix first: startServer takes the first mount that matches.
    '/bench/wllama/': join(WLLAMA_DIR, 'esm'),
    '/bench/': join(REPO, 'bench'),
  };
  const report = { date: new Date().toISOString(), machine: machineInfo(), browser: browserVersion(), runs: [] };
  const state = { prompt: null };
  const started = Date.now();

  const plain = await startServer({ root: DIST, mounts });
  const isolated = await startServer({ root: DIST, mounts, headers: ISOLATION });
  try {
    if (opts.only.includes('accel')) report.runs.push(await runAccelText(plain, opts, state));
    if (opts.only.includes('minilm')) report.runs.push(await runAccelEmbed(plain, opts));
    const prompt = state.prompt ?? LONG_TEXT.split(' ').slice(0, PROMPT_WORDS).join(' ');
    for (const threads of [1, 2]) {
      if (!opts.only.includes(`wllama${threads}`)) continue;
      if (!version) {
        report.runs.push(runEntry('wllama', threads, 'smollm2-135m', {}, [`FAILED: WllamaMissingError: ${WLLAMA_DIR} not found; run npm ci`]));
        continue;
      }
      report.runs.push(await runWllama(threads > 1 ? isolated : plain, threads, opts, prompt, version));
    }
  } finally {
    await plain.close();
    await isolated.close();
  }
  busy ??= busyNote(); // something may have started meanwhile
  if (busy) for (const run of report.runs) run.notes += ` ${busy}`;

  await mkdir(dirname(resolve(opts.out)), { recursive: true });
  await writeFile(opts.out, `${JSON.stringify(report, null, 1)}\n`);
  printSummary(report, busy);
  console.log(`\nwritten: ${opts.out} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
}

main().catch((err) => {
  console.error(`error: ${errorText(err)}`);
  process.exit(1);
});
