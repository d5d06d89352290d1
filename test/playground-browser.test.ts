/**
 * The MoE playground in headless Chromium (Debian `chromium` driven by playwright-core, launched
 * with --no-sandbox --enable-unsafe-webgpu): it loads without console errors, trains in its Worker
 * (the loss falls, pause/step work), the shown drop rate follows the routers' capacity semantics
 * (docs/moe.md), settings survive in the URL, and each task's view draws its experts. Screenshots of
 * the main views go to build/playground-screenshots/ (and to docs/ with SWITCHYARD_UPDATE_DOCS=1).
 * Skipped when /usr/bin/chromium is missing, unless SWITCHYARD_REQUIRE_BROWSER=1.
 */
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { buildPlayground } from '../src/cli/playground-build.js';
import { servePlayground, type PlaygroundServer } from '../src/cli/playground-server.js';

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
const required = process.env.SWITCHYARD_REQUIRE_BROWSER === '1';
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const shots = join(root, 'build', 'playground-screenshots');

if (!haveChromium && !required) {
  console.warn(`playground-browser.test: skipped: ${CHROMIUM} not found (apt-get install chromium; set SWITCHYARD_REQUIRE_BROWSER=1 to make this a failure)`);
}

interface Record_ { step: number; loss: number; dropFraction: number; droppedTokens: number; tokens: number; version: number }

