// Serving benchmark (issue 5). Not run in CI.
//
// 1. Expert store: a random MoE LM built so that routed experts dominate memory is written as a
//    checkpoint, then each configuration runs in its own child process (fully loaded; expert
//    budget 100/50/25%, each with and without prefetch): load, then generate from a few prompts
//    through the serving engine. Reported: peak RSS (process.resourceUsage().maxRSS of the
//    child), decode tokens/s (decode forwards only), cache hit rate, prefetch figures.
// 2. Load test: `switchyard serve` on a demo-sized random model, autocannon on loopback for a
//    bounded time at a steady load (no errors expected) and past it (429s expected, no errors).
//
// Usage: node bench/serve.mjs [--quick] [--skip-store] [--skip-load]
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const root = join(here, '..');
const args = process.argv.slice(2);
const QUICK = args.includes('--quick');

// Experts: 8 layers x 32 experts x 3 x 512 x 1024 fp32 = 1.5 GiB; the rest ~40 MiB.
const BENCH_MODEL = QUICK
  ? { dModel: 256, nLayers: 4, nHeads: 4, dFF: 512, maxSeqLen: 256, moe: { numExperts: 16, router: { type: 'topk', k: 2 } }, seed: 1 }
  : { dModel: 512, nLayers: 8, nHeads: 8, dFF: 1024, maxSeqLen: 512, moe: { numExperts: 32, router: { type: 'topk', k: 2 } }, seed: 1 };
const DEMO_SIZED = { dModel: 128, nLayers: 4, nHeads: 4, dFF: 256, maxSeqLen: 128, moe: { numExperts: 8, router: { type: 'topk', k: 2 } }, seed: 0 };
const PASSAGE_CHARS = QUICK ? 160 : 480;
const PREFILL = 16;
// Odd, so the median is one measured round (the project quotes medians, not best runs).
const ROUNDS = QUICK ? 1 : Number(process.env.BENCH_ROUNDS ?? 3);

/** Peak resident set of this process (VmHWM: per address space, so not inherited from the parent as ru_maxrss is across fork+exec). */
function peakRSS() {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    /* not Linux */
  }
  return process.resourceUsage().maxRSS * 1024;
}

/** Write a bench model in a child process, so the parent stays small (children are forked from it). */
function writeModel(run, model, embeddingStd) {
  execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--write', JSON.stringify({ run, model, embeddingStd })], { stdio: 'inherit' });
}

/** Passages of Moby-Dick (the demo corpus) the children decode, token by token. */
async function passages() {
  const { loadCorpus } = await import('../dist/index.js');
  const text = loadCorpus('moby-dick').documents.map((d) => d.text).join('\n');
  return [0.2, 0.5, 0.8].map((f) => text.slice(Math.floor(f * text.length), Math.floor(f * text.length) + PASSAGE_CHARS));
}

// The child decodes real text (teacher forcing: the next input is the passage's next token, not a
// sampled one), so routing follows the text: an untrained model's own samples repeat one token.
async function child(spec) {
  const { loadServingModel, KVCache, Tensor, noGrad, getBackend } = await import('../dist/index.js');
  const texts = await passages();
  const t0 = performance.now();
  const served = await loadServingModel(spec.run, { expertMemory: spec.budget, prefetch: spec.prefetch, verify: spec.verify });
  const loadSeconds = (performance.now() - t0) / 1000;
  const { model } = served;
  let decodeSeconds = 0, decodeTokens = 0;
  for (const text of texts) {
    const ids = served.encodePrompt(text).slice(0, model.config.maxSeqLen);
    const cache = new KVCache(model.config.nLayers);
    noGrad(() => model.forward(Tensor.indices(ids.slice(0, PREFILL), [1, PREFILL]), { cache }));
    for (let i = PREFILL; i < ids.length; i++) {
      const s0 = performance.now();
      noGrad(() => model.forward(Tensor.indices([ids[i]], [1, 1]), { cache }));
      decodeSeconds += (performance.now() - s0) / 1000;
      decodeTokens++;
    }
  }
  const s = served.store?.stats() ?? null;
  const out = {
    backend: `${getBackend().name}/${getBackend().threads}`,
    loadSeconds,
    maxRSS: peakRSS(),
    decodeTokensPerSecond: decodeTokens / decodeSeconds,
    decodeTokens,
    store: s && {
      budgetBytes: s.budgetBytes, totalExpertBytes: s.totalExpertBytes, peakResidentBytes: s.peakResidentBytes, hits: s.hits, misses: s.misses,
      bytesRead: s.bytesRead, evictions: s.evictions, prefetchIssued: s.prefetchIssued, prefetchUseful: s.prefetchUseful, prefetchWaits: s.prefetchWaits,
      predictedCorrect: s.predictedCorrect, predictedTotal: s.predictedTotal, predictedCount: s.predictedCount, splitForwards: s.splitForwards,
    },
  };
  await served.close();
  process.stdout.write(JSON.stringify(out) + '\n');
}

