// Train a tiny 2-layer MLP on XOR-like data (class = whether x·y > 0) with AdamW,
// linear warmup + cosine decay and gradient clipping. Loss should fall from ~0.69 to < 0.1.
// Run: npx tsc -p tsconfig.build.json && node examples/train-tiny.mjs
import { AdamW, Generator, LRScheduler, Linear, Tensor, clipGradNorm, crossEntropy, warmupCosine } from '../dist/index.js';

const g = new Generator(0);
const n = 256, steps = 300;
const xs = new Float32Array(2 * n), ys = new Int32Array(n);
for (let i = 0; i < n; i++) {
  const a = 2 * g.uniform() - 1, b = 2 * g.uniform() - 1;
  xs.set([a, b], 2 * i);
  ys[i] = a * b > 0 ? 1 : 0;
}
const x = Tensor.from(xs, [n, 2]), y = Tensor.indices(ys);

const hidden = new Linear(2, 32, { generator: g }), out = new Linear(32, 2, { generator: g });
const params = [...hidden.parameters(), ...out.parameters()];
const forward = (inp) => out.forward(hidden.forward(inp).gelu());

const opt = new AdamW(params, { lr: 0.03 });
const sched = new LRScheduler(opt, warmupCosine({ warmupSteps: 20, totalSteps: steps, minLrRatio: 0.1 }));
for (let step = 0; step < steps; step++) {
  opt.zeroGrad();
  const loss = crossEntropy(forward(x), y);
  loss.backward();
  const gradNorm = clipGradNorm(params, 1.0), lr = opt.paramGroups[0].lr;
  opt.step();
  sched.step();
  if (step % 50 === 0 || step === steps - 1) {
    console.log(`step ${String(step).padStart(3)}  loss ${loss.item().toFixed(4)}  |grad| ${gradNorm.toFixed(3)}  lr ${lr.toExponential(2)}`);
  }
}
const predicted = forward(x).argmax(-1).data;
const accuracy = ys.reduce((s, label, i) => s + (predicted[i] === label ? 1 : 0), 0) / n;
console.log(`train accuracy ${(100 * accuracy).toFixed(1)}%`);
