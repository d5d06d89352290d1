// The MoE playground in headless Chromium (Debian's /usr/bin/chromium via playwright-core): training
// steps per second of the Worker for each task, how soon the page is interactive and trains, and
// the longest gap between animation frames while it trains and the longest time one frame spent
// drawing (the UI thread must not block: a long gap with short drawing is the OS, not the page).
// Rounds alternate between the tasks; medians are printed. Run from `npm run bench` (needs dist/).
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CHROMIUM = '/usr/bin/chromium';
if (!existsSync(CHROMIUM)) {
  console.log(`\n## playground: skipped (${CHROMIUM} not found)`);
  process.exit(0);
}
const { buildPlayground } = await import('../dist/cli/playground-build.js');
const { servePlayground } = await import('../dist/cli/playground-server.js');
const { chromium } = await import('playwright-core');

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const WINDOW_MS = Number(process.env.BENCH_WINDOW_MS ?? 4000);
// The default page (char LM, top-2 dropless, 4 experts) on each backend, then the other tasks on wasm.
const CASES = [
  { name: 'char LM, top-2, 4 experts', query: '?backend=wasm' },
  { name: 'char LM, top-2, 4 experts', query: '?backend=reference' },
  { name: 'char LM, top-2, 4 experts', query: '?backend=auto' },
  { name: 'char LM, Switch cf 1.25, 8 experts', query: '?router=switch&cf=1.25&experts=8&backend=wasm' },
  { name: '2-D plane, top-2, 4 experts', query: '?task=plane&backend=wasm' },
  { name: 'images 14x14, top-2, 4 experts', query: '?task=images&backend=wasm' },
];
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const dir = await mkdtemp(join(tmpdir(), 'switchyard-bench-playground-'));
await buildPlayground(join(dir, 'www'));
const server = await servePlayground(join(dir, 'www'), { port: 0 });
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--enable-unsafe-webgpu'] });
const results = CASES.map(() => ({ sps: [], interactive: [], firstStep: [], gap: [], draw: [], backend: '' }));
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, c] of CASES.entries()) {
      const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
      await page.goto(server.url + c.query, { waitUntil: 'load' });
      await page.waitForFunction(() => window.__playground?.history().length > 5, null, { timeout: 90_000 });
      const t = await page.evaluate(() => window.__playground.timing());
      results[i].backend = (await page.locator('#status').textContent()).match(/backend: ([^·]+)/)?.[1].trim() ?? '?';
      const n0 = await page.evaluate(() => [window.__playground.history().length, performance.now(), window.__playground.takeLongestFrameGap(), window.__playground.takeLongestDraw()]);
      await page.waitForTimeout(WINDOW_MS);
      const n1 = await page.evaluate(() => [window.__playground.history().length, performance.now(), window.__playground.takeLongestFrameGap(), window.__playground.takeLongestDraw()]);
      results[i].sps.push(((n1[0] - n0[0]) / (n1[1] - n0[1])) * 1000);
      results[i].interactive.push(t.interactiveMs);
      results[i].firstStep.push(t.firstStepMs);
      results[i].gap.push(n1[2]);
      results[i].draw.push(n1[3]);
      await page.close();
    }
  }
} finally {
  await browser.close();
  await server.close();
  await rm(dir, { recursive: true, force: true });
}
console.log(`\n## playground (headless Chromium --enable-unsafe-webgpu, training in a Worker; medians of ${ROUNDS} alternating rounds, ${WINDOW_MS / 1000} s windows)`);
console.log('| case | backend | training steps/s | interactive (ms) | first step shown (ms) | longest frame gap while training (ms) | longest drawing of one frame (ms) |');
console.log('|---|---|---|---|---|---|---|');
for (const [i, c] of CASES.entries()) {
  const r = results[i];
  console.log(`| ${c.name} | ${r.backend} | ${median(r.sps).toFixed(1)} | ${median(r.interactive).toFixed(0)} | ${median(r.firstStep).toFixed(0)} | ${median(r.gap).toFixed(0)} | ${median(r.draw).toFixed(1)} |`);
}
