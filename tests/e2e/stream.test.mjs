// Streaming generation in headless Chromium: model.generateStream yields SmolLM2's greedy tokens
// one by one (the same as model.generate), pause() stops the worker computing until resume(),
// and cancel() / an AbortSignal end the stream at once with an AbortError while the model stays
// usable. The worker answers other requests while it generates. One browser and one loaded
// model serve every test here (in-browser decoding runs at ~18 tokens/s on this machine).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO, openHarness } from '../lib/browser.mjs';

const onceUpon = JSON.parse(await readFile(join(REPO, 'tests', 'fixtures', 'smollm2_once_upon.json'), 'utf8'));
const PROMPT = onceUpon.prompt;
let harness;
let page;
let errors;

before(async () => {
  harness = await openHarness();
  ({ page, errors } = harness);
  await page.evaluate(async () => {
    window.acc = new window.accel.IPFSAccelerate();
    window.model = await window.acc.loadModel('smollm2-135m');
  });
});

after(async () => {
  await harness?.close();
});

test('tokens stream one by one and are exactly generate\'s tokens', { timeout: 120_000 }, async () => {
  const MAX = 12;
  const out = await page.evaluate(async ({ prompt, max }) => {
    const reference = await window.model.generate(prompt, { maxTokens: max });
    const arrivals = [];
    const status = [];
    const metrics = [];
    const stream = window.model.generateStream(prompt, {
      maxTokens: max,
      onTokenReceived: (t) => arrivals.push({ at: performance.now(), index: t.index }),
      onMetricsUpdate: (m) => metrics.push(m),
      onStatusChange: (s) => status.push(s),
    });
    // While it generates the worker keeps answering other requests (this one fails at once).
    const askedAt = performance.now();
    const otherRequest = await window.model.embed('a sentence').then(() => null, (err) => err.name);
    const answeredAfterMs = performance.now() - askedAt;
    const tokens = [];
    for await (const token of stream) tokens.push(token);
    const result = await stream.result;
    return { reference, tokens, arrivals, status, metrics, result, answeredAfterMs, otherRequest, tokensWhenAnswered: arrivals.filter((a) => a.at <= askedAt + answeredAfterMs).length };
  }, { prompt: PROMPT, max: MAX });

  assert.deepEqual(out.reference.tokenIds, onceUpon.greedy_ids.slice(0, MAX), 'generate gives the reference greedy tokens');
  assert.equal(out.tokens.length, out.reference.tokenIds.length, 'one token event per generated token');
  assert.deepEqual(out.tokens.map((t) => t.tokenId), out.reference.tokenIds);
  assert.equal(out.tokens.map((t) => t.text).join(''), out.reference.text);
  assert.deepEqual(out.tokens.map((t) => t.index), [...Array(MAX).keys()]);
  assert.deepEqual(out.result.tokenIds, out.reference.tokenIds);
  assert.equal(out.result.text, out.reference.text);
  assert.equal(out.result.stopReason, 'maxTokens');
  // They arrive one at a time, as generated: strictly increasing arrival and worker timestamps.
  for (let i = 1; i < MAX; i++) {
    assert.ok(out.arrivals[i].at > out.arrivals[i - 1].at, `token ${i} arrived after token ${i - 1}: ${JSON.stringify(out.arrivals)}`);
    assert.ok(out.tokens[i].timing.elapsedMs > out.tokens[i - 1].timing.elapsedMs);
    assert.ok(out.tokens[i].timing.stepMs > 0);
  }
  assert.ok(out.arrivals[MAX - 1].at - out.arrivals[0].at > 5 * (MAX - 1), 'spread over the decoding time, not delivered at once');
  assert.deepEqual(out.status, ['generating', 'done']);
  assert.ok(out.metrics.length >= 2 && out.metrics.at(-1).tokens === MAX, JSON.stringify(out.metrics));
  assert.ok(out.metrics.at(-1).decodeTokensPerS > 0);
  assert.equal(out.otherRequest, 'InvalidParameterError');
  assert.ok(out.tokensWhenAnswered < MAX, `another request was answered mid-generation (after ${out.answeredAfterMs} ms, ${out.tokensWhenAnswered} tokens in)`);
});

