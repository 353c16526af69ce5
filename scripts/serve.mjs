// Static HTTP server for the demo and the browser tests.
//
//   node scripts/serve.mjs [--root dist] [--port 8080] [--host 127.0.0.1]
//
// Correct MIME types (.wasm must be application/wasm for streaming compilation), single-range
// `Range` requests (resumable shard downloads), `Cache-Control: no-cache` (the service worker
// does the caching), symlinks followed (models are linked from the cache outside git). As a
// module it exports `startServer` for tests, with a request log and hooks to shape responses.
import { createServer } from 'node:http';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

export const MIME_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.webmanifest': 'application/manifest+json',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
  '.gguf': 'application/octet-stream',
  '.safetensors': 'application/octet-stream',
  '.bin': 'application/octet-stream',
};

/** Parses `bytes=a-b` / `bytes=a-` / `bytes=-n` against `size`; null when unsatisfiable. */
export function parseRange(header, size) {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  let start, end;
  if (m[1] === '') {
    start = Math.max(0, size - Number(m[2]));
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  return start <= end && start < size ? { start, end } : null;
}

/** Flips every byte of the 1000th position in each chunk (test hook: a corrupt mirror). */
function flipBytes() {
  return new Transform({
    transform(chunk, _enc, done) {
      const copy = Buffer.from(chunk);
      for (let i = 0; i < copy.length; i += 1000) copy[i] ^= 0xff;
      done(null, copy);
    },
  });
}

/** Passes bytes through at about `rate` bytes per second (test hook: a slow network). */
function throttle(rate) {
  return new Transform({
    transform(chunk, _enc, done) {
      const parts = [];
      for (let i = 0; i < chunk.length; i += 16384) parts.push(chunk.subarray(i, i + 16384));
      const next = () => {
        const part = parts.shift();
        if (!part) return done();
        this.push(part);
        setTimeout(next, (part.length / rate) * 1000);
      };
      next();
    },
  });
}

/**
 * Starts serving `root` (plus `mounts`: {'/prefix/': dir}). Resolves to
 * {url, port, requests, close()}; `requests` logs {method, path, range, status, time, bytes,
 * end} (`bytes`: body bytes sent, `end`: when the response finished or broke off).
 *
 * Test hooks (never used by `make demo`):
 *   cors: true          adds Access-Control-Allow-Origin: * (a mirror on another origin)
 *   rewrite(path, buf)  returns replacement bytes for a whole file (e.g. add mirrors to a manifest)
 *   fault(entry, size)  returns {corrupt: true} to flip bytes of the body, or
 *                       {dropAfter: n} to break the connection after n body bytes
 *   bytesPerSecond      throttles every body to this rate
 *
 * Other options:
 *   headers: {...}      extra headers sent with every response (e.g. COOP/COEP for
 *                       cross-origin isolation, used by scripts/bench-browser.mjs)
 */
export async function startServer({ root, port = 0, host = '127.0.0.1', mounts = {}, quiet = true, cors = false, rewrite = null, fault = null, bytesPerSecond = 0, headers: extraHeaders = {} } = {}) {
  const corsHeaders = cors ? { 'Access-Control-Allow-Origin': '*', 'Access-Control-Expose-Headers': 'Content-Range, Content-Length' } : {};
  const everyResponse = { ...extraHeaders, ...corsHeaders };
  const roots = [...Object.entries(mounts).map(([prefix, dir]) => [prefix, resolve(dir)]), ['/', resolve(root)]];
  const requests = [];
  const sockets = new Set();

  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const entry = { method: req.method, path, range: req.headers.range ?? null, status: 0, time: Date.now(), bytes: 0, end: null };
    requests.push(entry);
    const finish = (status, headers = {}, body = '') => {
      entry.status = status;
      entry.end = Date.now();
      res.writeHead(status, { ...everyResponse, ...headers }).end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return finish(405, { Allow: 'GET, HEAD' });
    const [prefix, dir] = roots.find(([p]) => path.startsWith(p));
    let file = normalize(join(dir, path.slice(prefix.length)));
    if (file !== dir && !file.startsWith(dir + sep)) return finish(403);
    let info;
    try {
      info = await stat(file);
      if (info.isDirectory()) {
        file = join(file, 'index.html');
        info = await stat(file);
      }
    } catch {
      return finish(404, { 'Content-Type': 'text/plain' }, `not found: ${path}\n`);
    }
    const rewritten = rewrite ? await rewrite(path, await readFile(file)) : null;
    const size = rewritten ? rewritten.length : info.size;
    const headers = {
      ...everyResponse,
      'Content-Type': MIME_TYPES[extname(file)] ?? 'application/octet-stream',
      'Accept-Ranges': 'bytes',
      'Cache-Control': 'no-cache',
      'Last-Modified': info.mtime.toUTCString(),
    };
    let start = 0, end = size - 1, status = 200;
    if (req.headers.range) {
      const range = parseRange(req.headers.range, size);
      if (!range) return finish(416, { 'Content-Range': `bytes */${size}` });
      ({ start, end } = range);
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
    }
    headers['Content-Length'] = end - start + 1;
    entry.status = status;
    res.writeHead(status, headers);
    if (req.method === 'HEAD' || size === 0) {
      entry.end = Date.now();
      return res.end();
    }
    const shaped = fault?.(entry, size) ?? {};
    let body = rewritten ? Readable.from([rewritten.subarray(start, end + 1)]) : createReadStream(file, { start, end });
    if (shaped.corrupt) body = body.pipe(flipBytes());
    if (bytesPerSecond > 0) body = body.pipe(throttle(bytesPerSecond));
    const limit = shaped.dropAfter ?? Infinity;
    body.on('data', (chunk) => {
      const room = limit - entry.bytes;
      const part = chunk.length <= room ? chunk : chunk.subarray(0, Math.max(0, room));
      entry.bytes += part.length;
      if (part.length && !res.write(part)) {
        body.pause();
        res.once('drain', () => body.resume());
      }
      if (entry.bytes >= limit) {
        // Break the connection mid-body: the client sees a truncated transfer.
        body.destroy();
        entry.end = Date.now();
        res.destroy();
      }
    });
    body.on('end', () => {
      entry.end = Date.now();
      res.end();
    });
    body.on('error', () => res.destroy());
    res.on('close', () => body.destroy());
  });

  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise((ok, fail) => server.once('error', fail).listen(port, host, ok));
  const actual = server.address().port;
  const url = `http://${host}:${actual}`;
  if (!quiet) console.log(`serving ${resolve(root)} at ${url}/`);
  return {
    url,
    port: actual,
    requests,
    /** Stops listening and drops open connections, so the browser really sees the server gone. */
    close: () => new Promise((ok) => {
      server.close(() => ok());
      for (const s of sockets) s.destroy();
    }),
  };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const opt = (name, fallback) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : fallback;
  };
  const root = opt('root', 'dist');
  const port = Number(opt('port', process.env.PORT ?? 8080));
  const host = opt('host', '127.0.0.1');
  await stat(root).catch(() => {
    console.error(`error: ${root} does not exist; run \`make web\` (or \`make demo\`) first`);
    process.exit(1);
  });
  const server = await startServer({ root, port, host }).catch((err) => {
    console.error(`error: cannot listen on ${host}:${port}: ${err.message}; set PORT to a free port`);
    process.exit(1);
  });
  console.log(`\n  ipfs-accelerate-web demo: ${server.url}/\n`);
}
