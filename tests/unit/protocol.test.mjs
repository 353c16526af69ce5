// Host side of the protocol, without a browser: request shapes against the shared fixtures
// (tests/fixtures/protocol.json, also parsed by worker/src/protocol.rs) and reply routing with a
// stand-in worker (routing logic only; the real worker is exercised by tests/e2e).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { AccelerateError, WorkerChannel, WorkerCrashedError, requests } from '../../host-js/protocol.js';
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
