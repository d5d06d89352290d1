import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { AdamW, Generator, LRScheduler, Linear, Tensor, clipGradNorm, crossEntropy, warmupCosine } from '../src/index.js';

/** The core of examples/train-tiny.mjs against src: an MLP on XOR-like data. Returns per-step losses and final accuracy. */
function trainTiny(steps: number, seed = 0): { losses: number[]; accuracy: number } {
  const g = new Generator(seed);
  const n = 256;
  const xs = new Float32Array(2 * n), ys = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const a = 2 * g.uniform() - 1, b = 2 * g.uniform() - 1;
    xs.set([a, b], 2 * i);
    ys[i] = a * b > 0 ? 1 : 0;
  }
  const x = Tensor.from(xs, [n, 2]), y = Tensor.indices(ys);
  const hidden = new Linear(2, 32, { generator: g }), out = new Linear(32, 2, { generator: g });
  const params = [...hidden.parameters(), ...out.parameters()];
  const forward = (inp: Tensor): Tensor => out.forward(hidden.forward(inp).gelu());
  const opt = new AdamW(params, { lr: 0.03 });
  const sched = new LRScheduler(opt, warmupCosine({ warmupSteps: 20, totalSteps: steps, minLrRatio: 0.1 }));
  const losses: number[] = [];
  for (let step = 0; step < steps; step++) {
    opt.zeroGrad();
    const loss = crossEntropy(forward(x), y);
    loss.backward();
    clipGradNorm(params, 1.0);
    opt.step();
    sched.step();
    losses.push(loss.item());
  }
  const predicted = forward(x).argmax(-1).data;
  const accuracy = ys.reduce((s, label, i) => s + (predicted[i] === label ? 1 : 0), 0) / n;
  return { losses, accuracy };
}

describe('end-to-end: tiny MLP with AdamW + warmupCosine + clipGradNorm', () => {
  it('loss falls by a clear margin and the XOR-like task is learned', () => {
    const { losses, accuracy } = trainTiny(150);
    expect(losses[0]).toBeGreaterThan(0.5); // ~ln 2 at random init
    expect(losses[losses.length - 1]).toBeLessThan(0.25 * losses[0]);
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(accuracy).toBeGreaterThan(0.95);
  });

  it('is deterministic for a seed', () => {
    expect(trainTiny(30, 3).losses).toEqual(trainTiny(30, 3).losses);
  });

  const root = fileURLToPath(new URL('..', import.meta.url));
  it.skipIf(!existsSync(`${root}/dist/index.js`))('examples/train-tiny.mjs runs against dist (after npm run build) and prints a falling loss', () => {
    const out = execFileSync(process.execPath, ['examples/train-tiny.mjs'], { cwd: root, encoding: 'utf8', env: { ...process.env, NODE_NO_WARNINGS: '1' } });
    const losses = [...out.matchAll(/loss (\d+\.\d+)/g)].map((m) => Number(m[1]));
    expect(losses.length).toBeGreaterThan(3);
    expect(losses[losses.length - 1]).toBeLessThan(0.25 * losses[0]);
    expect(out).toMatch(/train accuracy \d+\.\d%/);
  });
});