const mib = (b) => (b / 2 ** 20).toFixed(0);
const pct = (x) => (100 * x).toFixed(0) + '%';

async function storeBench(dir, embeddingStd) {
  const run = join(dir, `bench-model-${embeddingStd}`);
  console.log(`writing the bench model (${JSON.stringify(BENCH_MODEL)}, embeddings N(0, ${embeddingStd}²)) ...`);
  writeModel(run, BENCH_MODEL, embeddingStd);
  const configs = [
    { label: 'fully loaded', budget: null, prefetch: false },
    ...[['100%', 'all'], ['50%', '50%'], ['25%', '25%']].flatMap(([label, budget]) => [false, true].map((prefetch) => ({ label: `${label}${prefetch ? ' + prefetch' : ''}`, budget, prefetch }))),
    // --verify always: CRC-32 of every read (the default checks reads only once the file changed).
    ...[false, true].map((prefetch) => ({ label: `25%${prefetch ? ' + prefetch' : ''}, --verify always`, budget: '25%', prefetch, verify: 'always' })),
  ];
  const rounds = configs.map(() => []);
  for (let round = 0; round < ROUNDS; round++) {
    configs.forEach((row, i) => {
      const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--child', JSON.stringify({ run, budget: row.budget, prefetch: row.prefetch, verify: row.verify ?? 'changed' })], { encoding: 'utf8', maxBuffer: 1 << 24 });
      const r = JSON.parse(out.trim().split('\n').at(-1));
      console.log(`  round ${round + 1} ${row.label}: peak RSS ${mib(r.maxRSS)} MiB, decode ${r.decodeTokensPerSecond.toFixed(1)} tok/s${r.store ? `, hit rate ${pct(r.store.hits / (r.store.hits + r.store.misses))}` : ''}, load ${r.loadSeconds.toFixed(1)} s`);
      rounds[i].push(r);
    });
  }
  // Report the round with the median decode speed, and the median peak RSS over rounds.
  const rows = configs.map((c, i) => {
    const byTps = [...rounds[i]].sort((a, b) => a.decodeTokensPerSecond - b.decodeTokensPerSecond);
    const rss = rounds[i].map((r) => r.maxRSS).sort((a, b) => a - b);
    return { ...c, ...byTps[Math.floor(byTps.length / 2)], maxRSS: rss[Math.floor(rss.length / 2)] };
  });
  const full = rows[0];
  const total = rows[1].store.totalExpertBytes;
  const lines = [];
  lines.push(`Model: ${BENCH_MODEL.nLayers} layers, d=${BENCH_MODEL.dModel}, ${BENCH_MODEL.moe.numExperts} SiLU-gated experts of dFF ${BENCH_MODEL.dFF} top-${BENCH_MODEL.moe.router.k} per layer (random weights, token embeddings N(0, ${embeddingStd}²), char vocabulary): routed experts ${mib(total)} MiB of fp32. Workload: 3 passages of Moby-Dick, ${PASSAGE_CHARS} characters each, decoded one token per forward with the KV cache after a ${PREFILL}-token prefill (batch 1); decode tok/s counts those single-token forwards. Each configuration runs in its own process, ${ROUNDS} round(s) alternating configurations, medians reported (decode speed: the median round; peak RSS: the median over rounds). Backend ${full.backend}.`);
  lines.push('');
  lines.push('| configuration | expert budget | peak RSS (MiB) | vs fully loaded | decode tok/s | vs fully loaded | hit rate | read from disk (MiB) | prefetch: issued / useful | next-layer prediction recall |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const s = r.store;
    lines.push(
      `| ${r.label} | ${s ? mib(s.budgetBytes) + ' MiB' : '-'} | ${mib(r.maxRSS)} | ${pct(r.maxRSS / full.maxRSS)} | ${r.decodeTokensPerSecond.toFixed(1)} | ${pct(r.decodeTokensPerSecond / full.decodeTokensPerSecond)} | ` +
        `${s ? pct(s.hits / (s.hits + s.misses)) : '-'} | ${s ? mib(s.bytesRead) : '-'} | ${s && s.prefetchIssued ? `${s.prefetchIssued} / ${s.prefetchUseful}` : '-'} | ${s && s.predictedTotal ? pct(s.predictedCorrect / s.predictedTotal) : '-'} |`,
    );
  }
  return { rows, table: lines.join('\n') };
}

