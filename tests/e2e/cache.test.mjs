// The service-worker shard cache end to end, in headless Chromium with the real service worker
// (Rust wasm) and IndexedDB, against a real HTTP server that can corrupt, drop or count bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DIST, REPO, launchBrowser, serveSite, watchErrors } from '../lib/browser.mjs';

const MIB = 1 << 20;
// Two small packs (4 MB shards) staged by scripts/build-web.sh; they share the tokenizer shard.
const A = 'minilm-l6-q8';
const B = 'minilm-l6-q4';

function manifestOf(name) {
  return JSON.parse(readFileSync(join(DIST, 'models', name, 'manifest.json'), 'utf8'));
}

const shardRequests = (server, name, hash) =>
  server.requests.filter((r) => r.path.startsWith(`/models/${name}/shards/`) && (!hash || r.path.endsWith(`${hash}.bin`)));

async function openHarness(page, url) {
  await page.goto(`${url}/test/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
}

/** Runs `fn(acc, arg)` in the page with a fresh IPFSAccelerate (config merged in). */
function withAcc(page, config, fn, arg) {
  return page.evaluate(
    async ({ config, source, arg }) => {
      const acc = new window.accel.IPFSAccelerate(config);
      await acc.ready();
      // eslint-disable-next-line no-new-func
      const body = new Function('acc', 'arg', `return (${source})(acc, arg);`);
      try {
        return { value: await body(acc, arg) };
      } catch (err) {
        return { error: { name: err.name, message: err.message } };
      } finally {
        acc.terminate();
      }
    },
    { config, source: fn.toString(), arg },
  );
}

const ok = (result) => {
  assert.ok(!result.error, `unexpected error: ${JSON.stringify(result.error)}`);
  return result.value;
};

async function session(t, serverOptions = {}) {
  const server = await serveSite(serverOptions);
  const browser = await launchBrowser();
  const page = await browser.context.newPage();
  t.after(async () => {
    await browser.close();
    await server.close();
  });
  await openHarness(page, server.url);
  return { server, browser, page };
}

test('a loaded model works with the server gone: same tokens, every shard from IndexedDB', { timeout: 300_000 }, async (t) => {
  const onceUpon = JSON.parse(readFileSync(join(REPO, 'tests', 'fixtures', 'smollm2_once_upon.json'), 'utf8'));
  const manifest = manifestOf('smollm2-135m');
  const { server, page } = await session(t);
  const errors = watchErrors(page);
  const load = (acc, prompt) => acc.loadModel('smollm2-135m').then(async (model) => ({ info: model.info, out: await model.generate(prompt, { temperature: 0, maxTokens: 8 }) }));
  const online = ok(await withAcc(page, {}, load, onceUpon.prompt));
  assert.deepEqual(online.out.tokenIds, onceUpon.greedy_ids.slice(0, 8), 'the reference tokens');
  assert.ok(online.info.shards.every((s) => s.source === 'network' && s.stored), JSON.stringify(online.info.shards));
  for (const shard of manifest.shards) assert.equal(shardRequests(server, 'smollm2-135m', shard.sha256).length, 1);

  await page.reload(); // the page itself now comes through the service worker and is stored
  await page.waitForFunction(() => window.harnessReady === true);
  assert.deepEqual(errors, []);
  await server.close();
  await page.reload();
  await page.waitForFunction(() => window.harnessReady === true);
  const offline = ok(await withAcc(page, {}, load, onceUpon.prompt));
  assert.deepEqual(offline.info.shards.map((s) => s.source), manifest.shards.map(() => 'store'), 'all shards from IndexedDB');
  assert.deepEqual(offline.out.tokenIds, online.out.tokenIds, 'the same tokens offline');
  assert.equal(offline.out.text, online.out.text);
});

test('prefetch stores every shard verified; with the server gone they come from IndexedDB', { timeout: 120_000 }, async (t) => {
  const { server, page } = await session(t);
  const errors = watchErrors(page);
  const manifest = manifestOf(B);
  const events = [];
  await page.exposeFunction('recordProgress', (e) => events.push(e));
  const result = ok(await withAcc(page, {}, (acc, name) => acc.cache.prefetch(name, { onProgress: (e) => window.recordProgress(e) }), B));
  assert.equal(result.stored, true);
  assert.equal(result.totalBytes, manifest.total_bytes);
  assert.equal(result.downloadedBytes, manifest.total_bytes);
  assert.equal(events.length, manifest.shards.length, 'one progress event per shard');
  assert.deepEqual(events.map((e) => e.loadedBytes), [...events.map((e) => e.loadedBytes)].sort((x, y) => x - y), 'progress is monotonic');
  assert.equal(events.at(-1).loadedBytes, manifest.total_bytes);
  for (const shard of manifest.shards) assert.equal(shardRequests(server, B, shard.sha256).length, 1);

  const list = ok(await withAcc(page, {}, (acc) => acc.cache.list()));
  const model = list.models.find((m) => m.name === B);
  assert.equal(model.complete, true);
  assert.equal(model.storedBytes, manifest.total_bytes);
  for (const shard of manifest.shards) {
    const meta = list.shards.find((s) => s.sha256 === shard.sha256);
    assert.ok(meta, `shard ${shard.sha256} is listed`);
    assert.equal(meta.state, 'complete');
    assert.equal(meta.bytes, shard.bytes);
    assert.deepEqual(meta.models, [B]);
  }
  // Reload once online (the page now comes through the service worker and is stored), then
  // take the server away and reload again.
  await page.reload();
  await page.waitForFunction(() => window.harnessReady === true);
  assert.deepEqual(errors, []);
  await server.close();
  await page.reload();
  await page.waitForFunction(() => window.harnessReady === true);
  const offline = ok(await withAcc(page, {}, async (acc, { name, shards }) => {
    const out = [];
    for (const s of shards) out.push(await acc.fetchFile(`/models/${name}/shards/${s.sha256}.bin`));
    return out;
  }, { name: B, shards: manifest.shards }));
  for (const [i, shard] of manifest.shards.entries()) {
    assert.equal(offline[i].source, 'store');
    assert.equal(offline[i].sha256, shard.sha256, 'the same bytes, verified');
  }
});

test('a corrupt shard is never stored: a named IntegrityError, or the bytes from a good mirror', { timeout: 120_000 }, async (t) => {
  const manifest = manifestOf(B);
  const victim = manifest.shards[1].sha256;
  const corrupt = (entry) => (entry.path.endsWith(`${victim}.bin`) ? { corrupt: true } : null);

  // 1. No mirror: the load fails with IntegrityError and nothing of that shard is kept.
  {
    const { server, page } = await session(t, { fault: corrupt });
    const failed = await withAcc(page, {}, (acc, name) => acc.loadModel(name), B);
    assert.equal(failed.error?.name, 'IntegrityError', JSON.stringify(failed));
    assert.match(failed.error.message, new RegExp(victim));
    assert.equal(shardRequests(server, B, victim).length, 1, 'wrong bytes are not fetched again from the same URL');
    const list = ok(await withAcc(page, {}, (acc) => acc.cache.list()));
    assert.equal(list.shards.find((s) => s.sha256 === victim), undefined, 'the corrupt shard is not stored');
    const fetched = await withAcc(page, {}, (acc, url) => acc.fetchFile(url), `/models/${B}/shards/${victim}.bin`);
    assert.equal(fetched.error?.name, 'FetchError');
    assert.match(fetched.error.message, /IntegrityError/, 'nor served');
  }

  // 2. The manifest names a mirror (another origin) with the right bytes: the load succeeds.
  {
    const mirror = await serveSite({ cors: true });
    t.after(() => mirror.close());
    const withMirror = (path, bytes) => {
      if (path !== `/models/${B}/manifest.json`) return null;
      return Buffer.from(JSON.stringify({ ...JSON.parse(bytes), mirrors: [`${mirror.url}/models/${B}/`] }));
    };
    const { server, page } = await session(t, { fault: corrupt, rewrite: withMirror });
    const result = ok(await withAcc(page, {}, async (acc, name) => {
      const model = await acc.loadModel(name);
      return { info: model.info, embedded: await model.embed('the mirror had the right bytes') };
    }, B));
    assert.ok(result.info.shards.every((s) => s.stored), 'every shard stored, the bad one from the mirror');
    assert.equal(result.embedded.dim, 384);
    assert.equal(shardRequests(server, B, victim).length, 1);
    assert.deepEqual(mirror.requests.map((r) => r.path), [`/models/${B}/shards/${victim}.bin`], 'only the bad shard comes from the mirror');
    const list = ok(await withAcc(page, {}, (acc) => acc.cache.list()));
    assert.equal(list.shards.find((s) => s.sha256 === victim)?.state, 'complete');
  }
});

test('a connection dropped half-way through a shard resumes with Range', { timeout: 120_000 }, async (t) => {
  const manifest = manifestOf(B);
  const big = manifest.shards.reduce((x, y) => (y.bytes > x.bytes ? y : x));
  let dropped = false;
  const dropOnce = (entry, size) => {
    if (!entry.path.endsWith(`${big.sha256}.bin`) || dropped) return null;
    dropped = true;
    return { dropAfter: Math.floor(size / 2) };
  };
  const { server, page } = await session(t, { fault: dropOnce });
  const info = ok(await withAcc(page, {}, async (acc, name) => (await acc.loadModel(name)).info, B));
  assert.ok(info.shards.every((s) => s.stored && s.source === 'network'));
  const requests = shardRequests(server, B, big.sha256);
  assert.equal(requests.length, 2, `one broken transfer, one resume: ${JSON.stringify(requests)}`);
  assert.equal(requests[0].range, null);
  const resumedFrom = Number(/^bytes=(\d+)-$/.exec(requests[1].range ?? '')?.[1]);
  assert.ok(resumedFrom > 0 && resumedFrom <= big.bytes / 2, `the retry asks for the rest: ${requests[1].range}`);
  assert.equal(requests[1].status, 206);
  const sent = requests.reduce((n, r) => n + r.bytes, 0);
  assert.ok(sent < 1.5 * big.bytes, `${sent} bytes sent for a ${big.bytes}-byte shard`);
  const offline = ok(await withAcc(page, {}, (acc, url) => acc.fetchFile(url), `/models/${B}/shards/${big.sha256}.bin`));
  assert.equal(offline.sha256, big.sha256);
  assert.equal(offline.source, 'store');
});

/** Which shards a GreedyDual-Size-Frequency cache evicts (the policy documented in sw/src/policy.rs). */
function simulateEvictions(loads, budget) {
  const priorityOf = (manifest, sha) => {
    const where = new Map([...manifest.tensors, ...manifest.files].map((e) => [e.name, e.shard]));
    return Math.min(...manifest.components.filter((c) => [...c.tensors, ...(c.files ?? [])].some((n) => where.get(n) === sha)).map((c) => c.priority));
  };
  const value = (bytes, uses, priority) => (uses * (1 + 2 / (1 + priority))) / Math.max(bytes / MIB, 1 / 1024);
  const stored = new Map();
  const evicted = [];
  let inflation = 0;
  let clock = 0;
  for (const manifest of loads) {
    for (const s of stored.values()) if (manifest.shards.some((x) => x.sha256 === s.sha256)) s.models.add(manifest.name);
    for (const shard of manifest.shards) {
      clock += 1;
      const hit = stored.get(shard.sha256);
      if (hit) {
        hit.uses += 1;
        hit.last = clock;
        hit.score = inflation + value(hit.bytes, hit.uses, hit.priority);
        continue;
      }
      let used = [...stored.values()].reduce((n, s) => n + s.bytes, 0);
      const victims = [...stored.values()]
        .filter((s) => !s.models.has(manifest.name))
        .sort((x, y) => x.score - y.score || x.last - y.last || (x.sha256 < y.sha256 ? -1 : 1));
      for (const v of victims) {
        if (used + shard.bytes <= budget) break;
        stored.delete(v.sha256);
        used -= v.bytes;
        inflation = Math.max(inflation, v.score);
        evicted.push(v.sha256);
      }
      const priority = priorityOf(manifest, shard.sha256);
      stored.set(shard.sha256, { sha256: shard.sha256, bytes: shard.bytes, uses: 1, last: clock, priority, score: inflation + value(shard.bytes, 1, priority), models: new Set([manifest.name]) });
    }
  }
  return evicted;
}

test('with a 1.5-model budget, A then B then A evicts in the policy order and never the loading model', { timeout: 180_000 }, async (t) => {
  const [a, b] = [manifestOf(A), manifestOf(B)];
  const cacheSizeMB = (1.5 * (a.total_bytes + b.total_bytes)) / 2 / MIB;
  const budget = Math.floor(cacheSizeMB * MIB);
  const { page } = await session(t);
  const estimate = ok(await withAcc(page, { cacheSizeMB }, (acc) => acc.cache.estimate()));
  assert.equal(estimate.budget, budget, 'the configured size is the budget (the quota leaves more)');

  const expected = simulateEvictions([a, b, a], budget);
  assert.ok(expected.length >= 2, 'the scenario must evict something to mean anything');
  const evictionsSoFar = [];
  for (const manifest of [a, b, a]) {
    const list = ok(await withAcc(page, {}, async (acc, name) => {
      const model = await acc.loadModel(name);
      await model.unload();
      return acc.cache.list();
    }, manifest.name));
    const held = list.shards.filter((s) => s.state === 'complete').reduce((n, s) => n + s.bytes, 0);
    assert.ok(held <= budget, `after loading ${manifest.name}: ${held} bytes stored, budget ${budget}`);
    const fresh = list.evictions.slice(evictionsSoFar.length);
    for (const e of fresh) {
      assert.ok(!manifest.shards.some((s) => s.sha256 === e.sha256), `a shard of ${manifest.name} was evicted while it was loading`);
    }
    evictionsSoFar.push(...fresh.map((e) => e.sha256));
    assert.ok(list.models.find((m) => m.name === manifest.name).complete, `${manifest.name} is wholly stored after its load`);
  }
  assert.deepEqual(evictionsSoFar, expected, 'evicted in the order GreedyDual-Size-Frequency gives');
});

test('persist() reports what the browser granted', { timeout: 60_000 }, async (t) => {
  const { server, browser, page } = await session(t);
  const before = ok(await withAcc(page, {}, (acc) => acc.cache.persist()));
  assert.equal(before.persisted, false, 'headless Chromium does not grant durable storage by itself');
  const cdp = await browser.context.newCDPSession(page);
  await cdp.send('Browser.grantPermissions', { origin: server.url, permissions: ['durableStorage'] });
  const after = ok(await withAcc(page, {}, (acc) => acc.cache.persist()));
  assert.equal(after.persisted, true);
  assert.equal(await page.evaluate(() => navigator.storage.persisted()), true, 'and the browser agrees');
});

test('a budget too small for the model: served from memory, and the answer says it is not stored', { timeout: 120_000 }, async (t) => {
  const manifest = manifestOf(B);
  const { page } = await session(t);
  const result = ok(await withAcc(page, { cacheSizeMB: 1 }, async (acc, name) => {
    const model = await acc.loadModel(name);
    return { info: model.info, embedded: await model.embed(['runs from memory']) };
  }, B));
  assert.equal(result.embedded.dim, 384, 'the model runs');
  const big = manifest.shards.filter((s) => s.bytes > MIB);
  const notStored = result.info.shards.filter((s) => !s.stored);
  assert.deepEqual(notStored.map((s) => s.sha256).sort(), big.map((s) => s.sha256).sort(), 'every shard over the 1 MB budget is reported as not stored');
  for (const s of notStored) assert.match(s.notStored, /budget/);
  // prefetch (make offline) says the same.
  const prefetched = ok(await withAcc(page, {}, (acc, name) => acc.cache.prefetch(name), B));
  assert.equal(prefetched.stored, false);
  assert.equal(prefetched.notStored.length, big.length);
  const list = ok(await withAcc(page, {}, (acc) => acc.cache.list()));
  const held = list.shards.filter((s) => s.state === 'complete').reduce((n, s) => n + s.bytes, 0);
  assert.ok(held <= MIB, `${held} bytes stored under a 1 MB budget`);
  // The bytes were still delivered: a fetch of a big shard answers, marked as not stored.
  const answer = ok(await withAcc(page, {}, async (acc, url) => {
    const r = await fetch(url);
    return { status: r.status, notStored: r.headers.get('x-accel-not-stored'), bytes: (await r.arrayBuffer()).byteLength };
  }, `/models/${B}/shards/${big[0].sha256}.bin`));
  assert.equal(answer.status, 200);
  assert.equal(answer.bytes, big[0].bytes);
  assert.match(answer.notStored ?? '', /budget/);
});

test('cache.evict, pin and clear do what they say', { timeout: 120_000 }, async (t) => {
  const [a, b] = [manifestOf(A), manifestOf(B)];
  const shared = a.shards.map((s) => s.sha256).filter((h) => b.shards.some((s) => s.sha256 === h));
  assert.equal(shared.length, 1, 'the two packs share their tokenizer shard');
  const { page } = await session(t);
  const out = ok(await withAcc(page, {}, async (acc, { A, B }) => {
    await acc.cache.prefetch(A);
    await acc.cache.prefetch(B);
    const both = await acc.cache.list();
    const evicted = await acc.cache.evict(A);
    const afterEvict = await acc.cache.list();
    const pinned = await acc.cache.pin(B);
    const listPinned = await acc.cache.list();
    const unknown = await acc.cache.evict('no-such-model').then(() => null, (e) => e.name);
    const cleared = await acc.cache.clear();
    const empty = await acc.cache.list();
    return { both, evicted, afterEvict, pinned, listPinned, unknown, cleared, empty };
  }, { A, B }));
  assert.equal(out.both.shards.length, a.shards.length + b.shards.length - 1, 'the shared shard is stored once');
  assert.deepEqual(out.both.shards.find((s) => s.sha256 === shared[0]).models, [A, B].sort());
  assert.deepEqual(out.evicted.evicted.sort(), a.shards.map((s) => s.sha256).filter((h) => h !== shared[0]).sort());
  assert.ok(out.afterEvict.shards.some((s) => s.sha256 === shared[0]), 'B still needs the shared shard');
  assert.equal(out.listPinned.models.find((m) => m.name === B).pinned, true);
  assert.ok(out.listPinned.shards.every((s) => s.pinned));
  assert.equal(out.unknown, 'CacheRequestError');
  assert.equal(out.cleared.freedBytes, b.total_bytes);
  assert.deepEqual([out.empty.models, out.empty.shards], [[], []]);
});

test('two tabs loading the same model at once fetch each shard from the network once', { timeout: 180_000 }, async (t) => {
  const manifest = manifestOf(A);
  const { server, browser, page } = await session(t);
  // The first tab installs the service worker; the second opens under its control.
  ok(await withAcc(page, {}, (acc) => acc.serviceWorker));
  const second = await browser.context.newPage();
  await openHarness(second, server.url);
  const load = (acc, name) => acc.loadModel(name).then(async (m) => ({ info: m.info, embedded: await m.embed('two tabs') }));
  const [one, two] = await Promise.all([withAcc(page, {}, load, A), withAcc(second, {}, load, A)]);
  assert.deepEqual(ok(one).embedded, ok(two).embedded, 'both tabs run the model');
  for (const shard of manifest.shards) {
    const fetched = shardRequests(server, A, shard.sha256);
    assert.equal(fetched.length, 1, `shard ${shard.sha256} was fetched ${fetched.length} times`);
  }
  const sources = [...one.value.info.shards, ...two.value.info.shards].map((s) => s.source);
  assert.ok(sources.every((s) => s === 'network' || s === 'store'), sources.join());
});
