// Inference throughput of a mixture of LoRA experts (issue 6): the demo model with a top-2 mixture
// of 8 rank-8 adapters on every attention projection (q, k, v, o of every layer) vs the base alone,
// plus one plain rank-8 adapter and a dense-softmax mixture of the 8 for context. Two regimes:
// prompt processing (a batched forward of 16x128 tokens, no gradients) and decoding (KV-cache
// generation, one token per step). Each variant runs on its own copy of the base and the runs
// alternate call by call; figures are medians, and slowdowns also as the median of per-round
// ratios (robust to drifting load). Not run in CI.
import { DEMO_LM, Generator, KVCache, LoRAModel, MoETransformerLM, Tensor, getBackend, noGrad } from '../dist/index.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const REPS = Number(process.env.BENCH_REPS ?? 3);
const VOCAB = 96;
const B = 16, T = 128;
const DECODE_PROMPT = 16, DECODE_TOKENS = 48;
const TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const seconds = (f) => {
  const t0 = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - t0) / 1e9;
};

const ids = Tensor.indices(Array.from({ length: B * T }, (_, i) => (i * 7919) % VOCAB), [B, T]);
const prompt = Array.from({ length: DECODE_PROMPT }, (_, i) => (i * 31) % VOCAB);

const VARIANTS = {
  base: null,
  'top-2 of 8 rank-8': { adapters: 8, router: { type: 'topk', k: 2 } },
  'one rank-8 adapter': { adapters: 1, router: { type: 'single' } },
  'dense softmax of 8': { adapters: 8, router: { type: 'dense' } },
};

/** Each variant on its own copy of the base (same seed, same weights), so runs can alternate call by call. */
function build(v) {
  const base = new MoETransformerLM({ ...DEMO_LM, vocabSize: VOCAB });
  base.eval();
  if (!v) return { model: base, sites: 0, params: 0 };
  const m = new LoRAModel(base, { targets: TARGETS, adapters: Array.from({ length: v.adapters }, (_, i) => ({ name: `a${i}`, rank: 8, alpha: 16, seed: i })), router: v.router });
  // Non-zero B (B = 0 at init would not change the work, but keep the outputs honest).
  const g = new Generator(7);
  for (const s of m.sites) for (const f of s.factors) f && f.B.data.set(Tensor.randn(f.B.shape, { generator: g }).f32.map((x) => x * 0.01));
  m.eval();
  return { model: m, sites: m.sites.length, params: m.sites.reduce((a, s) => a + s.parameters().reduce((b, p) => b + p.size, 0), 0) };
}

export function benchLoRA() {
  const b = getBackend();
  console.log(`\n== Mixture of LoRA experts, inference (issue 6): backend ${b.name}, ${b.threads} threads ==`);
  const names = Object.keys(VARIANTS);
  const built = Object.fromEntries(names.map((n) => [n, build(VARIANTS[n])]));
  const res = Object.fromEntries(names.map((n) => [n, { fwd: [], dec: [], step: [], sites: built[n].sites, trainable: built[n].params }]));
  // Decode steps alone: one token through the model with a KV cache, no sampling (per-token model cost).
  const tok = Tensor.indices([5], [1, 1]);
  const caches = Object.fromEntries(names.map((n) => [n, new KVCache(DEMO_LM.nLayers)]));
  for (const n of names) noGrad(() => built[n].model.forward(ids)); // warm-up
  for (let r = 0; r < ROUNDS * REPS; r++) {
    // Alternate call by call (order reversed every other round) so that machine load hits every variant alike.
    for (const n of r % 2 ? [...names].reverse() : names) {
      const m = built[n].model;
      res[n].fwd.push(seconds(() => noGrad(() => m.forward(ids))));
      res[n].dec.push(seconds(() => m.generate(prompt, DECODE_TOKENS, { temperature: 0 })));
      const steps = [];
      for (let i = 0; i < 8; i++) {
        if (caches[n].length >= DEMO_LM.maxSeqLen - 1) caches[n] = new KVCache(DEMO_LM.nLayers);
        steps.push(seconds(() => noGrad(() => m.forward(tok, { cache: caches[n] }))));
      }
      res[n].step.push(median(steps));
    }
  }
  // Two slowdown figures per regime: the ratio of the medians, and the median over rounds of the
  // round's own ratio (variant vs base timed back to back), which drifting machine load moves less.
  const paired = (a, b) => median(a.map((v, i) => v / b[i]));
  const baseFwd = median(res.base.fwd), baseDec = median(res.base.dec), baseStep = median(res.base.step);
  console.log(`  demo model (${DEMO_LM.nLayers} layers, d=${DEMO_LM.dModel}, ${DEMO_LM.moe.numExperts} experts top-${DEMO_LM.moe.router.k}); adapters on ${TARGETS.join('/')} of every layer; medians of ${ROUNDS * REPS} rounds alternating call by call; slowdowns as ratio of medians / median of per-round ratios`);
  const out = {};
  for (const n of names) {
    const f = median(res[n].fwd), d = median(res[n].dec), st = median(res[n].step);
    const fwdTps = (B * T) / f, decTps = DECODE_TOKENS / d;
    const pf = paired(res[n].fwd, res.base.fwd), pd = paired(res[n].dec, res.base.dec), ps = paired(res[n].step, res.base.step);
    out[n] = {
      forwardTokensPerSecond: fwdTps, decodeTokensPerSecond: decTps, forwardSlowdown: f / baseFwd, decodeSlowdown: d / baseDec, decodeStepMicroseconds: st * 1e6, decodeStepSlowdown: st / baseStep,
      forwardSlowdownPaired: pf, decodeSlowdownPaired: pd, decodeStepSlowdownPaired: ps,
    };
    console.log(
      `  ${n.padEnd(20)} prompt ${String(Math.round(fwdTps)).padStart(6)} tok/s (${(f / baseFwd).toFixed(2)}x / ${pf.toFixed(2)}x base time)   ` +
        `decode ${decTps.toFixed(1).padStart(6)} tok/s (${(d / baseDec).toFixed(2)}x / ${pd.toFixed(2)}x)   step ${(st * 1e6).toFixed(0).padStart(5)} us (${(st / baseStep).toFixed(2)}x / ${ps.toFixed(2)}x)` + (res[n].sites ? `   ${res[n].sites} sites, ${res[n].trainable.toLocaleString('en-US')} adapter+router params` : ''),
    );
  }
  const goal = out['top-2 of 8 rank-8'];
  const fig = (a, b) => `${a.toFixed(2)}x / ${b.toFixed(2)}x`;
  console.log(`  goal: top-2 mixture at most 1.3x slower than the base: prompt ${fig(goal.forwardSlowdown, goal.forwardSlowdownPaired)}, decode ${fig(goal.decodeSlowdown, goal.decodeSlowdownPaired)} (model step alone ${fig(goal.decodeStepSlowdown, goal.decodeStepSlowdownPaired)})`);
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) benchLoRA();
