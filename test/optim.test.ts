import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  AdamW,
  LRScheduler,
  SGD,
  Tensor,
  ValueError,
  ShapeError,
  clipGradNorm,
  cosineDecay,
  linear,
  linearWarmup,
  scheduleFromMultiplier,
  warmupCosine,
  type Optimizer,
  type GroupHyperparams,
  type ParamState,
} from '../src/index.js';
import { expectAllClose } from './helpers.js';

interface TensorJson { shape: number[]; data: number[] }
interface CaseJson {
  name: string;
  problem: 'linear' | 'quadratic';
  optimizer: 'sgd' | 'adamw';
  groups: Array<{ params: number[]; options: Record<string, number | boolean | number[]> }>;
  dropGradOfOnOddSteps?: number;
  losses: number[];
  trajectory: number[][][];
}
interface Goldens {
  source: string;
  steps: number;
  problems: {
    linear: { x: TensorJson; y: TensorJson; init: TensorJson[] };
    quadratic: { a: number[]; c: number[]; init: TensorJson[] };
  };
  cases: CaseJson[];
  clipGradNorm: {
    grads: TensorJson[];
    cases: Array<{ normType: number | 'inf'; maxNorm: number; totalNorm: number; clipped: number[][] }>;
  };
}

const goldens = JSON.parse(readFileSync(new URL('./fixtures/optim.json', import.meta.url), 'utf8')) as Goldens;
const t = (j: TensorJson, requiresGrad = false): Tensor => Tensor.from(j.data, j.shape, { requiresGrad });

type AnyOptimizer = Optimizer<GroupHyperparams, ParamState>;

function lossFn(problem: CaseJson['problem']): (params: Tensor[]) => Tensor {
  if (problem === 'linear') {
    const { x, y } = goldens.problems.linear;
    const X = t(x), Y = t(y);
    return ([w, b]) => linear(X, w, b).sub(Y).square().mean();
  }
  const A = Tensor.from(goldens.problems.quadratic.a, [5]);
  const C = Tensor.from(goldens.problems.quadratic.c, [5]);
  return ([p]) => p.sub(C).square().mul(A).sum().mul(0.5);
}

function build(c: CaseJson, params: Tensor[]): AnyOptimizer {
  const groups = c.groups.map((g) => ({ params: g.params.map((i) => params[i]), ...g.options }));
  return (c.optimizer === 'sgd' ? new SGD(groups) : new AdamW(groups)) as unknown as AnyOptimizer;
}

function initParams(c: CaseJson): Tensor[] {
  return goldens.problems[c.problem].init.map((j) => t(j, true));
}

/** One training step; returns the loss before the update. */
function trainStep(opt: AnyOptimizer, params: Tensor[], loss: (p: Tensor[]) => Tensor, step: number, drop?: number): number {
  opt.zeroGrad();
  const l = loss(params);
  l.backward();
  if (drop !== undefined && step % 2 === 1) params[drop].grad = null;
  opt.step();
  return l.item();
}

describe('optimizers vs PyTorch goldens', () => {
  it('fixture names its generating script', () => {
    expect(goldens.source).toBe('scripts/fixtures/make_optim_goldens.py');
    expect(goldens.cases.length).toBeGreaterThan(10);
  });

  for (const c of goldens.cases) {
    it(`${c.name}: ${goldens.steps}-step trajectory matches torch`, () => {
      const params = initParams(c);
      const opt = build(c, params);
      const loss = lossFn(c.problem);
      for (let s = 0; s < goldens.steps; s++) {
        const l = trainStep(opt, params, loss, s, c.dropGradOfOnOddSteps);
        expectAllClose([l], [c.losses[s]], { rtol: 1e-4, atol: 1e-6, label: `${c.name} loss@${s}` });
        params.forEach((p, i) => expectAllClose(p.data, c.trajectory[s][i], { rtol: 1e-4, atol: 2e-6, label: `${c.name} param${i}@${s}` }));
      }
    });
  }
});

