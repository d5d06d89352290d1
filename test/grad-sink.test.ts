// Fused backward rules write leaf gradients in place (leafGradSink) and zeroGrad recycles the
// buffers (recycleGrad): results must equal the allocate-and-return path exactly.
import { describe, expect, test } from 'vitest';
import { groupedExpertFFN } from '../src/moe/expert-ffn.js';
import { record } from '../src/tensor/autodiff.js';
import { leafGradSink, pendingGradSink, recycleGrad, setAnomalyDetection, Tensor } from '../src/index.js';
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

// A tensor consumed by several matmuls (x feeding the router and the experts; q, k, v projections
// of one input): the later rules add their input gradient into the engine's pending sum in place
// (pendingGradSink) instead of returning a temporary. Checked against sums computed by hand.
forEachBackend((backend, run) => {
  describe(`matmul input gradients into the pending sum [${backend.name}]`, () => {
    const T = 7, d = 5, n1 = 3, n2 = 4;
    const W1 = Tensor.randn([n1, d], { seed: 11 }), W2 = Tensor.randn([n2, d], { seed: 12 });
    const g1 = Tensor.randn([T, n1], { seed: 13 }), g2 = Tensor.randn([T, n2], { seed: 14 }), g3 = Tensor.randn([T, d], { seed: 15 });
    /** Σ_j g[t, j] · W[j, i], in float64. */
    const gW = (g: Tensor, W: Tensor, t: number, i: number) => {
      let s = 0;
      for (let j = 0; j < W.shape[0]; j++) s += g.f32[t * W.shape[0] + j] * W.f32[j * d + i];
      return s;
    };
    const expected = (scale: number, withG3: boolean) =>
      Float64Array.from({ length: T * d }, (_, o) => {
        const t = Math.floor(o / d), i = o % d;
        return scale * (gW(g1, W1, t, i) + gW(g2, W2, t, i) + (withG3 ? g3.f32[o] : 0));
      });

    test('pendingGradSink is null outside a backward', () => {
      expect(pendingGradSink(Tensor.randn([2], { seed: 1, requiresGrad: true }))).toBeNull();
    });

    test('the pending sum is offered only while the engine alone holds it', () => {
      // probe(h)'s rule runs after the other term's (the later input of the root's add runs first)
      // and records what pendingGradSink offers for h.
      const seen: (Float32Array | null)[] = [];
      const probe = (t: Tensor) => record('probe', [t], new Tensor(Float32Array.from(t.f32), t.shape), (g) => {
        const sink = pendingGradSink(t);
        seen.push(sink && Float32Array.from(sink)); // a copy: the engine adds g into it next
        return [g];
      });
      const x = Tensor.randn([T, d], { seed: 22, requiresGrad: true });
      const z = Tensor.randn([T, d], { seed: 23, requiresGrad: true });
      run(() => {
        const h = x.mul(1);
        probe(h).sum().add(h.mul(g3).sum()).backward(); // mul's rule returns h's gradient alone
        const h2 = x.mul(1);
        probe(h2).sum().add(h2.add(z).mul(g3).sum()).backward(); // add's rule shares it with z
      });
      expect(seen).toHaveLength(2);
      expectAllClose(seen[0] ?? [], g3.f32, { rtol: 0, atol: 0, label: "h's pending gradient" });
      expect(seen[1]).toBeNull();
    });

    test('a leaf feeding two matmuls gets the sum of both products', () => {
      const x = Tensor.randn([T, d], { seed: 16, requiresGrad: true });
      run(() => x.matmul(W1, { transB: true }).mul(g1).sum().add(x.matmul(W2, { transB: true }).mul(g2).sum()).backward());
      expectAllClose((x.grad as Tensor).f32, expected(1, false), { rtol: 1e-5, atol: 1e-5 });
      // A second backward accumulates into the live .grad.
      run(() => x.matmul(W1, { transB: true }).mul(g1).sum().add(x.matmul(W2, { transB: true }).mul(g2).sum()).backward());
      expectAllClose((x.grad as Tensor).f32, expected(2, false), { rtol: 1e-5, atol: 1e-5 });
    });

    test('a non-leaf feeding two matmuls and an element-wise op', () => {
      const x = Tensor.randn([T, d], { seed: 17, requiresGrad: true });
      run(() => {
        const h = x.mul(2);
        h.matmul(W1, { transB: true }).mul(g1).sum().add(h.matmul(W2, { transB: true }).mul(g2).sum()).add(h.mul(g3).sum()).backward();
      });
      expectAllClose((x.grad as Tensor).f32, expected(2, true), { rtol: 1e-5, atol: 1e-5 });
    });

    test('a pending gradient shared with another input is not written into', () => {
      // (h + z)'s rule hands one buffer to both h and z, so h's pending sum is shared with z's
      // gradient when the matmuls' rules run: both gradients must still come out right.
      const x = Tensor.randn([T, d], { seed: 18, requiresGrad: true });
      const z = Tensor.randn([T, d], { seed: 19, requiresGrad: true });
      run(() => {
        const h = x.mul(1);
        h.matmul(W1, { transB: true }).mul(g1).sum().add(h.matmul(W2, { transB: true }).mul(g2).sum()).add(h.add(z).mul(g3).sum()).backward();
      });
      expectAllClose((z.grad as Tensor).f32, g3.f32, { rtol: 0, atol: 0 });
      expectAllClose((x.grad as Tensor).f32, expected(1, true), { rtol: 1e-5, atol: 1e-5 });
    });

    test("a pending gradient that is also the matmul's own output gradient is not written into", () => {
      // u = h + h·Wᵀ: add's rule hands one buffer G to both h and the product, so the product's
      // rule reads G as its output gradient while G is also h's pending sum (shared, so not
      // offered: the probe test above checks that). dL/dh = g3 + g3·W.
      const x = Tensor.randn([T, d], { seed: 20, requiresGrad: true });
      const W = Tensor.randn([d, d], { seed: 21 });
      run(() => {
        const h = x.mul(1);
        h.add(h.matmul(W, { transB: true })).mul(g3).sum().backward();
      });
      const want = Float64Array.from({ length: T * d }, (_, o) => {
        const t = Math.floor(o / d), i = o % d;
        let s = g3.f32[o];
        for (let j = 0; j < d; j++) s += g3.f32[t * d + j] * W.f32[j * d + i];
        return s;
      });
      expectAllClose((x.grad as Tensor).f32, want, { rtol: 1e-5, atol: 1e-5 });
    });
  });
});
