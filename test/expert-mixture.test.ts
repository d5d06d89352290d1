// routedExpertMixture fuses gather → grouped expert FFN → weighted scatter-add into one op with
// pooled intermediates. It must equal the unfused composition of the three public ops bit for bit
// (same kernels, same order), in the output and in every gradient, including a token that lost
// every assignment and an expert with no rows; and reject malformed plans with typed errors.
import { describe, expect, test } from 'vitest';
import { groupedExpertFFN, routedExpertMixture } from '../src/moe/expert-ffn.js';
import { gatherRows, scatterAddRows, Tensor } from '../src/index.js';
import { RangeValueError, ShapeError } from '../src/errors.js';
import { forEachBackend } from './helpers.js';

const E = 4, d = 16, f = 24, T = 9;
// Assignments grouped by expert (expert 2 empty); token 5 appears nowhere (dropped).
const tokenIndex = Int32Array.of(0, 3, 7, 8, 1, 2, 3, 4, 0, 6, 8, 1);
const offsets = Int32Array.of(0, 4, 8, 8, 12);

function setup(gated: boolean) {
  const mk = (shape: number[], seed: number) => Tensor.randn(shape, { seed, requiresGrad: true });
  const weights = {
    w1: Array.from({ length: E }, (_, e) => mk([f, d], 10 + e)),
    w3: gated ? Array.from({ length: E }, (_, e) => mk([f, d], 40 + e)) : null,
    w2: Array.from({ length: E }, (_, e) => mk([d, f], 70 + e)),
  };
  const x = mk([T, d], 1);
  const rowWeights = Tensor.rand([tokenIndex.length], { seed: 2, requiresGrad: true });
  const g = Tensor.randn([T, d], { seed: 3 });
  const params = [x, rowWeights, ...weights.w1, ...(weights.w3 ?? []), ...weights.w2];
  return { weights, x, rowWeights, g, params };
}

const bits = (t: Tensor) => Buffer.from(Float32Array.from(t.f32).buffer);

forEachBackend((backend, run) => {
  describe(`routedExpertMixture [${backend.name}]`, () => {
    for (const gated of [true, false]) {
      test(`equals gather → groupedExpertFFN → scatterAddRows bit for bit (gated ${gated})`, () => {
        const s = setup(gated);
        const fused = run(() => {
          const out = routedExpertMixture(s.x, tokenIndex, offsets, s.rowWeights, s.weights, 'silu');
          out.backward(s.g);
          return { out, grads: s.params.map((p) => Float32Array.from((p.grad as Tensor).f32)) };
        });
        s.params.forEach((p) => (p.grad = null));
        const plain = run(() => {
          const ys = groupedExpertFFN(gatherRows(s.x, tokenIndex), offsets, s.weights, 'silu');
          const out = scatterAddRows(ys, tokenIndex, T, s.rowWeights);
          out.backward(s.g);
          return { out, grads: s.params.map((p) => Float32Array.from((p.grad as Tensor).f32)) };
        });
        expect(bits(fused.out).equals(bits(plain.out))).toBe(true);
        // The dropped token's output row is exactly zero, and so is its input gradient.
        expect(Array.from(fused.out.f32.subarray(5 * d, 6 * d)).every((v) => v === 0)).toBe(true);
        expect(Array.from(fused.grads[0].subarray(5 * d, 6 * d)).every((v) => v === 0)).toBe(true);
        fused.grads.forEach((gr, i) => expect(Buffer.from(gr.buffer).equals(Buffer.from(plain.grads[i].buffer)), `gradient ${i}`).toBe(true));
        // The empty expert's weights get exact zero gradients.
        expect(fused.grads[2 + 2].every((v) => v === 0)).toBe(true);
      });
    }

    test('rejects malformed plans naming the field', () => {
      const s = setup(true);
      expect(() => routedExpertMixture(s.x, Int32Array.of(0, 9), Int32Array.of(0, 2, 2, 2, 2), Tensor.rand([2]), s.weights, 'silu')).toThrow(RangeValueError);
      expect(() => routedExpertMixture(s.x, Int32Array.of(0, 9), Int32Array.of(0, 2, 2, 2, 2), Tensor.rand([2]), s.weights, 'silu')).toThrow(/tokenIndex\[1\].*9/);
      expect(() => routedExpertMixture(s.x, tokenIndex, Int32Array.of(0, 4, 8, 12), s.rowWeights, s.weights, 'silu')).toThrow(/routedExpertMixture\.offsets/);
      expect(() => routedExpertMixture(s.x, tokenIndex, Int32Array.of(0, 6, 4, 8, 12), s.rowWeights, s.weights, 'silu')).toThrow(ShapeError);
      expect(() => routedExpertMixture(s.x, tokenIndex, offsets, Tensor.rand([3]), s.weights, 'silu')).toThrow(/rowWeights/);
    });
  });
});