test('pause stops tokens until resume; the text is that of an uninterrupted run', { timeout: 120_000 }, async () => {
  const MAX = 16;
  const out = await page.evaluate(async ({ prompt, max }) => {
    const reference = await window.model.generate(prompt, { maxTokens: max });
    const arrivals = [];
    const status = [];
    const stream = window.model.generateStream(prompt, { maxTokens: max, onTokenReceived: () => arrivals.push(performance.now()), onStatusChange: (s) => status.push(s) });
    const tokens = [];
    let pause = null;
    for await (const token of stream) {
      tokens.push(token);
      if (token.index === 3) {
        await stream.pause();
        const pausedAt = performance.now();
        const before = arrivals.length;
        await new Promise((resolve) => setTimeout(resolve, 1500));
        pause = { duringPause: arrivals.length - before, statusDuring: stream.status, lastBefore: arrivals.at(-1), pausedAt };
        await stream.resume();
        pause.resumedAt = performance.now();
      }
    }
    return { reference, tokens, arrivals, status, pause, result: await stream.result, metrics: stream.metrics };
  }, { prompt: PROMPT, max: MAX });

  assert.equal(out.pause.duringPause, 0, `no token arrived during 1.5 s of pause (${JSON.stringify(out.pause)})`);
  assert.equal(out.pause.statusDuring, 'paused');
  const afterResume = out.arrivals.filter((at) => at > out.pause.resumedAt);
  assert.ok(afterResume.length > 0 && out.arrivals.filter((at) => at > out.pause.pausedAt && at <= out.pause.resumedAt).length === 0, 'tokens resume after resume(), none between');
  assert.deepEqual(out.tokens.map((t) => t.tokenId), out.reference.tokenIds);
  assert.equal(out.tokens.map((t) => t.text).join(''), out.reference.text);
  assert.equal(out.result.text, out.reference.text);
  assert.equal(out.result.stopReason, 'maxTokens');
  assert.deepEqual(out.status, ['generating', 'paused', 'generating', 'done']);
  assert.ok(out.metrics.pausedMs >= 1400, `the worker waited while paused: ${JSON.stringify(out.metrics)}`);
});

test('cancel() and an AbortSignal end generation promptly; the model then generates normally', { timeout: 120_000 }, async () => {
  const MAX = 200; // ~11 s at full length: stopping early shows
  const out = await page.evaluate(async ({ prompt, max }) => {
    const outcome = async (stream, stopAt, stop) => {
      const tokens = [];
      let stoppedAt = null;
      let error = null;
      try {
        for await (const token of stream) {
          tokens.push(token.tokenId);
          if (token.index === stopAt) {
            stoppedAt = performance.now();
            stop();
          }
        }
      } catch (err) {
        error = { name: err.name, isAccelerateError: err instanceof window.accel.AccelerateError, afterMs: performance.now() - stoppedAt };
      }
      const result = await stream.result;
      return { tokens, error, status: stream.status, resultTokens: result.tokenIds.length, stopReason: result.stopReason, resultAfterMs: performance.now() - stoppedAt };
    };
    const cancelStream = window.model.generateStream(prompt, { maxTokens: max });
    const cancelled = await outcome(cancelStream, 2, () => cancelStream.cancel('enough'));
    const controller = new AbortController();
    const aborted = await outcome(window.model.generateStream(prompt, { maxTokens: max, signal: controller.signal }), 4, () => controller.abort());
    // A plain generate honours the signal too.
    const plain = new AbortController();
    setTimeout(() => plain.abort(), 500);
    const startedAt = performance.now();
    const plainAbort = await window.model.generate(prompt, { maxTokens: max, signal: plain.signal }).then((r) => ({ name: null, tokens: r.tokenIds.length }), (err) => ({ name: err.name, afterMs: performance.now() - startedAt }));
    const after = await window.model.generate(prompt, { maxTokens: 12 });
    return { cancelled, aborted, plainAbort, after: after.tokenIds };
  }, { prompt: PROMPT, max: MAX });

  for (const [what, run, stopAt] of [['cancel()', out.cancelled, 2], ['AbortSignal', out.aborted, 4]]) {
    assert.equal(run.error?.name, 'AbortError', `${what}: ${JSON.stringify(run)}`);
    assert.equal(run.error.isAccelerateError, true);
    assert.ok(run.error.afterMs < 50, `${what}: the iteration ended at once (${run.error.afterMs} ms)`);
    assert.equal(run.tokens.length, stopAt + 1, `${what}: no token delivered after the cancel`);
    assert.equal(run.status, 'cancelled');
    assert.equal(run.stopReason, 'cancelled');
    assert.ok(run.resultTokens < MAX && run.resultTokens <= stopAt + 3, `${what}: the worker stopped within a step or two (${run.resultTokens} tokens)`);
    assert.ok(run.resultAfterMs < 1000, `${what}: the worker answered the cancel in ${run.resultAfterMs} ms`);
  }
  assert.equal(out.plainAbort.name, 'AbortError', JSON.stringify(out.plainAbort));
  assert.ok(out.plainAbort.afterMs < 2000);
  assert.deepEqual(out.after, onceUpon.greedy_ids.slice(0, 12), 'after cancelling, generate gives the normal tokens');
  assert.deepEqual(errors, [], 'no console errors, page errors or failed requests');
});
