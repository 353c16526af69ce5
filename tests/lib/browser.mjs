// Shared set-up for the browser suite: Debian's Chromium driven by playwright-core (no browser
// download), a fresh profile per test, and the staged site served on a free loopback port.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';
import { chromium } from 'playwright-core';
import { startServer } from '../../scripts/serve.mjs';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DIST = join(REPO, 'dist');
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** The site as `make demo` serves it, plus test-only pages under /test/. */
export function serveSite(options = {}) {
  return startServer({ root: DIST, mounts: { '/test/': join(REPO, 'tests', 'pages') }, ...options });
}

/**
 * Launches headless Chromium with a fresh profile. `webgpu: false` leaves out
 * --enable-unsafe-webgpu, which is how a browser without WebGPU is simulated.
 * Returns {context, close()}; close() also deletes the profile.
 */
export async function launchBrowser({ webgpu = true } = {}) {
  const profile = await mkdtemp(join(tmpdir(), 'accel-chromium-'));
  const args = [
    '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
  ];
  if (webgpu) args.push('--enable-unsafe-webgpu');
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args });
  return {
    context,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** Collects console errors, page errors and failed requests of a page, for "no errors" checks. */
export function watchErrors(page) {
  const errors = [];
  page.on('console', (msg) => { if (msg.type() === 'error') errors.push(`console: ${msg.text()}`); });
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  page.on('response', (res) => { if (res.status() >= 400) errors.push(`HTTP ${res.status()} ${res.url()}`); });
  return errors;
}

/**
 * The site served (`serverOptions` as serveSite's) and a fresh browser on the test harness page
 * (`window.accel` loaded). Returns {server, browser, page, errors, close()}.
 */
export async function openHarness(serverOptions = {}) {
  const server = await serveSite(serverOptions);
  const browser = await launchBrowser();
  const page = await browser.context.newPage();
  const errors = watchErrors(page);
  await page.goto(`${server.url}/test/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  return {
    server, browser, page, errors,
    async close() {
      await browser.close();
      await server.close();
    },
  };
}

/**
 * openHarness() for a whole test file: opened before its first test, closed after its last.
 * The returned object gets {server, browser, page, errors} once the `before` hook has run.
 */
export function harnessPerFile(serverOptions = {}) {
  const harness = {};
  before(async () => Object.assign(harness, await openHarness(serverOptions)));
  after(async () => harness.close?.());
  return harness;
}
