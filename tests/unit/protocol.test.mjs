// Host side of the protocol, without a browser: request shapes against the shared fixtures
// (tests/fixtures/protocol.json, also parsed by worker/src/protocol.rs) and reply routing with a
// stand-in worker (routing logic only; the real worker is exercised by tests/e2e).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { AbortError, AccelerateError, WorkerChannel, WorkerCrashedError, requests } from '../../host-js/protocol.js';
import { IPFSAccelerate, Model } from '../../host-js/ipfs-accelerate.js';

const fixtures = JSON.parse(await readFile(new URL('../fixtures/protocol.json', import.meta.url), 'utf8'));

/** Records posted messages; `reply()` / `crash()` play the worker's side. */
class StandInWorker extends EventTarget {
  posted = [];
  postMessage(message) { this.posted.push(message); }
  reply(data) { this.dispatchEvent(Object.assign(new Event('message'), { data })); }
  crash(message) { this.dispatchEvent(Object.assign(new Event('error'), { message })); }
}

test('request builders produce exactly the fixture messages', () => {
  const built = [
    requests.capabilities(),
    requests.fetchFile('/models/minilm-l6/tokenizer.json'),
    requests.loadModel('http://127.0.0.1:8080/models/smollm2-135m/manifest.json'),
    // Unset options are not sent (the worker applies the CLI's defaults), callbacks never.
    requests.generate('smollm2-135m#1', 'Once upon a time, there was a little', { maxTokens: undefined, onTokenReceived: () => {} }),
    requests.generate('smollm2-135m#1', 'What is the capital of France?', { maxTokens: 12, temperature: 0.5, topK: 40, topP: 0.875, seed: 42, chat: true }),
    requests.embed('minilm-l6#2', ['The weather is lovely today.', "It's so sunny outside!"]),
    requests.unloadModel('smollm2-135m#1'),
    // The signal and callbacks stay on this side.
    requests.generateStream('smollm2-135m#1', 'Once upon a time, there was a little', { maxTokens: 3, signal: new AbortController().signal, onStatusChange: () => {} }),
    requests.pause(8),
    requests.resume(8),
    requests.cancel(8, 'the user pressed stop'),
    requests.cancel(8),
    requests.loadModel('http://127.0.0.1:8080/models/smollm2-135m/manifest.json', { backend: 'webgpu', maxMemoryBytes: 536870912 }),
    requests.waitForComponents('smollm2-135m#1', ['tokenizer', 'embeddings', 'layer.0']),
    requests.unloadComponent('smollm2-135m#1', 'layer.29'),
    requests.memoryUsage('smollm2-135m#1'),
    requests.performanceMetrics('smollm2-135m#1'),
  ];
  assert.deepEqual(built.map((body, i) => ({ id: i + 1, ...body })), fixtures.requests);
});

test('a generate option this version does not implement is refused by name, not dropped', () => {
  assert.throws(
    () => requests.generate('m#1', 'hi', { stopSequences: ['\n'] }),
    (err) => err instanceof AccelerateError && err.name === 'InvalidParameterError' && /stopSequences/.test(err.message),
  );
});

test('Model sends its id with every request and resolves the worker results', async () => {
  const worker = new StandInWorker();
  const channel = new WorkerChannel(worker);
  const model = new Model((body) => channel.request(body), fixtures.loadedModel);
  assert.equal(model.info.kind, 'text');

  const generated = model.generate('Once upon a time, there was a little', { maxTokens: 3 });
  const embedded = model.embed('one sentence');
  assert.deepEqual(worker.posted.map(({ id, ...body }) => body), [
    { type: 'generate', modelId: 'smollm2-135m#1', prompt: 'Once upon a time, there was a little', maxTokens: 3 },
    { type: 'embed', modelId: 'smollm2-135m#1', texts: ['one sentence'] },
  ]);
  worker.reply({ id: 1, type: 'result', value: fixtures.generateResult });
  worker.reply({ id: 2, type: 'error', error: { name: 'InvalidParameterError', message: 'model smollm2-135m#1 is a text-generation model: use generate, not embed' } });
  assert.deepEqual((await generated).tokenIds, [8180, 3365, 20391]);
  await assert.rejects(embedded, (err) => err.name === 'InvalidParameterError');

  const unloaded = model.unload();
  worker.reply({ id: 3, type: 'result', value: fixtures.unloadedModel });
  await unloaded;
  await model.unload(); // the second unload asks nothing
  assert.equal(worker.posted.length, 3);
  assert.deepEqual(worker.posted[2], { id: 3, type: 'unloadModel', modelId: 'smollm2-135m#1' });
});

