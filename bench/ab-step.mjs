// Paired in-process A/B of two builds on whole MoE layer steps (the layer-level companion of
// bench/ab-gemm.mjs, whose header says how to make a build's package root). Not part of
// `npm run bench`: a developer tool for changes too small to see in separate processes on a host
// whose speed drifts ±20% over seconds.
//
// usage: node bench/ab-step.mjs ROOT_A ROOT_B
//   env E (experts, default 64), R (pairs, default 40), MODE=train (forward+backward, default) or
//   infer (forward without grad).
// Each build gets its own layer (so each side's weights are as cold or warm as in a real run), and
// the two alternate step by step, order flipping every pair. Prints both sides' median step, the
// median and quartiles of the paired ratios time(A) / time(B) (above 1 means B is faster), and the
// same for every grouped GEMM call over 2 ms. Two identical builds gave 1.02 (quartiles 0.99-1.07).
import path from 'node:path';

const roots = process.argv.slice(2, 4).map((p) => path.resolve(p));
if (roots.length !== 2) {
  console.error('usage: node bench/ab-step.mjs ROOT_A ROOT_B');
  process.exit(2);
}
const E = Number(process.env.E ?? 64), R = Number(process.env.R ?? 40), infer = process.env.MODE === 'infer';

const sides = [];
for (const root of roots) {
  const m = await import(path.join(root, 'dist/index.js'));
  const be = m.getBackend();
  const calls = [];
  for (const name of ['gemmGated', 'gemm']) {
    const orig = be[name].bind(be);
    be[name] = (...args) => {
      const t0 = performance.now();
      const out = orig(...args);
      calls.push(performance.now() - t0);
      return out;
    };
  }
  const layer = new m.MoELayer({ dModel: 256, dFF: 1024, numExperts: E, expert: { activation: 'silu', gated: true }, router: { type: 'topk', k: 2, normalize: true }, seed: 0 });
  layer.eval();
  const x = m.Tensor.randn([2048, 256], { seed: 1, requiresGrad: true });
  const g = m.Tensor.randn([2048, 256], { seed: 2 });
  const step = () => {
    calls.length = 0;
    if (!infer) {
      layer.zeroGrad();
      x.grad = null;
    }
    const t0 = performance.now();
    if (infer) m.noGrad(() => layer.forward(x));
    else layer.forward(x).output.backward(g);
    return performance.now() - t0;
  };
  sides.push({ step, calls });
}

for (let i = 0; i < 3; i++) for (const s of sides) s.step();
const times = [[], []], ratios = [], callRatios = [];
for (let i = 0; i < R; i++) {
  const t = [0, 0];
  for (const j of i % 2 ? [0, 1] : [1, 0]) t[j] = sides[j].step();
  times[0].push(t[0]);
  times[1].push(t[1]);
  ratios.push(t[0] / t[1]);
  sides[0].calls.forEach((v, j) => {
    callRatios[j] ??= { a: [], r: [] };
    callRatios[j].a.push(v);
    callRatios[j].r.push(v / sides[1].calls[j]);
  });
}
const q = (v, f) => [...v].sort((a, b) => a - b)[Math.floor(f * (v.length - 1))];
const spread = (v) => `${q(v, 0.5).toFixed(3)} [${q(v, 0.25).toFixed(3)}, ${q(v, 0.75).toFixed(3)}]`;
console.log(`E=${E} ${infer ? 'forward (no grad)' : 'forward+backward'}: A ${q(times[0], 0.5).toFixed(1)} ms, B ${q(times[1], 0.5).toFixed(1)} ms, paired A/B ${spread(ratios)} (>1: B faster)`);
callRatios.forEach((c, j) => {
  if (q(c.a, 0.5) > 2) console.log(`  call #${j}: A ${q(c.a, 0.5).toFixed(2)} ms, paired A/B ${spread(c.r)}`);
});
