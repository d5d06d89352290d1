/**
 * Finite-difference gradient checks for every differentiable op, on every backend.
 * Non-scalar outputs are reduced by a fixed random weighting (not a plain sum, which would make
 * e.g. softmax's check vacuous). Inputs are kept away from kinks (relu/abs at 0, ties of max).
 */
import { describe, it } from 'vitest';
import {
  Generator,
  Tensor,
  abs,
  activation,
  add,
  concat,
  crossEntropy,
  div,
  dropout,
  embedding,
  exp,
  expand,
  gatedAct,
  gatherAlong,
  gatherRows,
  gelu,
  layerNorm,
  linear,
  log,
  logSoftmax,
  logsumexp,
  matmul,
  max,
  maximum,
  mean,
  min,
  minimum,
  mseLoss,
  mul,
  neg,
  pow,
  relu,
  reshape,
  rmsNorm,
  rsqrt,
  scaledDotProductAttention,
  scatterAddRows,
  sigmoid,
  silu,
  slice,
  softmax,
  softplus,
  sqrt,
  square,
  squeeze,
  stack,
  sub,
  sum,
  tanh,
  topK,
  transpose,
  unsqueeze,
} from '../src/index.js';
import type { Activation } from '../src/backend/interface.js';
import { forEachBackend, gradCheck } from './helpers.js';

type F = (...xs: Tensor[]) => Tensor;

const rn = (shape: number[], seed: number): Tensor => Tensor.randn(shape, { seed });
/** Push values at least m away from 0 (for relu, abs, division). */
const away = (t: Tensor, m = 0.3): Tensor => Tensor.from(t.f32.map((v) => (v >= 0 ? v + m : v - m)), t.shape);
/** Strictly positive values (log, sqrt, rsqrt, pow). */
const pos = (t: Tensor, m = 0.5): Tensor => Tensor.from(t.f32.map((v) => Math.abs(v) + m), t.shape);
/** Pairwise distinct values 0.3 apart in a seeded random order (max/min/topK without ties or near-ties). */
function distinct(shape: number[], seed: number): Tensor {
  const n = shape.reduce((p, d) => p * d, 1);
  const g = new Generator(seed);
  const perm = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = g.int(i + 1);
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  return Tensor.from(perm.map((p) => (p - n / 2) * 0.3), shape);
}
/** Σ y ⊙ w with w a fixed random tensor of y's shape: a scalar that depends on every output. */
const wsum = (y: Tensor): Tensor => y.mul(Tensor.randn(y.shape, { seed: 4242 })).sum();