describe('optimizer state dict', () => {
  for (const name of ['adamw amsgrad wd', 'sgd nesterov weight decay', 'adamw two groups']) {
    it(`${name}: resume from a checkpoint gives the identical next steps`, () => {
      const c = goldens.cases.find((x) => x.name === name)!;
      const loss = lossFn(c.problem);
      const pa = initParams(c);
      const a = build(c, pa);
      for (let s = 0; s < 5; s++) trainStep(a, pa, loss, s);
      const snap = structuredClone(a.stateDict());
      const savedParams = pa.map((p) => p.clone());
      // A fresh optimizer over fresh parameters, restored from the snapshot.
      const pb = savedParams.map((p) => Tensor.from(p.f32, p.shape, { requiresGrad: true }));
      const b = build({ ...c, groups: c.groups.map((g) => ({ ...g, options: { lr: 123 } })) }, pb);
      b.loadStateDict(snap);
      expect(b.paramGroups.map((g) => g.lr)).toEqual(a.paramGroups.map((g) => g.lr));
      for (let s = 5; s < 9; s++) {
        trainStep(a, pa, loss, s);
        trainStep(b, pb, loss, s);
        pa.forEach((p, i) => expect(Array.from(pb[i].data)).toEqual(Array.from(p.data)));
      }
    });
  }

  it('has the torch layout: state keyed by parameter index, groups with param indices', () => {
    const w = Tensor.zeros([2], { requiresGrad: true }), b = Tensor.zeros([3], { requiresGrad: true });
    const opt = new AdamW([{ params: [w] }, { params: [b], lr: 0.5 }]);
    w.grad = Tensor.from([1, -1], [2]);
    opt.step();
    const sd = opt.stateDict();
    expect(Object.keys(sd.state)).toEqual(['0']);
    expect(sd.state[0].step).toBe(1);
    expect(sd.state[0].expAvg).toBeInstanceOf(Float32Array);
    expect(sd.paramGroups).toEqual([
      { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2, amsgrad: false, maximize: false, params: [0] },
      { lr: 0.5, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2, amsgrad: false, maximize: false, params: [1] },
    ]);
    // A snapshot is a copy: stepping again does not change it.
    opt.step();
    expect(sd.state[0].step).toBe(1);
  });

  it('rejects a state dict that does not fit, naming the field', () => {
    const w = Tensor.zeros([2], { requiresGrad: true });
    const opt = new AdamW([w]);
    w.grad = Tensor.ones([2]);
    opt.step();
    const sd = opt.stateDict();
    const other = new AdamW([Tensor.zeros([3], { requiresGrad: true })]);
    expect(() => other.loadStateDict(sd)).toThrow(ShapeError);
    expect(() => other.loadStateDict(sd)).toThrow(/state\[0\]\.expAvg/);
    const two = new AdamW([{ params: [Tensor.zeros([2])] }, { params: [Tensor.zeros([2])] }]);
    expect(() => two.loadStateDict(sd)).toThrow(/paramGroups\.length/);
    expect(() => opt.loadStateDict({ ...sd, state: { 5: sd.state[0] } })).toThrow(/no parameter with index 5/);
    expect(() => opt.loadStateDict({ ...sd, paramGroups: [{ ...sd.paramGroups[0], betas: [0.9, 1.5] }] })).toThrow(/betas\[1\]/);
    // A failed load leaves the optimizer untouched.
    expect(opt.getState(w)!.step).toBe(1);
    expect(opt.paramGroups[0].betas).toEqual([0.9, 0.999]);
  });
});