test('model names resolve under modelsBaseUrl; URLs resolve against the page', () => {
  globalThis.location ??= new URL('http://127.0.0.1:8080/demo/index.html');
  const acc = new IPFSAccelerate({ modelsBaseUrl: 'http://127.0.0.1:8080/models' });
  assert.equal(acc.manifestUrl('smollm2-135m'), 'http://127.0.0.1:8080/models/smollm2-135m/manifest.json');
  assert.equal(acc.manifestUrl('/models/minilm-l6/manifest.json'), 'http://127.0.0.1:8080/models/minilm-l6/manifest.json');
  assert.equal(acc.manifestUrl('manifest.json'), 'http://127.0.0.1:8080/demo/manifest.json');
  assert.equal(acc.manifestUrl('https://cdn.example/m/manifest.json'), 'https://cdn.example/m/manifest.json');
  // The default base is the site's /models/ folder, next to /host-js/.
  assert.match(new IPFSAccelerate().config.modelsBaseUrl, /\/models\/$/);
});

test('replies resolve the request with their id, in any order', async () => {
  const worker = new StandInWorker();
  const channel = new WorkerChannel(worker);
  const a = channel.request(requests.capabilities());
  const b = channel.request(requests.fetchFile('/x'));
  assert.deepEqual(worker.posted.map((m) => m.id), [1, 2]);
  worker.reply({ id: 2, type: 'result', value: { bytes: 3 } });
  worker.reply({ id: 1, type: 'result', value: fixtures.capabilities });
  assert.deepEqual(await b, { bytes: 3 });
  assert.equal((await a).webgpu.available, true);
});

test('error replies reject with a named AccelerateError', async () => {
  const worker = new StandInWorker();
  const channel = new WorkerChannel(worker);
  const pending = channel.request(requests.fetchFile('/models/x'));
  worker.reply({ ...fixtures.replies[1], id: worker.posted[0].id });
  await assert.rejects(pending, (err) => err instanceof AccelerateError && err.name === 'FetchError' && /404/.test(err.message));
  // The service worker's names come through unchanged (the worker keeps them, see error.rs).
  const load = channel.request(requests.loadModel('http://127.0.0.1:8080/models/smollm2-135m/manifest.json'));
  worker.reply({ ...fixtures.replies[2], id: worker.posted[1].id });
  await assert.rejects(load, (err) => err instanceof AccelerateError && err.name === 'IntegrityError' && /verification/.test(err.message));
});

test('a crashed worker rejects everything pending and every later request', async () => {
  const worker = new StandInWorker();
  const channel = new WorkerChannel(worker);
  const pending = channel.request(requests.capabilities());
  worker.crash('out of memory');
  await assert.rejects(pending, WorkerCrashedError);
  await assert.rejects(channel.request(requests.capabilities()), (err) => err.name === 'WorkerCrashedError');
});

/** The fixture's stream replies (id 8: two tokens, metrics, a cancelled result), re-addressed. */
const streamReplies = (id) => fixtures.replies.filter((r) => r.id === 8).map((r) => ({ ...r, id }));
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

test('a channel routes progress events to their request and resolves it with the final reply', async () => {
  const worker = new StandInWorker();
  const channel = new WorkerChannel(worker);
  const events = [];
  const { id, result } = channel.send(requests.generateStream('m#1', 'hi'), (event) => events.push(event));
  assert.equal(id, 1);
  const [first, second, metrics, final] = streamReplies(id);
  worker.reply(first);
  worker.reply(second);
  worker.reply(metrics);
  worker.reply({ id: 99, type: 'token', value: first.value }); // nobody's: ignored
  worker.reply(final);
  worker.reply(first); // after the final reply: ignored
  assert.deepEqual(events.map((e) => e.type), ['token', 'token', 'metrics']);
  assert.equal((await result).stopReason, 'cancelled');
  const control = channel.request(requests.pause(id));
  worker.reply({ id: 2, type: 'result', value: fixtures.streamControl });
  assert.deepEqual(await control, { target: 8, state: 'paused' });
});

