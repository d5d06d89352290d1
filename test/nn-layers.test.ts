import { describe, expect, it } from 'vitest';
import { Embedding, Generator, LayerNorm, Linear, Module, RMSNorm, Tensor, ValueError, StateDictError, ShapeError } from '../src/index.js';
import { expectAllClose } from './helpers.js';

/** Two layers under dotted names, like a real model. */
class Block extends Module {
  readonly norm: RMSNorm;
  readonly proj: Linear;
  constructor(seed: number) {
    super();
    this.norm = this.registerModule('norm', new RMSNorm(4));
    this.proj = this.registerModule('proj', new Linear(4, 3, { seed }));
  }
  forward(x: Tensor): Tensor {
    return this.proj.forward(this.norm.forward(x));
  }
}

describe('Linear', () => {
  it('has PyTorch layout, names and U(-1/√in, 1/√in) init', () => {
    const l = new Linear(16, 5, { seed: 1 });
    expect(l.weight.shape).toEqual([5, 16]);
    expect(l.bias!.shape).toEqual([5]);
    expect(l.namedParameters().map(([n]) => n)).toEqual(['weight', 'bias']);
    expect(l.weight.requiresGrad && l.bias!.requiresGrad).toBe(true);
    const bound = 1 / 4;
    for (const v of [...l.weight.data, ...l.bias!.data]) expect(Math.abs(v)).toBeLessThanOrEqual(bound);
    // Spread: a uniform on ±bound has std bound/√3; 80 samples land well within 30% of it.
    const w = Array.from(l.weight.data);
    const std = Math.sqrt(w.reduce((s, v) => s + v * v, 0) / w.length);
    expect(std).toBeGreaterThan((0.7 * bound) / Math.sqrt(3));
    expect(std).toBeLessThan((1.3 * bound) / Math.sqrt(3));
  });

  it('is deterministic per seed; a shared generator advances', () => {
    expect(Array.from(new Linear(3, 2, { seed: 7 }).weight.data)).toEqual(Array.from(new Linear(3, 2, { seed: 7 }).weight.data));
    const g = new Generator(7);
    const a = new Linear(3, 2, { generator: g }), b = new Linear(3, 2, { generator: g });
    expect(Array.from(a.weight.data)).toEqual(Array.from(new Linear(3, 2, { seed: 7 }).weight.data));
    expect(Array.from(b.weight.data)).not.toEqual(Array.from(a.weight.data));
  });

  it('forward equals x·Wᵀ + b computed by hand, on batched input', () => {
    const l = new Linear(3, 2, { seed: 3 });
    const x = Tensor.randn([2, 4, 3], { seed: 4 });
    const y = l.forward(x);
    expect(y.shape).toEqual([2, 4, 2]);
    const W = l.weight.data, b = l.bias!.data, xd = x.data;
    const expected: number[] = [];
    for (let r = 0; r < 8; r++) {
      for (let o = 0; o < 2; o++) {
        let s = b[o];
        for (let i = 0; i < 3; i++) s += xd[r * 3 + i] * W[o * 3 + i];
        expected.push(s);
      }
    }
    expectAllClose(y.data, expected, { rtol: 1e-6, atol: 1e-6 });
  });

  it('without bias has only a weight, and gradients reach it', () => {
    const l = new Linear(3, 2, { bias: false, seed: 0 });
    expect(l.bias).toBeNull();
    expect(l.namedParameters().map(([n]) => n)).toEqual(['weight']);
    l.forward(Tensor.ones([5, 3])).sum().backward();
    // d/dW Σ x·Wᵀ = Σ_rows x = 5 everywhere.
    expect(Array.from(l.weight.grad!.data)).toEqual(new Array(6).fill(5));
  });

  it('rejects bad sizes with a ValueError naming the field', () => {
    expect(() => new Linear(-1, 2)).toThrow(/Linear\.inFeatures=-1/);
    expect(() => new Linear(2, 1.5)).toThrow(ValueError);
    expect(() => new Linear(3, 2).forward(Tensor.ones([4]))).toThrow(ShapeError);
  });
});

