// Fused backward rules write leaf gradients in place (leafGradSink) and zeroGrad recycles the
// buffers (recycleGrad): results must equal the allocate-and-return path exactly.
import { describe, expect, test } from 'vitest';
import { groupedExpertFFN } from '../src/moe/expert-ffn.js';
import { leafGradSink, recycleGrad, setAnomalyDetection, Tensor } from '../src/index.js';
import { expectAllClose, forEachBackend } from './helpers.js';

function experts(E: number, d: number, f: number) {
  const mk = (shape: number[], seed: number) => Tensor.randn(shape, { seed, requiresGrad: true });
  return {
    w1: Array.from({ length: E }, (_, e) => mk([f, d], 10 + e)),
    w3: Array.from({ length: E }, (_, e) => mk([f, d], 40 + e)),
    w2: Array.from({ length: E }, (_, e) => mk([d, f], 70 + e)),
  };
}

forEachBackend((backend, run) => {
  describe(`leaf gradient sinks [${backend.name}]`, () => {
    const E = 4, d = 8, f = 12;
    // Expert 2 gets no rows: its gradients must be exact zeros, even in a recycled buffer.
    const offsets = Int32Array.of(0, 5, 9, 9, 14);
    const x = Tensor.randn([14, d], { seed: 1, requiresGrad: true });
    const g = Tensor.randn([14, d], { seed: 2 });
    const all = (w: ReturnType<typeof experts>) => [...w.w1, ...w.w3, ...w.w2];

    function reference(w: ReturnType<typeof experts>): Float32Array[] {
      // Anomaly mode disables the sinks: the rule returns every gradient through the tape.
      setAnomalyDetection(true);
      try {
        run(() => groupedExpertFFN(x, offsets, w, 'silu').backward(g));
      } finally {
        setAnomalyDetection(false);
      }
      const grads = all(w).map((p) => Float32Array.from((p.grad as Tensor).f32));
      for (const p of all(w)) p.grad = null;
      x.grad = null;
      return grads;
    }

    test('in-place gradients equal returned ones; an expert without rows gets zeros', () => {
      const w = experts(E, d, f);
      const ref = reference(w);
      run(() => groupedExpertFFN(x, offsets, w, 'silu').backward(g));
      all(w).forEach((p, i) => expectAllClose((p.grad as Tensor).f32, ref[i], { rtol: 0, atol: 0, label: `param ${i}` }));
      expect([...(w.w1[2].grad as Tensor).f32].every((v) => v === 0)).toBe(true);
    });

    test('a recycled buffer full of garbage is overwritten, not added to', () => {
      const w = experts(E, d, f);
      const ref = reference(w);
      run(() => groupedExpertFFN(x, offsets, w, 'silu').backward(g));
      const buffers = all(w).map((p) => (p.grad as Tensor).f32);
      for (const b of buffers) b.fill(123.5);
      for (const p of all(w)) recycleGrad(p);
      expect(all(w).every((p) => p.grad === null)).toBe(true);
      run(() => groupedExpertFFN(x, offsets, w, 'silu').backward(g));
      all(w).forEach((p, i) => {
        expect((p.grad as Tensor).f32, 'the recycled buffer is reused').toBe(buffers[i]);
        expectAllClose((p.grad as Tensor).f32, ref[i], { rtol: 0, atol: 0, label: `param ${i}` });
      });
    });

    test('a live gradient is accumulated into (two backwards = twice the gradient)', () => {
      const w = experts(E, d, f);
      const ref = reference(w);
      run(() => groupedExpertFFN(x, offsets, w, 'silu').backward(g));
      run(() => groupedExpertFFN(x, offsets, w, 'silu').backward(g));
      all(w).forEach((p, i) => expectAllClose((p.grad as Tensor).f32, ref[i].map((v) => 2 * v), { rtol: 1e-6, atol: 1e-6, label: `param ${i}` }));
    });
  });
});

describe('leafGradSink', () => {
  test('refuses non-leaves and tensors that do not require grad', () => {
    const a = Tensor.randn([3], { seed: 3, requiresGrad: true });
    expect(leafGradSink(Tensor.randn([3], { seed: 4 }))).toBeNull();
    expect(leafGradSink(a.mul(2))).toBeNull();
    const sink = leafGradSink(a);
    expect(sink?.accumulate).toBe(false);
    expect(a.grad?.f32).toBe(sink?.data);
    expect(leafGradSink(a)?.accumulate).toBe(true);
  });
});

describe('matmul weight gradients in place', () => {
  test('linear: in-place (recycled, then accumulated) weight gradient equals the returned one', () => {
    const x = Tensor.randn([6, 5], { seed: 5 });
    const w = Tensor.randn([3, 5], { seed: 6, requiresGrad: true });
    const g = Tensor.randn([6, 3], { seed: 7 });
    setAnomalyDetection(true); // sinks off: the tape's returned gradient is the reference
    try {
      x.matmul(w, { transB: true }).backward(g);
    } finally {
      setAnomalyDetection(false);
    }
    const ref = Float32Array.from((w.grad as Tensor).f32);
    (w.grad as Tensor).f32.fill(-7);
    recycleGrad(w);
    x.matmul(w, { transB: true }).backward(g);
    expectAllClose((w.grad as Tensor).f32, ref, { rtol: 0, atol: 0 });
    x.matmul(w, { transB: true }).backward(g);
    expectAllClose((w.grad as Tensor).f32, ref.map((v) => 2 * v), { rtol: 1e-6, atol: 1e-6 });
  });
});
