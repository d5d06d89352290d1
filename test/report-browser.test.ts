/**
 * The report page in headless Chromium (Debian `chromium` driven by playwright-core): it opens from
 * file:// without console errors, page errors or any network request, and shows every chart.
 * Skipped (with a message) when /usr/bin/chromium is missing, unless SWITCHYARD_REQUIRE_BROWSER=1.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { exampleRunLog, writeReport } from '../src/report/index.js';

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
const required = process.env.SWITCHYARD_REQUIRE_BROWSER === '1';

if (!haveChromium && !required) {
  console.warn(`report-browser.test: skipped: ${CHROMIUM} not found (apt-get install chromium; set SWITCHYARD_REQUIRE_BROWSER=1 to make this a failure)`);
}

describe('report page in headless Chromium', () => {
  if (!haveChromium && required) {
    it('Chromium is required (SWITCHYARD_REQUIRE_BROWSER=1) but missing', () => {
      expect.fail(`${CHROMIUM} not found but SWITCHYARD_REQUIRE_BROWSER=1: install Debian's chromium (apt-get install -y chromium)`);
    });
  }

  describe.runIf(haveChromium)('with /usr/bin/chromium', () => {
    let browser: Browser;
    let dir: string;

    beforeAll(async () => {
      const { chromium } = await import('playwright-core');
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      });
      dir = await mkdtemp(join(tmpdir(), 'switchyard-report-browser-'));
    });

    afterAll(async () => {
      await browser?.close();
      // The screenshots stay (their paths are printed) for a person to look at; the reports go.
      if (dir) await rm(join(dir, 'moe'), { recursive: true, force: true });
      if (dir) await rm(join(dir, 'dense'), { recursive: true, force: true });
    });

    /** Open a report and collect every console error, page error and non-file request. */
    async function open(htmlPath: string): Promise<{ page: Page; problems: string[] }> {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const problems: string[] = [];
      page.on('console', (msg) => {
        if (msg.type() === 'error' || msg.type() === 'warning') problems.push(`console.${msg.type()}: ${msg.text()}`);
      });
      page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
      page.on('request', (req) => {
        if (!req.url().startsWith('file:') && !req.url().startsWith('data:')) problems.push(`request: ${req.url()}`);
      });
      page.on('requestfailed', (req) => problems.push(`requestfailed: ${req.url()}`));
      await page.goto(pathToFileURL(htmlPath).href, { waitUntil: 'load' });
      return { page, problems };
    }

    it('MoE run: opens without errors, shows every chart and the routing view', async () => {
      const log = exampleRunLog({ steps: 50, moeLayers: [1, 3], experts: 8 });
      const { html } = await writeReport(join(dir, 'moe'), log);
      const { page, problems } = await open(html);
      try {
        for (const id of ['loss', 'expert-load', 'drop-fraction', 'router-entropy', 'throughput']) {
          const svg = page.locator(`#chart-${id} svg`);
          await expect.poll(() => svg.count()).toBe(1);
          expect(await svg.isVisible(), `#chart-${id} visible`).toBe(true);
          const box = await svg.boundingBox();
          expect(box, `#chart-${id} box`).not.toBeNull();
          expect(box!.width).toBeGreaterThan(300);
          expect(box!.height).toBeGreaterThan(150);
          // The chart actually drew marks.
          expect(await page.locator(`#chart-${id} svg path`).count()).toBeGreaterThan(5);
        }
        // Routing: layer 1 shown first; the layer selector (pure CSS) switches panels.
        const p0 = page.locator('.routing-panel.rp-0');
        const p1 = page.locator('.routing-panel.rp-1');
        expect(await p0.isVisible()).toBe(true);
        expect(await p1.isVisible()).toBe(false);
        await page.locator('label[for="rl-1"]').click();
        expect(await p0.isVisible()).toBe(false);
        expect(await p1.isVisible()).toBe(true);
        // Token colours come from the expert palette, and the injected markup stayed text.
        const tokens = p1.locator('.tok');
        expect(await tokens.count()).toBe(log.routingSample!.tokens.length);
        // (Runs in the page; the test's tsconfig has no DOM lib, hence the structural type.)
        type Win = { getComputedStyle(el: unknown): { backgroundColor: string } };
        const bg = await tokens.first().evaluate((el) => (globalThis as unknown as Win).getComputedStyle(el).backgroundColor);
        expect(bg).not.toBe('rgba(0, 0, 0, 0)');
        expect(await page.locator('.routing-panels script').count()).toBe(0);
        expect(await p1.locator('.tok', { hasText: '<script>' }).count()).toBe(1);
        // Hover: details of the token, others dimmed.
        await tokens.nth(2).hover();
        await expect.poll(() => page.locator('.tok-info').textContent()).toMatch(/layer 3 · expert \d+ \(gate [\d.]+\)/);
        expect(await p1.getAttribute('data-hl')).toMatch(/^\d+$/);
        await page.locator('label[for="rl-0"]').click();

        const shot = join(dir, 'report-moe.png');
        await page.screenshot({ path: shot, fullPage: true });
        expect((await stat(shot)).size).toBeGreaterThan(10_000);
        console.log(`report screenshot: ${shot}`);
        expect(problems).toEqual([]);
      } finally {
        await page.close();
      }
    });

    it('dense run: opens without errors, shows loss and throughput and the note', async () => {
      const { html } = await writeReport(join(dir, 'dense'), exampleRunLog({ moeLayers: [] }));
      const { page, problems } = await open(html);
      try {
        for (const id of ['loss', 'throughput']) {
          const box = await page.locator(`#chart-${id} svg`).boundingBox();
          expect(box!.width).toBeGreaterThan(300);
          expect(box!.height).toBeGreaterThan(150);
        }
        expect(await page.locator('#chart-expert-load').count()).toBe(0);
        expect(await page.getByText('Dense run: no MoE layers').isVisible()).toBe(true);
        const shot = join(dir, 'report-dense.png');
        await page.screenshot({ path: shot, fullPage: true });
        console.log(`report screenshot: ${shot}`);
        expect(problems).toEqual([]);
      } finally {
        await page.close();
      }
    });
  });
});