describe('Embedding', () => {
  it('looks up rows for ids of any shape; N(0,1) init', () => {
    const e = new Embedding(50, 8, { seed: 2 });
    expect(e.weight.shape).toEqual([50, 8]);
    const y = e.forward(Tensor.indices([3, 0, 3, 49], [2, 2]));
    expect(y.shape).toEqual([2, 2, 8]);
    expect(Array.from(y.data.slice(0, 8))).toEqual(Array.from(e.weight.data.slice(24, 32)));
    const w = Array.from(e.weight.data);
    const mean = w.reduce((s, v) => s + v, 0) / w.length;
    const std = Math.sqrt(w.reduce((s, v) => s + (v - mean) ** 2, 0) / w.length);
    expect(Math.abs(mean)).toBeLessThan(0.15);
    expect(std).toBeGreaterThan(0.85);
    expect(std).toBeLessThan(1.15);
    expect(() => e.forward([50])).toThrow(/50/);
  });
});

describe('norm layers', () => {
  it('RMSNorm: weight ones, y = x/rms(x)·w', () => {
    const n = new RMSNorm(4, 1e-6);
    expect(n.namedParameters().map(([k, t]) => [k, Array.from(t.data)])).toEqual([['weight', [1, 1, 1, 1]]]);
    n.weight.f32.set([1, 2, 3, 4]);
    const x = Tensor.from([1, 2, 3, 4, -2, 0, 2, 0], [2, 4]);
    const y = n.forward(x);
    const r0 = Math.sqrt((1 + 4 + 9 + 16) / 4 + 1e-6), r1 = Math.sqrt(8 / 4 + 1e-6);
    expectAllClose(y.data, [1 / r0, 4 / r0, 9 / r0, 16 / r0, -2 / r1, 0, 6 / r1, 0], { rtol: 1e-5 });
  });

  it('LayerNorm: weight ones, bias zeros, y = (x-μ)/σ·w + b', () => {
    const n = new LayerNorm(3);
    expect(n.namedParameters().map(([k]) => k)).toEqual(['weight', 'bias']);
    expect(n.eps).toBe(1e-5);
    n.bias!.f32.set([0.5, 0, -0.5]);
    const y = n.forward(Tensor.from([1, 2, 3], [1, 3]));
    const s = Math.sqrt(2 / 3 + 1e-5);
    expectAllClose(y.data, [-1 / s + 0.5, 0, 1 / s - 0.5], { rtol: 1e-5 });
    expect(new LayerNorm(3, 1e-5, { bias: false }).namedParameters().map(([k]) => k)).toEqual(['weight']);
    expect(() => new LayerNorm(0)).toThrow(/LayerNorm\.dim=0/);
    expect(() => new RMSNorm(4, -1)).toThrow(/RMSNorm\.eps=-1/);
  });
});

describe('state dicts of composed layers', () => {
  it('uses dotted names and round-trips into a differently initialised copy', () => {
    const a = new Block(1), b = new Block(2);
    expect(Object.keys(a.stateDict())).toEqual(['norm.weight', 'proj.weight', 'proj.bias']);
    a.norm.weight.f32.set([1, 0.5, 2, 1]);
    const x = Tensor.randn([3, 4], { seed: 9 });
    expect(Array.from(b.forward(x).data)).not.toEqual(Array.from(a.forward(x).data));
    b.loadStateDict(a.stateDict());
    expect(Array.from(b.forward(x).data)).toEqual(Array.from(a.forward(x).data));
    // Values are copied, not shared.
    a.proj.weight.f32[0] += 1;
    expect(b.proj.weight.data[0]).not.toBe(a.proj.weight.data[0]);
    const { ['proj.bias']: _, ...missing } = a.stateDict();
    expect(() => b.loadStateDict(missing)).toThrow(StateDictError);
    expect(() => b.loadStateDict({ ...a.stateDict(), 'proj.bias': Tensor.zeros([4]) })).toThrow(/proj\.bias/);
  });
});