describe('MoE playground in headless Chromium', () => {
  if (!haveChromium && required) {
    it('Chromium is required (SWITCHYARD_REQUIRE_BROWSER=1) but missing', () => {
      expect.fail(`${CHROMIUM} not found but SWITCHYARD_REQUIRE_BROWSER=1: install Debian's chromium (apt-get install -y chromium)`);
    });
  }

  describe.runIf(haveChromium)('with /usr/bin/chromium', () => {
    let browser: Browser;
    let site: string;
    let server: PlaygroundServer;

    beforeAll(async () => {
      site = await mkdtemp(join(tmpdir(), 'switchyard-playground-'));
      await buildPlayground(join(site, 'www'));
      server = await servePlayground(join(site, 'www'), { port: 0 });
      const { chromium } = await import('playwright-core');
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ['--headless', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      });
      await mkdir(shots, { recursive: true });
    }, 60_000);

    afterAll(async () => {
      await browser?.close();
      await server?.close();
      if (site) await rm(site, { recursive: true, force: true });
    });

    /** Open the playground with a query string, collecting console errors, page errors and off-site requests. */
    async function open(query = '', on: Browser = browser, height = 1000): Promise<{ page: Page; problems: string[] }> {
      const page = await on.newPage({ viewport: { width: 1400, height } });
      const problems: string[] = [];
      page.on('console', (msg) => {
        if (msg.type() === 'error' || msg.type() === 'warning') problems.push(`console.${msg.type()}: ${msg.text()}`);
      });
      page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
      page.on('request', (req) => {
        if (!req.url().startsWith(server.url) && !req.url().startsWith('data:')) problems.push(`request: ${req.url()}`);
      });
      page.on('requestfailed', (req) => problems.push(`requestfailed: ${req.url()}`));
      await page.goto(server.url + query, { waitUntil: 'load' });
      return { page, problems };
    }

    const history = (page: Page): Promise<Record_[]> => page.evaluate(() => (window as unknown as { __playground: { history(): Record_[] } }).__playground.history());

    /** Wait for `poll` to pass; on failure say what the page showed (a Worker that failed to load shows it in #errors). */
    async function waitOr(page: Page, poll: () => Promise<void>): Promise<void> {
      try {
        await poll();
      } catch (e) {
        const shown = await page.locator('#errors').textContent().catch(() => '?');
        const status = await page.locator('#status').textContent().catch(() => '?');
        throw new Error(`${(e as Error).message}; page status: ${status}; page errors: ${shown}`);
      }
    }

    /** Wait until at least n steps ran with the current settings. */
    async function stepsWithCurrentSettings(page: Page, n: number): Promise<void> {
      await waitOr(page, () => expect
        .poll(
          () => page.evaluate(() => {
            const p = (window as unknown as { __playground: { history(): { version: number }[]; version(): number } }).__playground;
            const v = p.version();
            return p.history().filter((r) => r.version === v).length;
          }),
          { timeout: 40_000, interval: 200 },
        )
        .toBeGreaterThanOrEqual(n));
    }

    /** The drop rate the page shows (mean over the last steps with the current settings). */
    async function shownDrop(page: Page): Promise<number> {
      await expect.poll(() => page.locator('#drop-rate').getAttribute('data-value'), { timeout: 10_000 }).not.toBe('');
      return Number(await page.locator('#drop-rate').getAttribute('data-value'));
    }

    it('loads without errors, trains in the Worker until the loss falls, and pauses and steps', async () => {
      const { page, problems } = await open();
      try {
        await expect.poll(() => page.locator('#status').textContent(), { timeout: 20_000 }).toMatch(/step \d+/);
        await waitOr(page, () => expect.poll(async () => (await history(page)).length, { timeout: 50_000, interval: 250 }).toBeGreaterThanOrEqual(200));
        const h = await history(page);
        const mean = (xs: Record_[]): number => xs.reduce((a, r) => a + r.loss, 0) / xs.length;
        const first = mean(h.slice(0, 10)), last = mean(h.slice(-20));
        // Uniform guessing over the ~70-character vocabulary is ln 70 ≈ 4.2 nats; 200 steps get well below.
        expect(first).toBeGreaterThan(3.5);
        expect(last).toBeLessThan(first * 0.8);
        await page.getByRole('button', { name: 'Pause' }).click();
        await expect.poll(() => page.getByRole('button', { name: 'Run' }).getAttribute('aria-pressed')).toBe('false');
        await page.waitForTimeout(300); // the slice in flight when Pause was clicked
        const paused = (await history(page)).length;
        await page.waitForTimeout(700);
        expect((await history(page)).length).toBe(paused);
        await page.getByRole('button', { name: 'Step' }).click();
        await expect.poll(async () => (await history(page)).length, { timeout: 10_000 }).toBe(paused + 1);
        // Hovering a character shows its router probabilities.
        await page.locator('#text-view span').nth(40).hover();
        await expect.poll(() => page.locator('#tooltip').isVisible()).toBe(true);
        await expect.poll(() => page.locator('#tooltip').textContent()).toMatch(/expert \d+\s*\d+\.\d%/);
        // Keyboard: the text panel takes focus and the arrow keys walk its characters with the same tooltip.
        await page.mouse.move(0, 0);
        await expect.poll(() => page.locator('#tooltip').isVisible()).toBe(false);
        await page.locator('#text-view').focus();
        await page.keyboard.press('ArrowRight');
        await expect.poll(() => page.locator('#tooltip').isVisible()).toBe(true);
        await expect.poll(() => page.locator('#text-view span.cursor').count()).toBe(1);
        const colours = await page.locator('#text-view span').evaluateAll((spans) => new Set(spans.map((s) => (s as HTMLElement).style.background)).size);
        expect(colours).toBeGreaterThanOrEqual(2);
        expect(await page.locator('#text-view span').count()).toBe(320);
        await page.getByRole('button', { name: 'Run' }).click();
        // The backend changes live: training goes on, on the TypeScript reference backend.
        await page.locator('#backend').selectOption('reference');
        await expect.poll(() => page.locator('#status').textContent(), { timeout: 20_000 }).toMatch(/backend: TypeScript reference/);
        const before = (await history(page)).length;
        await expect.poll(async () => (await history(page)).length, { timeout: 20_000 }).toBeGreaterThan(before + 5);
        await page.locator('#backend').selectOption('wasm');
        await expect.poll(() => page.locator('#status').textContent(), { timeout: 20_000 }).toMatch(/backend: wasm/);
        await page.waitForTimeout(500);
        await page.screenshot({ path: join(shots, 'playground.png') });
        expect(problems).toEqual([]);
      } finally {
        await page.close();
      }
    });

    it('shows the drop rate the router and capacity factor predict, and keeps the settings in the URL', async () => {
      // 64 tokens, 4 experts. Switch (top-1) gives each expert C = ceil(cf · 64 / 4) slots.
      const { page, problems } = await open('?router=switch&cf=0.5');
      try {
        await stepsWithCurrentSettings(page, 5);
        // cf 0.5: C = 8, at most 32 of 64 assignments are kept.
        expect(await shownDrop(page)).toBeGreaterThanOrEqual(0.5 - 1e-9);
        // cf 4 (End on the slider): C = 64 = every token, so nothing can drop.
        await page.locator('#capacity').focus();
        await page.keyboard.press('End');
        await expect.poll(() => page.locator('#capacity-value').textContent()).toBe('4.00');
        await stepsWithCurrentSettings(page, 5);
        expect(await shownDrop(page)).toBe(0);
        // cf 0.25 (Home): C = 4, at most 16 kept: ≥ 75 % dropped.
        await page.keyboard.press('Home');
        await stepsWithCurrentSettings(page, 5);
        expect(await shownDrop(page)).toBeGreaterThanOrEqual(0.75 - 1e-9);
        // Expert choice at cf 0.25: 4 experts each pick 4 tokens, so at least 48 of 64 tokens get none.
        await page.locator('#router').selectOption('expert-choice');
        await stepsWithCurrentSettings(page, 5);
        expect(await shownDrop(page)).toBeGreaterThanOrEqual(0.75 - 1e-9);
        await expect.poll(() => page.locator('#drop-rate').textContent()).toContain('tokens chosen by no expert');
        // Soft MoE drops nothing, whatever the capacity.
        await page.locator('#router').selectOption('soft');
        await expect.poll(() => page.locator('#capacity').isDisabled()).toBe(true);
        await stepsWithCurrentSettings(page, 5);
        expect(await shownDrop(page)).toBe(0);
        // Dropless top-2 drops nothing.
        await page.locator('#router').selectOption('topk');
        await page.getByLabel('No capacity limit (dropless)').check();
        await stepsWithCurrentSettings(page, 5);
        expect(await shownDrop(page)).toBe(0);
        // And top-2 at cf 0.5: C = ceil(0.5 · 64 · 2 / 4) = 16 slots each, at most 64 of 128 kept.
        await page.getByLabel('No capacity limit (dropless)').uncheck();
        await page.locator('#capacity').focus();
        await page.keyboard.press('Home');
        for (let i = 0; i < 5; i++) await page.keyboard.press('ArrowRight'); // 0.25 + 5 · 0.05 = 0.5
        await expect.poll(() => page.locator('#capacity-value').textContent()).toBe('0.50');
        await stepsWithCurrentSettings(page, 5);
        expect(await shownDrop(page)).toBeGreaterThanOrEqual(0.5 - 1e-9);
        // The URL holds the settings: a fresh page from it shows the same knobs.
        const url = page.url();
        expect(url).toMatch(/cf=0\.5/);
        expect(url).not.toMatch(/router=/); // top-k is the default
        const again = await open(url.slice(server.url.length));
        try {
          await expect.poll(() => again.page.locator('#router').inputValue()).toBe('topk');
          await expect.poll(() => again.page.locator('#capacity-value').textContent()).toBe('0.50');
          await expect.poll(() => again.page.locator('#dropless').isChecked()).toBe(false);
          expect(again.problems).toEqual([]);
        } finally {
          await again.page.close();
        }
        expect(problems).toEqual([]);
      } finally {
        await page.close();
      }
    });

    it('draws each expert’s region of the 2-D plane and each image class’s experts', async () => {
      const plane = await open('?task=plane', browser, 1350);
      try {
        await waitOr(plane.page, () => expect.poll(async () => (await history(plane.page)).length, { timeout: 40_000, interval: 250 }).toBeGreaterThanOrEqual(150));
        await plane.page.waitForTimeout(600); // the next view
        // Which experts' colours (plain, or shaded where class ● is predicted) fill the plane's cells.
        const experts = await plane.page.locator('#plane-view').evaluate((c, palette) => {
          const canvas = c as HTMLCanvasElement;
          const d = (canvas.getContext('2d') as CanvasRenderingContext2D).getImageData(0, 0, canvas.width, canvas.height).data;
          const rgb = palette.map((h) => [1, 3, 5].map((o) => parseInt(h.slice(o, o + 2), 16)));
          const seen = new Set<number>();
          for (let i = 0; i < d.length; i += 4 * 13) {
            rgb.forEach((col, e) => {
              for (const f of [1, 0.78]) if (col.every((v, j) => Math.abs(v * f - d[i + j]) <= 2)) seen.add(e);
            });
          }
          return [...seen].sort();
        }, ['#E69F00', '#56B4E9', '#009E73', '#F0E442']);
        expect(experts.length).toBeGreaterThanOrEqual(2);
        const note = await plane.page.locator('#task-note').textContent();
        // The note's shares of the plane name the same experts as the pixels.
        const owning = [...(note ?? '').matchAll(/(\d+): (\d+)%/g)].filter((m) => Number(m[2]) > 0).map((m) => Number(m[1]));
        for (const e of owning) expect(experts).toContain(e);
        await expect.poll(() => plane.page.locator('#task-note').textContent()).toMatch(/Accuracy \d/);
        await plane.page.screenshot({ path: join(shots, 'playground-plane.png') });
        expect(plane.problems).toEqual([]);
      } finally {
        await plane.page.close();
      }
      const images = await open('?task=images&router=switch&cf=1.25', browser, 1350);
      try {
        await waitOr(images.page, () => expect.poll(async () => (await history(images.page)).length, { timeout: 40_000, interval: 250 }).toBeGreaterThanOrEqual(100));
        await images.page.waitForTimeout(600);
        await expect.poll(() => images.page.locator('#thumbs canvas').count()).toBe(16);
        await expect.poll(() => images.page.locator('#task-note').textContent()).toMatch(/Accuracy \d/);
        await images.page.screenshot({ path: join(shots, 'playground-images.png') });
        expect(images.problems).toEqual([]);
      } finally {
        await images.page.close();
      }
      if (process.env.SWITCHYARD_UPDATE_DOCS === '1') {
        for (const f of ['playground.png', 'playground-plane.png', 'playground-images.png']) await copyFile(join(shots, f), join(root, 'docs', f));
      }
      console.log(`playground screenshots: ${shots}`);
    });

    it('trains to the same numbers on the wasm, WebGPU (SwiftShader) and TypeScript reference backends', async () => {
      // Its own browser: after WebGPU ran, SwiftShader's GPU process can leave later pages' 2-D
      // canvases unreadable, which must not leak into the other tests.
      const { chromium } = await import('playwright-core');
      const own = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
      const firstLosses = async (backend: string, pattern: RegExp): Promise<number[]> => {
        const { page, problems } = await open(`?task=plane&backend=${backend}`, own);
        try {
          await waitOr(page, () => expect.poll(async () => (await history(page)).length, { timeout: 45_000, interval: 250 }).toBeGreaterThanOrEqual(3));
          await expect.poll(() => page.locator('#status').textContent()).toMatch(pattern);
          expect(problems).toEqual([]);
          return (await history(page)).slice(0, 3).map((r) => r.loss);
        } finally {
          await page.close();
        }
      };
      let ref: number[], wasm: number[], gpu: number[];
      try {
        ref = await firstLosses('reference', /backend: TypeScript reference/);
        // Same seed, same batches: the first steps agree to float rounding whichever backend runs them.
        wasm = await firstLosses('wasm', /backend: wasm \(\d+ thread/);
        gpu = await firstLosses('auto', /backend: webgpu/);
      } finally {
        await own.close();
      }
      for (let i = 0; i < 3; i++) {
        expect(Math.abs(wasm[i] - ref[i]), `wasm step ${i + 1}`).toBeLessThan(1e-3);
        expect(Math.abs(gpu[i] - ref[i]), `webgpu step ${i + 1}`).toBeLessThan(1e-3);
      }
    }, 120_000);
  });
});