describe('optimizer behaviour', () => {
  it('AdamW defaults are torch.optim.AdamW defaults', () => {
    const opt = new AdamW([Tensor.zeros([1])]);
    const g = opt.paramGroups[0];
    expect([g.lr, g.betas, g.eps, g.weightDecay, g.amsgrad]).toEqual([1e-3, [0.9, 0.999], 1e-8, 1e-2, false]);
    // Groups own their betas: changing one touches neither other groups nor later optimizers.
    g.betas[0] = 0.5;
    expect(new AdamW([Tensor.zeros([1])]).paramGroups[0].betas).toEqual([0.9, 0.999]);
  });

  it('first AdamW step moves each weight by lr·sign(g) after decoupled decay', () => {
    const p = Tensor.from([1, -2, 3], [3], { requiresGrad: true });
    const opt = new AdamW([p], { lr: 0.1, weightDecay: 0.5 });
    p.grad = Tensor.from([0.3, -4, 0], [3]);
    opt.step();
    // m̂ = g, v̂ = g², so the step is lr·g/(|g| + eps); decay multiplies by 1 - lr·wd = 0.95 first.
    expectAllClose(p.data, [0.95 - 0.1, -1.9 + 0.1, 2.85], { rtol: 1e-6 });
  });

  it('skips parameters whose grad is null and creates no state for them', () => {
    const a = Tensor.from([1], [1], { requiresGrad: true }), b = Tensor.from([2], [1], { requiresGrad: true });
    const opt = new SGD([a, b], { lr: 0.5, momentum: 0.9, weightDecay: 0.1 });
    a.grad = Tensor.from([1], [1]);
    opt.step();
    expect(b.data[0]).toBe(2);
    expect(opt.getState(b)).toBeUndefined();
    expect(opt.getState(a)).toBeDefined();
  });

  it('zeroGrad sets grads to null, or to zeros with setToNone false', () => {
    const a = Tensor.from([1, 2], [2], { requiresGrad: true });
    const opt = new SGD([a]);
    a.grad = Tensor.from([3, 4], [2]);
    const g = a.grad;
    opt.zeroGrad(false);
    expect(a.grad).toBe(g);
    expect(Array.from(g.data)).toEqual([0, 0]);
    opt.zeroGrad();
    expect(a.grad).toBeNull();
  });

  it('validates hyperparameters with typed errors naming the field and value', () => {
    const p = [Tensor.zeros([1])];
    const cases: Array<[() => unknown, RegExp]> = [
      [() => new AdamW(p, { lr: -1 }), /^AdamW\.lr=-1: /],
      [() => new AdamW(p, { betas: [1, 0.999] }), /AdamW\.betas\[0\]=1: must be in \[0, 1\)/],
      [() => new AdamW(p, { betas: [0.9, -0.1] }), /AdamW\.betas\[1\]=-0\.1/],
      [() => new AdamW(p, { eps: -1e-8 }), /AdamW\.eps/],
      [() => new AdamW(p, { weightDecay: NaN }), /AdamW\.weightDecay=NaN/],
      [() => new SGD(p, { lr: -0.1 }), /SGD\.lr=-0\.1/],
      [() => new SGD(p, { momentum: -0.5 }), /SGD\.momentum=-0\.5/],
      [() => new SGD(p, { nesterov: true }), /SGD\.nesterov=true: Nesterov momentum requires momentum > 0/],
      [() => new SGD(p, { nesterov: true, momentum: 0.9, dampening: 0.1 }), /dampening 0\.1/],
      [() => new SGD([]), /SGD\.params=\[\]: optimizer got an empty parameter list/],
      [() => new SGD([{ params: p }, { params: p }]), /paramGroups\[1\]\.params\[0\].*more than one/],
      [() => new SGD([{ params: [Tensor.zeros([1])], lr: -2 }]), /SGD\.paramGroups\[0\]\.lr=-2/],
      [() => new SGD([Tensor.indices([1])]), /params\[0\]="int32"/],
    ];
    for (const [f, re] of cases) {
      expect(f).toThrow(re);
      try { f(); } catch (e) { expect((e as Error).name).toMatch(/ValueError|DTypeError/); }
    }
    expect(() => new AdamW(p, { lr: -1 })).toThrow(ValueError);
  });

  it('rejects a gradient of the wrong size', () => {
    const p = Tensor.zeros([2], { requiresGrad: true });
    const opt = new SGD([p]);
    p.grad = Tensor.zeros([3]);
    expect(() => opt.step()).toThrow(/params\[0\]\.grad/);
  });
});

describe('clipGradNorm vs torch.nn.utils.clip_grad_norm_', () => {
  const cg = goldens.clipGradNorm;
  for (const c of cg.cases) {
    it(`normType ${c.normType}, maxNorm ${c.maxNorm}`, () => {
      const params = cg.grads.map((g) => {
        const p = Tensor.zeros(g.shape, { requiresGrad: true });
        p.grad = t(g);
        return p;
      });
      const total = clipGradNorm(params, c.maxNorm, c.normType === 'inf' ? Infinity : c.normType);
      expectAllClose([total], [c.totalNorm], { rtol: 1e-5 });
      params.forEach((p, i) => expectAllClose(p.grad!.data, c.clipped[i], { rtol: 1e-5, atol: 1e-7, label: `grad${i}` }));
    });
  }

  it('ignores params without grads, returns 0 when none have one, validates arguments', () => {
    const a = Tensor.zeros([2], { requiresGrad: true });
    expect(clipGradNorm([a], 1)).toBe(0);
    a.grad = Tensor.from([3, 4], [2]);
    expect(clipGradNorm([a, Tensor.zeros([1])], 1)).toBeCloseTo(5, 6);
    expectAllClose(a.grad.data, [3 / (5 + 1e-6), 4 / (5 + 1e-6)], { rtol: 1e-6 });
    expect(() => clipGradNorm([a], 1, 0)).toThrow(/clipGradNorm\.normType=0/);
    expect(() => clipGradNorm([a], NaN)).toThrow(/clipGradNorm\.maxNorm=NaN/);
    a.grad = Tensor.from([Infinity, 1], [2]);
    expect(() => clipGradNorm([a], 1, 2, { errorIfNonfinite: true })).toThrow(/clipGradNorm\.totalNorm=Infinity/);
  });
});

