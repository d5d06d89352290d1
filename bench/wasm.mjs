#!/usr/bin/env node
// wasm-backend matmul in headless Chromium next to the native backend in this Node process.
//
//   npm run build && node bench/wasm.mjs [--rounds 5] [--slice 0.3] [--sizes 256,512,1024]
//
// Serves dist/ from 127.0.0.1 with COOP/COEP (cross-origin isolated, so the threaded build and its
// workers can run), opens it in Debian's /usr/bin/chromium (playwright-core, headless), and times
// C = A·B (square, fp32) on the wasm backend at 1 thread and at all threads (navigator.hardwareConcurrency),
// alternating with the native backend at 1 thread and all threads, round by round, so both see the
// same machine state. Figures are medians of per-call GFLOP/s (2·n³ / seconds) over all rounds. The
// wasm figure includes copying A, B and C into and out of wasm memory (what a Backend.gemm call costs).
import { createReadStream, existsSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { loadNativeBackend, nativeLoadError } from '../dist/backend/native.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist');
const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : dflt;
};
const ROUNDS = Number(opt('--rounds', '5'));
const SLICE = Number(opt('--slice', '0.3'));
const SIZES = opt('--sizes', '256,512,1024').split(',').map(Number);
const CHROMIUM = '/usr/bin/chromium';

for (const f of ['backend/wasm.js', 'backend/switchyard.wasm', 'backend/switchyard-threads.wasm', 'backend/wasm-worker.js']) {
  if (!existsSync(path.join(dist, f))) {
    console.log(`wasm bench skipped: dist/${f} missing (npm run build; the wasm build needs clang + lld)`);
    process.exit(0);
  }
}
if (!existsSync(CHROMIUM)) {
  console.log(`wasm bench skipped: ${CHROMIUM} missing (apt-get install chromium)`);
  process.exit(0);
}
const nb = loadNativeBackend();
if (!nb) console.log(`native backend unavailable (${nativeLoadError()}): wasm figures only`);

const PAGE = `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><script type="module">
import { createWasmBackend } from './backend/wasm.js';
const backends = new Map();
const mats = new Map();
function rand(n, seed) { const a = new Float32Array(n); let s = seed; for (let i = 0; i < n; i++) { s = (s * 1664525 + 1013904223) >>> 0; a[i] = s / 2 ** 32 - 0.5; } return a; }
window.benchGemm = async (threads, n, seconds) => {
  if (!backends.has(threads)) backends.set(threads, await createWasmBackend({ threads }));
  const be = backends.get(threads);
  if (!mats.has(n)) mats.set(n, [rand(n * n, 1), rand(n * n, 2), new Float32Array(n * n)]);
  const [A, B, C] = mats.get(n);
  const params = new Int32Array([0, 0, n, 1, 0, n, 2, 0, n, n, n, n, 0]);
  be.gemm([A, B, C], params); // warm-up
  const rates = [];
  const end = performance.now() + seconds * 1000;
  do {
    const t0 = performance.now();
    be.gemm([A, B, C], params);
    rates.push((2 * n ** 3) / ((performance.now() - t0) / 1000) / 1e9);
  } while (performance.now() < end || rates.length < 3);
  return { rates, threads: be.threads };
};
window.cores = navigator.hardwareConcurrency;
window.ready = crossOriginIsolated;
</script>`;

const MIME = { '.js': 'text/javascript', '.wasm': 'application/wasm', '.html': 'text/html' };
const server = createServer((req, res) => {
  const u = new URL(req.url ?? '/', 'http://127.0.0.1');
  const headers = { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp', 'cache-control': 'no-store' };
  if (u.pathname === '/' || u.pathname === '/bench.html') {
    res.writeHead(200, { ...headers, 'content-type': 'text/html' }).end(PAGE);
    return;
  }
  const file = path.join(dist, path.normalize(u.pathname).replace(/^(\.\.[/\\])+/, ''));
  if (!file.startsWith(dist) || !existsSync(file) || !statSync(file).isFile()) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { ...headers, 'content-type': MIME[path.extname(file)] ?? 'application/octet-stream' });
  createReadStream(file).pipe(res);
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const url = `http://127.0.0.1:${server.address().port}/bench.html`;

const { chromium } = await import('playwright-core');
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--enable-unsafe-webgpu'] });
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  await page.goto(url);
  await page.waitForFunction(() => window.ready !== undefined && window.benchGemm !== undefined);
  if (!(await page.evaluate(() => window.ready))) throw new Error('bench page is not cross-origin isolated');
  const cores = await page.evaluate(() => window.cores);
  const allWasm = Math.max(1, Math.min(16, cores));
  const allNative = nb ? nb.defaultThreads : 1;
  const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
  };
  const nativeRates = (threads, n) => {
    nb.setThreads(threads);
    const A = new Float32Array(n * n).map((_, i) => Math.sin(i)), B = A.slice(), C = new Float32Array(n * n);
    const params = new Int32Array([0, 0, n, 1, 0, n, 2, 0, n, n, n, n, 0]);
    nb.gemm([A, B, C], params);
    const rates = [];
    const end = performance.now() + SLICE * 1000;
    do {
      const t0 = performance.now();
      nb.gemm([A, B, C], params);
      rates.push((2 * n ** 3) / ((performance.now() - t0) / 1000) / 1e9);
    } while (performance.now() < end || rates.length < 3);
    return rates;
  };
  console.log(`\nwasm backend matmul (C = A·B, fp32, square) in headless Chromium vs the native backend; ${ROUNDS} alternating rounds, median GFLOP/s`);
  console.log(`wasm: native/gemm.c with the SIMD128 micro-kernel (native/wasm/gemm_simd128.c); copies operands in/out of wasm memory per call. threads: 1 and ${allWasm} (wasm), 1 and ${allNative} (native)`);
  const header = ['n', 'native 1t', 'wasm 1t', 'wasm/native', `native ${allNative}t`, `wasm ${allWasm}t`, 'wasm/native'];
  const rows = [header];
  for (const n of SIZES) {
    const acc = { n1: [], w1: [], na: [], wa: [] };
    for (let r = 0; r < ROUNDS; r++) {
      if (nb) acc.n1.push(...nativeRates(1, n));
      acc.w1.push(...(await page.evaluate(([t, n, s]) => window.benchGemm(t, n, s), [1, n, SLICE])).rates);
      if (nb) acc.na.push(...nativeRates(allNative, n));
      acc.wa.push(...(await page.evaluate(([t, n, s]) => window.benchGemm(t, n, s), [allWasm, n, SLICE])).rates);
    }
    if (nb) nb.setThreads(0);
    const m = Object.fromEntries(Object.entries(acc).map(([k, v]) => [k, median(v)]));
    const f = (x) => (Number.isFinite(x) ? x.toFixed(1) : '-');
    const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) ? `${(a / b).toFixed(2)}x` : '-');
    rows.push([String(n), f(m.n1), f(m.w1), ratio(m.w1, m.n1), f(m.na), f(m.wa), ratio(m.wa, m.na)]);
  }
  const widths = header.map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) console.log(r.map((c, i) => c.padStart(widths[i])).join('  '));
} finally {
  await browser.close();
  server.close();
}