function waitForListening(proc) {
  return new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/[\d.:]+)/.exec(out);
      if (m) resolve(m[1]);
    });
    proc.on('exit', (code) => reject(new Error(`server exited with ${code}: ${out}`)));
  });
}

async function loadBench(dir) {
  const autocannon = (await import('autocannon')).default;
  const run = join(dir, 'demo-sized');
  writeModel(run, DEMO_SIZED, 1);
  const seconds = QUICK ? 5 : 15;
  const body = JSON.stringify({ prompt: 'Call me Ishmael.', max_tokens: 16, temperature: 0.8 });
  const results = [];
  for (const [label, connections, maxQueue] of [['steady', 2, 8], ['overload', 64, 4]]) {
    const proc = spawn(process.execPath, [join(root, 'dist', 'cli', 'main.js'), 'serve', run, '--port', '0', '--max-queue', String(maxQueue), '--expert-memory', '50%'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const url = await waitForListening(proc);
    const r = await autocannon({ url: `${url}/v1/completions`, method: 'POST', headers: { 'content-type': 'application/json' }, body, connections, duration: seconds, timeout: 30 });
    const health = await (await fetch(`${url}/healthz`)).json();
    proc.kill('SIGTERM');
    const code = await new Promise((res) => proc.on('exit', res));
    const codes = r.statusCodeStats ?? {};
    results.push({
      label, connections, maxQueue, seconds,
      rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, ok: codes['200']?.count ?? r['2xx'], r429: codes['429']?.count ?? 0,
      errors: r.errors, timeouts: r.timeouts, non2xx: r.non2xx, health: health.status, exit: code,
    });
    const x = results.at(-1);
    console.log(`  ${label}: ${connections} connections, ${x.rps.toFixed(1)} req/s, p50 ${x.p50} ms, p99 ${x.p99} ms, 200: ${x.ok}, 429: ${x.r429}, errors ${x.errors}, timeouts ${x.timeouts}; exit after SIGTERM: ${code}`);
  }
  const lines = [];
  lines.push(`Server: \`switchyard serve\` on a demo-sized random model (${DEMO_SIZED.nLayers} layers, d=${DEMO_SIZED.dModel}, ${DEMO_SIZED.moe.numExperts} experts top-2, experts on disk with a 50% cache), loopback, autocannon ${seconds} s per run; each request: 16 new tokens from a 16-character prompt, temperature 0.8.`);
  lines.push('');
  lines.push('| load | connections | --max-queue | requests/s (200) | p50 latency (ms) | p99 latency (ms) | 200 | 429 | errors / timeouts | exit after SIGTERM |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const x of results) lines.push(`| ${x.label} | ${x.connections} | ${x.maxQueue} | ${(x.ok / x.seconds).toFixed(1)} | ${x.p50} | ${x.p99} | ${x.ok} | ${x.r429} | ${x.errors} / ${x.timeouts} | ${x.exit} |`);
  return { results, table: lines.join('\n') };
}

async function main() {
  if (!existsSync(join(root, 'dist', 'index.js'))) throw new Error('build first: npm run build');
  const dir = join(os.tmpdir(), `switchyard-bench-serve-${process.pid}`);
  try {
    console.log('## Serving (issue 5)\n');
    if (!args.includes('--skip-store')) {
      // Token-dependent routing (embeddings N(0, 1)): near-uniform expert use, the pessimistic case.
      // The model's own init (N(0, 0.02)): an untrained model routes almost every token alike.
      for (const std of [1]) {
        const { table } = await storeBench(dir, std);
        console.log('\n' + table + '\n');
      }
    }
    if (!args.includes('--skip-load')) {
      const { table } = await loadBench(dir);
      console.log('\n' + table + '\n');
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (args[0] === '--child') await child(JSON.parse(args[1]));
else if (args[0] === '--write') {
  const { writeRandomCheckpoint } = await import('../dist/index.js');
  const o = JSON.parse(args[1]);
  await writeRandomCheckpoint(o.run, { model: o.model, embeddingStd: o.embeddingStd });
}
else await main();
