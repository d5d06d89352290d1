/**
 * The engine's op suite (test/browser/op-suite.ts: the cases and tolerances of
 * native-backend.test.ts) in headless Chromium, against the browser backends:
 *   - wasm, one thread, on a page that is NOT cross-origin isolated (the one-thread build);
 *   - wasm, threads on (the shared-memory build + module workers), on a COOP/COEP page;
 *   - WebGPU (WGSL kernels; SwiftShader's CPU adapter under headless Chromium), in a worker.
 * Chromium is Debian's /usr/bin/chromium driven by playwright-core, launched with
 * --no-sandbox --enable-unsafe-webgpu. Skipped with a message when Chromium, clang or a WebGPU
 * adapter is missing, unless SWITCHYARD_REQUIRE_BROWSER=1 / SWITCHYARD_REQUIRE_WEBGPU=1.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { buildBrowserBundle, serve } from './browser/harness.js';
import type { EntryReport } from './browser/entry-check.js';
import type { SuiteReport } from './browser/page.js';

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
const haveClang = spawnSync('clang', ['--version']).status === 0;
const requireBrowser = process.env.SWITCHYARD_REQUIRE_BROWSER === '1';
const requireWebgpu = process.env.SWITCHYARD_REQUIRE_WEBGPU === '1';
const canRun = haveChromium && haveClang;

if (!canRun && !requireBrowser) {
  console.warn(`browser-backends.test: skipped: ${!haveChromium ? `${CHROMIUM} not found` : 'clang not found'} (set SWITCHYARD_REQUIRE_BROWSER=1 to make this a failure)`);
}

describe('browser backends in headless Chromium', () => {
  if (!canRun && requireBrowser) {
    it('Chromium and clang are required (SWITCHYARD_REQUIRE_BROWSER=1)', () => {
      expect.fail(`${!haveChromium ? `${CHROMIUM} missing (apt-get install chromium)` : 'clang missing (apt-get install clang lld)'} but SWITCHYARD_REQUIRE_BROWSER=1`);
    });
  }

  describe.runIf(canRun)('with /usr/bin/chromium', () => {
    let browser: Browser;
    let dir: string;
    let server: { url: string; close(): Promise<void> };

    beforeAll(async () => {
      dir = await buildBrowserBundle();
      server = await serve(dir);
      const { chromium } = await import('playwright-core');
      browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking', '--no-first-run'] });
    }, 120_000);

    afterAll(async () => {
      await browser?.close();
      await server?.close();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    /** Open a page, wait for `key` on window, collect page errors. */
    async function open<K extends '__suite' | '__probe'>(pathAndQuery: string, key: K, timeoutMs: number): Promise<{ value: NonNullable<Window[K]>; errors: string[]; page: Page }> {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(`console.error: ${m.text()}`);
      });
      await page.goto(`${server.url}${pathAndQuery}`);
      await page.waitForFunction((k) => (window as unknown as Record<string, unknown>)[k] !== undefined, key, { timeout: timeoutMs, polling: 250 });
      const value = (await page.evaluate((k) => (window as unknown as Record<string, unknown>)[k], key)) as NonNullable<Window[K]>;
      await page.close();
      return { value, errors, page };
    }

    function expectAllPassed(r: SuiteReport, minTests: number): void {
      expect(r.error, 'suite setup error').toBeUndefined();
      const failed = r.results.filter((t) => !t.ok);
      expect(failed.map((t) => `${t.name}: ${t.error}`).join('\n')).toBe('');
      expect(r.results.length).toBeGreaterThanOrEqual(minTests);
    }

    it('the plain page is not cross-origin isolated; the /isolated/ page is (threads available)', async () => {
      const plain = await open('/plain/?probe=1', '__probe', 30_000);
      const iso = await open('/isolated/?probe=1', '__probe', 30_000);
      expect(plain.value.isolated).toBe(false);
      expect(plain.value.threadsAvailable).toBe(false);
      expect(iso.value.isolated).toBe(true);
      expect(iso.value.threadsAvailable).toBe(true);
      expect([...plain.errors, ...iso.errors]).toEqual([]);
    }, 60_000);

    it('op suite on wasm, threads off (page not cross-origin isolated: the one-thread build)', async () => {
      const { value, errors } = await open('/plain/?backend=wasm&threads=1', '__suite', 300_000);
      expect(value.isolated).toBe(false);
      expect(value.backend).toBe('wasm');
      expect(value.threads).toBe(1);
      expectAllPassed(value, 40);
      expect(errors).toEqual([]);
    }, 320_000);

    it('op suite on wasm, threads on (cross-origin isolated: shared memory + 3 workers), at 1 and 4 threads', async () => {
      const { value, errors } = await open('/isolated/?backend=wasm&threads=4', '__suite', 400_000);
      expect(value.isolated).toBe(true);
      expect(value.threads).toBe(4);
      // the suite runs once per thread count (1 and 4) plus determinism/validation checks
      expectAllPassed(value, 80);
      expect(errors).toEqual([]);
    }, 420_000);

    it('op suite on WebGPU (WGSL kernels, in a worker; SwiftShader adapter in headless Chromium)', async (ctx) => {
      const probe = await open('/isolated/?probe=1', '__probe', 30_000);
      if (probe.value.webgpu !== null) {
        if (requireWebgpu) expect.fail(`no WebGPU adapter (${probe.value.webgpu}) but SWITCHYARD_REQUIRE_WEBGPU=1`);
        console.warn(`browser-backends.test: WebGPU suite skipped: ${probe.value.webgpu}`);
        ctx.skip();
      }
      const { value, errors } = await open('/isolated/?backend=webgpu', '__suite', 400_000);
      expect(value.backend).toBe('webgpu');
      expect(value.adapter).toBeTruthy();
      expectAllPassed(value, 40);
      // the hot ops really ran as WGSL (not on the wasm fallback)
      for (const op of ['gemm', 'unary', 'gatedAct', 'affine', 'binary', 'softmax', 'logsumexp', 'gatherRows', 'scatterAddRows']) {
        expect(value.gpuCalls?.[op] ?? 0, `GPU calls of ${op}`).toBeGreaterThan(0);
      }
      expect(errors).toEqual([]);
    }, 460_000);

    /** Open /<mode>/entry.html?where=..., wait for the entry report. */
    async function entry(mode: 'plain' | 'isolated', where: 'page' | 'worker'): Promise<{ report: EntryReport; errors: string[] }> {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(`console.error: ${m.text()}`);
      });
      await page.goto(`${server.url}/${mode}/entry.html?where=${where}`);
      await page.waitForFunction(() => (window as unknown as { __entry?: unknown }).__entry !== undefined, null, { timeout: 60_000, polling: 250 });
      const report = (await page.evaluate(() => (window as unknown as { __entry: EntryReport }).__entry));
      await page.close();
      return { report, errors };
    }

    it("browser entry ('switchyard' via the exports 'browser' condition): wasm on a plain page's main thread, says why", async () => {
      const { report, errors } = await entry('plain', 'page');
      expect(report.error).toBeUndefined();
      expect(report.kind).toBe('wasm');
      expect(report.active).toBe('wasm');
      expect(report.description).toMatch(/^wasm \(1 thread\(s\)\): /);
      expect(report.maxRelErr).toBeLessThan(1e-4);
      expect(errors).toEqual([]);
    }, 90_000);

    it('browser entry in a worker of an isolated page: WebGPU when an adapter exists (else threaded wasm)', async () => {
      const probe = await open('/isolated/?probe=1', '__probe', 30_000);
      const { report, errors } = await entry('isolated', 'worker');
      expect(report.error).toBeUndefined();
      if (probe.value.webgpu === null) {
        expect(report.kind).toBe('webgpu');
        expect(report.active).toBe('webgpu');
        expect(report.description).toMatch(/^webgpu \(.+\); other kernels on wasm/);
      } else {
        if (requireWebgpu) expect.fail(`no WebGPU adapter (${probe.value.webgpu}) but SWITCHYARD_REQUIRE_WEBGPU=1`);
        expect(report.kind).toBe('wasm');
        expect(report.description).toContain(probe.value.webgpu);
      }
      expect(report.maxRelErr).toBeLessThan(1e-4);
      expect(errors).toEqual([]);
    }, 120_000);
  });
});