test('generateStream yields tokens in order, reports status and metrics, and ends with the result', async () => {
  const worker = new StandInWorker();
  const channel = new WorkerChannel(worker);
  const model = new Model(channel, fixtures.loadedModel);
  const seen = { tokens: [], metrics: [], status: [] };
  const stream = model.generateStream('Once upon a time, there was a little', {
    maxTokens: 3,
    onTokenReceived: (t) => seen.tokens.push(t.tokenId),
    onMetricsUpdate: (m) => seen.metrics.push(m.tokens),
    onStatusChange: (s) => seen.status.push(s),
  });
  assert.deepEqual(worker.posted, [{ ...fixtures.requests[7], id: 1 }]);
  const [first, second, metrics] = streamReplies(1);
  worker.reply(first); // buffered until asked for
  const pausing = stream.pause();
  await settle();
  assert.deepEqual(worker.posted[1], { id: 2, type: 'pause', target: 1 });
  worker.reply({ id: 2, type: 'result', value: { target: 1, state: 'paused' } });
  await pausing;
  assert.equal(stream.status, 'paused');
  const resuming = stream.resume();
  await settle();
  worker.reply({ id: 3, type: 'result', value: { target: 1, state: 'generating' } });
  await resuming;
  worker.reply(second);
  worker.reply(metrics);
  worker.reply({ id: 1, type: 'result', value: fixtures.generateResult });
  const tokens = [];
  for await (const token of stream) tokens.push(token);
  assert.deepEqual(tokens.map((t) => [t.text, t.tokenId, t.index]), [[' girl', 8180, 0], [' named', 3365, 1]]);
  assert.ok(tokens.every((t) => t.timing.elapsedMs > 0));
  assert.deepEqual(seen.tokens, [8180, 3365]);
  assert.deepEqual(seen.metrics, [2]);
  assert.deepEqual(seen.status, ['generating', 'paused', 'generating', 'done']);
  assert.equal((await stream.result).stopReason, 'maxTokens');
});

test('cancel ends the iteration at once with an AbortError and tells the worker', async () => {
  const worker = new StandInWorker();
  const channel = new WorkerChannel(worker);
  const model = new Model(channel, fixtures.loadedModel);
  const status = [];
  const stream = model.generateStream('hi', { onStatusChange: (s) => status.push(s) });
  const [first, second] = streamReplies(1);
  worker.reply(first);
  assert.deepEqual(await stream.next(), { value: first.value, done: false });
  const pending = stream.next();
  const cancelled = stream.cancel('stop');
  await assert.rejects(pending, (err) => err instanceof AbortError && err instanceof AccelerateError && err.name === 'AbortError' && /stop/.test(err.message));
  await settle();
  assert.deepEqual(worker.posted[1], { id: 2, type: 'cancel', target: 1, reason: 'stop' });
  worker.reply(second); // in flight before the worker saw the cancel: dropped
  worker.reply({ id: 2, type: 'result', value: { target: 1, state: 'cancelled' } });
  await cancelled;
  worker.reply(streamReplies(1)[3]);
  assert.equal((await stream.result).stopReason, 'cancelled');
  assert.deepEqual(await stream.next(), { value: undefined, done: true });
  assert.deepEqual(status, ['generating', 'cancelled']);
  await stream.cancel(); // no effect once ended
  assert.equal(worker.posted.length, 2);
});

test('an AbortSignal cancels a stream (before or during it) and a plain generate', async () => {
  const worker = new StandInWorker();
  const channel = new WorkerChannel(worker);
  const model = new Model(channel, fixtures.loadedModel);
  const controller = new AbortController();
  const stream = model.generateStream('hi', { signal: controller.signal });
  const pending = stream.next();
  controller.abort(new Error('user left'));
  await assert.rejects(pending, (err) => err.name === 'AbortError' && /user left/.test(err.message));
  await settle();
  assert.deepEqual(worker.posted[1], { id: 2, type: 'cancel', target: 1, reason: 'Error: user left' });

  // Already aborted: nothing is sent.
  const early = model.generateStream('hi', { signal: AbortSignal.abort() });
  await assert.rejects(early.next(), (err) => err.name === 'AbortError');
  await assert.rejects(early.result, (err) => err.name === 'AbortError');
  assert.equal(early.status, 'cancelled');
  assert.equal(worker.posted.length, 2);

  const again = new AbortController();
  const generated = model.generate('hi', { maxTokens: 3, signal: again.signal });
  await settle();
  assert.deepEqual(worker.posted[2], { id: 3, type: 'generate', modelId: 'smollm2-135m#1', prompt: 'hi', maxTokens: 3 });
  again.abort();
  await assert.rejects(generated, (err) => err instanceof AbortError);
  await settle();
  assert.deepEqual(worker.posted[3], { id: 4, type: 'cancel', target: 3, reason: 'AbortError: This operation was aborted' });
});

test('a stream that fails rejects after its buffered tokens; the error keeps its name', async () => {
  const worker = new StandInWorker();
  const model = new Model(new WorkerChannel(worker), fixtures.loadedModel);
  const stream = model.generateStream('hi');
  worker.reply(streamReplies(1)[0]);
  worker.reply({ ...fixtures.replies[3], id: 1 });
  await settle();
  assert.equal(stream.status, 'error');
  assert.equal((await stream.next()).value.tokenId, 8180);
  await assert.rejects(stream.next(), (err) => err.name === 'ModelNotLoadedError');
  await assert.rejects(stream.result, (err) => err.name === 'ModelNotLoadedError');
  // An unsupported option is the stream's error, not a throw.
  const bad = model.generateStream('hi', { stopSequences: ['.'] });
  await assert.rejects(bad.next(), (err) => err.name === 'InvalidParameterError');
});