describe('learning-rate schedules', () => {
  it('linearWarmup and cosineDecay', () => {
    expect([0, 1, 2, 4, 10].map((s) => linearWarmup(s, 4))).toEqual([0, 0.25, 0.5, 1, 1]);
    expect(linearWarmup(0, 0)).toBe(1);
    expect(cosineDecay(0, 10)).toBe(1);
    expect(cosineDecay(5, 10)).toBeCloseTo(0.5, 12);
    expect(cosineDecay(10, 10)).toBeCloseTo(0, 12);
    expect(cosineDecay(20, 10, 0.1)).toBeCloseTo(0.1, 12);
    expect(cosineDecay(5, 10, 0.2)).toBeCloseTo(0.6, 12);
    expect(() => linearWarmup(-1, 4)).toThrow(/linearWarmup\.step=-1/);
    expect(() => cosineDecay(1, 10, 2)).toThrow(/cosineDecay\.minRatio=2/);
  });

  it('warmupCosine: warmup, half-way, floor, with minLr and minLrRatio', () => {
    const s = warmupCosine({ warmupSteps: 10, totalSteps: 110, minLrRatio: 0.1 });
    expect(s(0, 1e-3)).toBe(0);
    expect(s(5, 1e-3)).toBeCloseTo(5e-4, 15);
    expect(s(10, 1e-3)).toBeCloseTo(1e-3, 15);
    expect(s(60, 1e-3)).toBeCloseTo(1e-4 + 0.9e-3 * 0.5, 15);
    expect(s(110, 1e-3)).toBeCloseTo(1e-4, 15);
    expect(s(500, 1e-3)).toBeCloseTo(1e-4, 15);
    const abs = warmupCosine({ warmupSteps: 0, totalSteps: 4, minLr: 0.01 });
    expectAllClose([0, 1, 2, 3, 4].map((k) => abs(k, 0.1)), [0, 1, 2, 3, 4].map((k) => 0.01 + 0.09 * 0.5 * (1 + Math.cos((Math.PI * k) / 4))), { rtol: 1e-12, atol: 0 });
    expect(() => warmupCosine({ warmupSteps: 10, totalSteps: 5 })).toThrow(/warmupCosine\.totalSteps=5/);
    expect(() => warmupCosine({ warmupSteps: 1, totalSteps: 5, minLr: 0.1, minLrRatio: 0.1 })).toThrow(/either minLr or minLrRatio/);
    expect(() => warmupCosine({ warmupSteps: 1.5, totalSteps: 5 })).toThrow(/warmupCosine\.warmupSteps=1\.5/);
    expect(() => abs(1, 0.001)).toThrow(/warmupCosine\.minLr=0\.01: must not exceed/);
  });

  it('LRScheduler sets each group from its own base lr and checkpoints', () => {
    const opt = new SGD([{ params: [Tensor.zeros([1])], lr: 0.1 }, { params: [Tensor.zeros([1])], lr: 1 }]);
    const sched = new LRScheduler(opt, warmupCosine({ warmupSteps: 2, totalSteps: 6 }));
    expect(sched.lastLrs()).toEqual([0, 0]);
    sched.step();
    expect(sched.lastLrs()).toEqual([0.05, 0.5]);
    sched.step();
    sched.step();
    const lrs = sched.lastLrs();
    expect(lrs[0]).toBeCloseTo(0.1 * 0.5 * (1 + Math.cos(Math.PI / 4)), 12);
    expect(opt.paramGroups.map((g) => g.initialLr)).toEqual([0.1, 1]);
    // Resume: a new optimizer restored from the checkpoint, then a new scheduler restored too.
    const optSd = opt.stateDict(), schedSd = sched.stateDict();
    const opt2 = new SGD([{ params: [Tensor.zeros([1])] }, { params: [Tensor.zeros([1])] }]);
    opt2.loadStateDict(optSd);
    const sched2 = new LRScheduler(opt2, warmupCosine({ warmupSteps: 2, totalSteps: 6 }));
    sched2.loadStateDict(schedSd);
    expect(sched2.lastLrs()).toEqual(lrs);
    sched.step();
    sched2.step();
    expect(sched2.lastLrs()).toEqual(sched.lastLrs());
    const mult = new LRScheduler(new SGD([Tensor.zeros([1])], { lr: 2 }), scheduleFromMultiplier((k) => 0.5 ** k));
    mult.step();
    expect(mult.lastLrs()).toEqual([1]);
    expect(() => new LRScheduler(opt, () => -1)).toThrow(/LRScheduler\.schedule=-1/);
    expect(() => sched.loadStateDict({ step: 1, baseLrs: [1] })).toThrow(/baseLrs/);
  });
});