forEachBackend((backend, run) => {
  describe(`gradcheck [${backend.name}]`, () => {
    const check = (label: string, f: F, inputs: Tensor[], opts: { eps?: number; rtol?: number; atol?: number } = {}): void => {
      it(label, () => run(() => gradCheck(f, inputs, { label, ...opts })));
    };

    describe('unary', () => {
      const x = rn([2, 3], 1);
      check('neg', (a) => wsum(neg(a)), [x]);
      check('abs', (a) => wsum(abs(a)), [away(x)]);
      check('exp', (a) => wsum(exp(a)), [x]);
      check('log', (a) => wsum(log(a)), [pos(x)]);
      check('sqrt', (a) => wsum(sqrt(a)), [pos(x)]);
      check('rsqrt', (a) => wsum(rsqrt(a)), [pos(x)]);
      check('square', (a) => wsum(square(a)), [x]);
      check('tanh', (a) => wsum(tanh(a)), [x]);
      check('sigmoid', (a) => wsum(sigmoid(a)), [x]);
      check('softplus', (a) => wsum(softplus(a)), [x]);
      check('relu', (a) => wsum(relu(a)), [away(x)]);
      check('gelu (erf)', (a) => wsum(gelu(a)), [x]);
      check('gelu (tanh)', (a) => wsum(gelu(a, { approximate: 'tanh' })), [x]);
      check('silu', (a) => wsum(silu(a)), [x]);
      check('activation(gelu_tanh)', (a) => wsum(activation(a, 'gelu_tanh')), [x]);
      check('method chain', (a) => wsum(a.tanh().exp().sigmoid()), [x]);
      for (const act of ['relu', 'gelu', 'gelu_tanh', 'silu'] as Activation[]) {
        check(`gatedAct(${act})`, (a, b) => wsum(gatedAct(a, b, act)), [away(rn([2, 4], 2)), rn([2, 4], 3)]);
      }
    });

    describe('binary with broadcasting', () => {
      const shapes: Array<[number[], number[]]> = [
        [[2, 3], [2, 3]],
        [[2, 3], [3]],
        [[3], [2, 3]],
        [[2, 1], [1, 3]],
        [[2, 3, 1], [3, 4]],
        [[2, 3], []],
        [[], [2, 3]],
        [[1], [2, 3]],
      ];
      shapes.forEach(([sa, sb], i) => {
        const a = rn(sa, 10 + i), b = rn(sb, 20 + i);
        const tag = `[${sa}] ∘ [${sb}]`;
        check(`add ${tag}`, (x, y) => wsum(add(x, y)), [a, b]);
        check(`sub ${tag}`, (x, y) => wsum(sub(x, y)), [a, b]);
        check(`mul ${tag}`, (x, y) => wsum(mul(x, y)), [a, b]);
        check(`div ${tag}`, (x, y) => wsum(div(x, y)), [a, away(b, 0.5)]);
      });
      const x = rn([2, 3], 30);
      check('add scalar', (a) => wsum(add(a, 1.5)), [x]);
      check('sub scalar', (a) => wsum(sub(a, 1.5)), [x]);
      check('mul scalar', (a) => wsum(mul(a, -2.5)), [x]);
      check('div scalar', (a) => wsum(div(a, 0.7)), [x]);
      check('same tensor twice (x·x + x)', (a) => wsum(add(mul(a, a), a)), [x]);
      for (const p of [3, 0.5, -1.5, 1, 2]) check(`pow ${p}`, (a) => wsum(pow(a, p)), [pos(x)]);
      // Hand-picked values: every pair differs by ≥ 0.1, far from the kink at a = b.
      const ma = Tensor.from([0.1, 1.5, -0.7, 2.0, -1.2, 0.4], [2, 3]);
      const mb = Tensor.from([0.9, -0.3, 0.0], [3]);
      check('maximum [2,3] ∘ [3]', (a, b) => wsum(maximum(a, b)), [ma, mb]);
      check('minimum [2,3] ∘ [3]', (a, b) => wsum(minimum(a, b)), [ma, mb]);
      check('maximum [3] ∘ [2,3]', (a, b) => wsum(maximum(a, b)), [mb, ma]);
      check('minimum same shape', (a, b) => wsum(minimum(a, b)), [ma, add(ma, away(rn([2, 3], 31)))]);
    });

    describe('matmul', () => {
      check('2-d', (a, b) => wsum(matmul(a, b)), [rn([3, 4], 40), rn([4, 2], 41)]);
      check('batched × matrix (folded)', (a, b) => wsum(matmul(a, b)), [rn([2, 3, 4], 42), rn([4, 5], 43)]);
      check('batched, broadcast batch dims', (a, b) => wsum(matmul(a, b)), [rn([2, 1, 3, 4], 44), rn([3, 4, 2], 45)]);
      check('matrix × batched', (a, b) => wsum(matmul(a, b)), [rn([3, 4], 46), rn([2, 4, 5], 47)]);
      check('1-d × 2-d', (a, b) => wsum(matmul(a, b)), [rn([4], 48), rn([4, 2], 49)]);
      check('2-d × 1-d', (a, b) => wsum(matmul(a, b)), [rn([3, 4], 50), rn([4], 51)]);
      check('1-d × 1-d', (a, b) => matmul(a, b), [rn([4], 52), rn([4], 53)]);
      check('batched × 1-d', (a, b) => wsum(matmul(a, b)), [rn([2, 3, 4], 54), rn([4], 55)]);
      check('1-d × batched', (a, b) => wsum(matmul(a, b)), [rn([4], 56), rn([2, 4, 3], 57)]);
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          const tag = `transA=${transA} transB=${transB}`;
          const sa = transA ? [4, 3] : [3, 4], sb = transB ? [2, 4] : [4, 2];
          check(`2-d ${tag}`, (a, b) => wsum(matmul(a, b, { transA, transB })), [rn(sa, 60), rn(sb, 61)]);
          check(`batched ${tag}`, (a, b) => wsum(matmul(a, b, { transA, transB })), [rn([2, ...sa], 62), rn([2, ...sb], 63)]);
          check(`batched × matrix ${tag}`, (a, b) => wsum(matmul(a, b, { transA, transB })), [rn([2, ...sa], 64), rn(sb, 65)]);
          check(`broadcast batch ${tag}`, (a, b) => wsum(matmul(a, b, { transA, transB })), [rn([2, 1, ...sa], 66), rn([3, ...sb], 67)]);
        }
      }
      check('linear with bias', (x, w, b) => wsum(linear(x, w, b)), [rn([2, 3, 4], 70), rn([5, 4], 71), rn([5], 72)]);
      check('linear without bias', (x, w) => wsum(linear(x, w)), [rn([3, 4], 73), rn([5, 4], 74)]);
    });

    describe('reductions', () => {
      const x = rn([2, 3, 4], 80);
      const d = distinct([2, 3, 4], 81);
      const axesList: Array<number | number[] | undefined> = [undefined, 1, -1, 0, [0, 2], [1, 2], [0, 1, 2]];
      for (const axes of axesList) {
        for (const keep of [false, true]) {
          const tag = `axis=${JSON.stringify(axes)} keepDims=${keep}`;
          check(`sum ${tag}`, (a) => wsum(sum(a, axes, keep)), [x]);
          check(`mean ${tag}`, (a) => wsum(mean(a, axes, keep)), [x]);
          check(`max ${tag}`, (a) => wsum(max(a, axes, keep)), [d]);
          check(`min ${tag}`, (a) => wsum(min(a, axes, keep)), [d]);
        }
      }
      for (const axis of [-1, 0, 1]) {
        check(`softmax axis=${axis}`, (a) => wsum(softmax(a, axis)), [x]);
        check(`logSoftmax axis=${axis}`, (a) => wsum(logSoftmax(a, axis)), [x]);
        for (const keep of [false, true]) check(`logsumexp axis=${axis} keepDims=${keep}`, (a) => wsum(logsumexp(a, axis, keep)), [x]);
      }
      check('logsumexp of a scalar', (a) => logsumexp(a), [rn([], 82)]);
      check('softmax of a scalar', (a) => wsum(softmax(a).add(a)), [rn([], 83)]);
    });

    describe('shape', () => {
      const x = rn([2, 3, 4], 90);
      check('reshape', (a) => wsum(reshape(a, [4, -1])), [x]);
      check('transpose (default: last two)', (a) => wsum(transpose(a)), [x]);
      check('transpose perm [2,0,1]', (a) => wsum(transpose(a, [2, 0, 1])), [x]);
      check('transpose perm with negative axes', (a) => wsum(transpose(a, [-1, 0, -2])), [x]);
      check('slice middle', (a) => wsum(slice(a, 1, 1, 3)), [x]);
      check('slice negative indices', (a) => wsum(slice(a, -1, -3, -1)), [x]);
      check('slice to end', (a) => wsum(slice(a, 0, 1)), [x]);
      check('concat axis 1', (a, b, c) => wsum(concat([a, b, c], 1)), [rn([2, 1, 4], 91), rn([2, 3, 4], 92), rn([2, 2, 4], 93)]);
      check('concat axis -1', (a, b) => wsum(concat([a, b], -1)), [rn([2, 3], 94), rn([2, 2], 95)]);
      check('concat same tensor twice', (a) => wsum(concat([a, a], 0)), [rn([2, 3], 96)]);
      check('stack axis 1', (a, b) => wsum(stack([a, b], 1)), [rn([2, 3], 97), rn([2, 3], 98)]);
      check('stack axis -1', (a, b) => wsum(stack([a, b], -1)), [rn([2, 3], 99), rn([2, 3], 100)]);
      check('squeeze', (a) => wsum(squeeze(a, 1)), [rn([2, 1, 3], 101)]);
      check('unsqueeze', (a) => wsum(unsqueeze(a, -1)), [rn([2, 3], 102)]);
      check('expand [3,1] → [2,3,4]', (a) => wsum(expand(a, [2, 3, 4])), [rn([3, 1], 103)]);
      check('expand [] → [2,2]', (a) => wsum(expand(a, [2, 2])), [rn([], 104)]);
    });

    describe('index ops', () => {
      const src = rn([3, 4], 110);
      check('gatherRows (repeated indices)', (s) => wsum(gatherRows(s, [0, 2, 0, 1, 2, 2])), [src]);
      check('gatherRows 2-d index tensor', (s) => wsum(gatherRows(s, Tensor.indices([2, 2, 0, 1], [2, 2]))), [src]);
      check('embedding', (s) => wsum(embedding(s, [1, 1])), [src]);
      const idx = [1, 0, 1, 3, 1];
      check('scatterAddRows without weights', (s) => wsum(scatterAddRows(s, idx, 4)), [rn([5, 3], 111)]);
      check('scatterAddRows with weights (src and weights)', (s, w) => wsum(scatterAddRows(s, idx, 4, w)), [rn([5, 3], 112), rn([5], 113)]);
      check('scatterAddRows 3-d src', (s, w) => wsum(scatterAddRows(s, idx, 2 + 2, w)), [rn([5, 2, 2], 114), rn([5], 115)]);
      check('topK values k=2', (a) => wsum(topK(a, 2).values), [distinct([3, 5], 116)]);
      check('topK values k=all', (a) => wsum(topK(a, 4).values), [distinct([2, 4], 117)]);
      const gi1 = Tensor.indices([2, 0, 0, 1, 3, 3], [2, 3]);
      check('gatherAlong axis 1', (a) => wsum(gatherAlong(a, 1, gi1)), [rn([2, 4], 118)]);
      const gi0 = Tensor.indices([1, 0, 1, 1, 1, 0], [3, 2]);
      check('gatherAlong axis 0', (a) => wsum(gatherAlong(a, 0, gi0)), [rn([2, 2], 119)]);
    });

    describe('norms', () => {
      const x = rn([3, 5], 120);
      const w = rn([5], 121), b = rn([5], 122);
      check('layerNorm x, weight, bias', (a, ww, bb) => wsum(layerNorm(a, ww, bb)), [x, w, b]);
      check('layerNorm x only', (a) => wsum(layerNorm(a)), [x]);
      check('layerNorm weight only', (a, ww) => wsum(layerNorm(a, ww, null)), [x, w]);
      check('layerNorm bias only', (a, bb) => wsum(layerNorm(a, null, bb)), [x, b]);
      check('layerNorm 3-d, eps=1e-2', (a, ww, bb) => wsum(layerNorm(a, ww, bb, 1e-2)), [rn([2, 2, 5], 123), w, b]);
      check('rmsNorm x, weight', (a, ww) => wsum(rmsNorm(a, ww)), [x, w]);
      check('rmsNorm x only', (a) => wsum(rmsNorm(a)), [x]);
      check('rmsNorm 3-d', (a, ww) => wsum(rmsNorm(a, ww, 1e-3)), [rn([2, 2, 5], 124), w]);
    });

    describe('losses and dropout', () => {
      const logits = rn([4, 5], 130);
      const t = Tensor.indices([1, -100, 3, 0]);
      check('crossEntropy mean with ignored target', (z) => crossEntropy(z, t), [logits]);
      check('crossEntropy sum', (z) => crossEntropy(z, t, { reduction: 'sum' }), [logits]);
      check('crossEntropy none', (z) => wsum(crossEntropy(z, t, { reduction: 'none' })), [logits]);
      check('crossEntropy label smoothing 0.1', (z) => crossEntropy(z, t, { labelSmoothing: 0.1 }), [logits]);
      check('crossEntropy label smoothing, none', (z) => wsum(crossEntropy(z, t, { labelSmoothing: 0.3, reduction: 'none' })), [logits]);
      check('crossEntropy custom ignoreIndex', (z) => crossEntropy(z, [1, 2, 3, 2], { ignoreIndex: 2 }), [logits]);
      check('crossEntropy 3-d logits', (z) => crossEntropy(z, Tensor.indices([0, 3, 1, 2, -100, 3], [2, 3]), { labelSmoothing: 0.2 }), [rn([2, 3, 4], 131)]);
      check('mseLoss', (a, b) => mseLoss(a, b), [rn([2, 3], 132), rn([2, 3], 133)]);
      check('mseLoss sum', (a, b) => mseLoss(a, b, { reduction: 'sum' }), [rn([2, 3], 134), rn([2, 3], 135)]);
      // A fixed seed gives the same mask on every evaluation, so finite differences are valid.
      check('dropout p=0.3 (fixed seed)', (a) => wsum(dropout(a, 0.3, { seed: 7 })), [rn([4, 5], 136)]);
      check('dropout composed', (a) => wsum(dropout(a.tanh(), 0.5, { seed: 8 }).square()), [rn([3, 3], 137)]);
    });

    describe('attention', () => {
      const cases: Array<{ tq: number; tk: number; causal: boolean; scale?: number; dv?: number }> = [
        { tq: 3, tk: 3, causal: false },
        { tq: 3, tk: 3, causal: true },
        { tq: 2, tk: 5, causal: false },
        { tq: 2, tk: 5, causal: true },
        { tq: 4, tk: 2, causal: true },
        { tq: 3, tk: 4, causal: true, scale: 0.7, dv: 2 },
      ];
      cases.forEach(({ tq, tk, causal, scale, dv }, i) => {
        const q = rn([2, 2, tq, 3], 140 + i), k = rn([2, 2, tk, 3], 150 + i), v = rn([2, 2, tk, dv ?? 3], 160 + i);
        check(`Tq=${tq} Tk=${tk} causal=${causal}${scale ? ` scale=${scale}` : ''}${dv ? ` Dv=${dv}` : ''}`,
          (a, b, c) => wsum(scaledDotProductAttention(a, b, c, { causal, scale })), [q, k, v]);
      });
    });
  });
});
