// Inference throughput of a mixture of LoRA experts (issue 6): the demo model with a top-2 mixture
// of 8 rank-8 adapters on every attention projection (q, k, v, o of every layer) vs the base alone,
// plus one plain rank-8 adapter and a dense-softmax mixture of the 8 for context. Two regimes:
// prompt processing (a batched forward of 16x128 tokens, no gradients) and decoding (KV-cache
// generation, one token per step). Runs alternate base / adapted, medians of rounds. Not run in CI.
import { DEMO_LM, Generator, LoRAModel, MoETransformerLM, Tensor, getBackend, noGrad } from '../dist/index.js';

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

const base = new MoETransformerLM({ ...DEMO_LM, vocabSize: VOCAB });
base.eval();
const ids = Tensor.indices(Array.from({ length: B * T }, (_, i) => (i * 7919) % VOCAB), [B, T]);
const prompt = Array.from({ length: DECODE_PROMPT }, (_, i) => (i * 31) % VOCAB);

const VARIANTS = {
  base: null,
  'top-2 of 8 rank-8': { adapters: 8, router: { type: 'topk', k: 2 } },
  'one rank-8 adapter': { adapters: 1, router: { type: 'single' } },
  'dense softmax of 8': { adapters: 8, router: { type: 'dense' } },
};

function attach(v) {
  if (!v) return null;
  const m = new LoRAModel(base, { targets: TARGETS, adapters: Array.from({ length: v.adapters }, (_, i) => ({ name: `a${i}`, rank: 8, alpha: 16, seed: i })), router: v.router });
  // Non-zero B (B = 0 at init would not change the work, but keep the outputs honest).
  const g = new Generator(7);
  for (const s of m.sites) for (const f of s.factors) f && (f.B.data).set(Tensor.randn(f.B.shape, { generator: g }).f32.map((x) => x * 0.01));
  m.eval();
  return m;
}

function measure(v) {
  const m = attach(v);
  const model = m ?? base;
  try {
    noGrad(() => model.forward(ids)); // warm-up
    // Median of REPS forwards / generations per visit (the machine may be loaded: medians, not means).
    const fwd = median(Array.from({ length: REPS }, () => seconds(() => noGrad(() => model.forward(ids)))));
    const dec = median(Array.from({ length: REPS }, () => seconds(() => model.generate(prompt, DECODE_TOKENS, { temperature: 0 }))));
    return { fwd, dec, sites: m?.sites.length ?? 0, trainable: m ? m.sites.reduce((a, s) => a + s.parameters().reduce((b, p) => b + p.size, 0), 0) : 0 };
  } finally {
    m?.detach();
  }
}

export function benchLoRA() {
  const b = getBackend();
  console.log(`\n== Mixture of LoRA experts, inference (issue 6): backend ${b.name}, ${b.threads} threads ==`);
  const names = Object.keys(VARIANTS);
  const res = Object.fromEntries(names.map((n) => [n, { fwd: [], dec: [], sites: 0, trainable: 0 }]));
  for (let r = 0; r < ROUNDS; r++) {
    // Alternate so that machine load hits every variant alike.
    for (const n of r % 2 ? [...names].reverse() : names) {
      const x = measure(VARIANTS[n]);
      res[n].fwd.push(x.fwd);
      res[n].dec.push(x.dec);
      res[n].sites = x.sites;
      res[n].trainable = x.trainable;
    }
  }
  const baseFwd = median(res.base.fwd), baseDec = median(res.base.dec);
  console.log(`  demo model (${DEMO_LM.nLayers} layers, d=${DEMO_LM.dModel}, ${DEMO_LM.moe.numExperts} experts top-${DEMO_LM.moe.router.k}); adapters on ${TARGETS.join('/')} of every layer; medians of ${ROUNDS} alternating rounds x ${REPS} runs`);
  const out = {};
  for (const n of names) {
    const f = median(res[n].fwd), d = median(res[n].dec);
    const fwdTps = (B * T) / f, decTps = DECODE_TOKENS / d;
    out[n] = { forwardTokensPerSecond: fwdTps, decodeTokensPerSecond: decTps, forwardSlowdown: f / baseFwd, decodeSlowdown: d / baseDec };
    console.log(
      `  ${n.padEnd(20)} prompt ${String(Math.round(fwdTps)).padStart(6)} tok/s (${(f / baseFwd).toFixed(2)}x base time)   ` +
        `decode ${decTps.toFixed(1).padStart(6)} tok/s (${(d / baseDec).toFixed(2)}x)` + (res[n].sites ? `   ${res[n].sites} sites, ${res[n].trainable.toLocaleString('en-US')} adapter+router params` : ''),
    );
  }
  const goal = out['top-2 of 8 rank-8'];
  console.log(`  goal: top-2 mixture at most 1.3x slower than the base: prompt ${goal.forwardSlowdown.toFixed(2)}x, decode ${goal.decodeSlowdown.toFixed(2)}x`);
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) benchLoRA();
