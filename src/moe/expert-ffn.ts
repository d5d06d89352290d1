/**
 * The experts' grouped feed-forward as one fused, differentiable op over contiguous per-expert
 * row blocks: for expert e and its rows X_e,
 *   gated:   Y_e = (act(X_e W1_eᵀ) ⊙ X_e W3_eᵀ) W2_eᵀ      (GLU experts, Shazeer 2020; Mixtral)
 *   plain:   Y_e = act(X_e W1_eᵀ) W2_eᵀ
 * Every product runs as one task list on the backend's grouped GEMM (one task per expert and
 * matrix), so an expert with no tokens costs nothing and the cost does not grow with the
 * number of experts, only with the rows routed.
 */
import type { Activation } from '../backend/interface.js';
import { GEMM_ACCUMULATE, GEMM_CHAIN, GEMM_STREAM, GEMM_TRANS_A, GEMM_TRANS_B } from '../backend/interface.js';
import { RangeValueError, ShapeError } from '../errors.js';
import { allocFloat32 } from '../backend/alloc.js';
import { acquireScratch, acquireZeroed, releaseScratch } from '../backend/scratch.js';
import { GatedGemmTasks, GemmTasks } from '../ops/gemm-tasks.js';
import { be, requireFloat } from '../ops/util.js';
import { leafGradSink, record, willRecord } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';

/** Per-expert weights in PyTorch Linear layout: w1, w3 [dFF, dModel]; w2 [dModel, dFF]. */
export interface ExpertBlockWeights {
  w1: readonly Tensor[];
  w2: readonly Tensor[];
  /** Present iff the experts are gated. */
  w3: readonly Tensor[] | null;
}

/** The forward intermediates the backward needs (pooled buffers, released by the backward). */
interface FFNTape {
  /** Null for a gated FFN run without `keep`. */
  h1: Float32Array | null;
  h3: Float32Array | null;
  hidden: Float32Array;
}

/** Validate the expert weights against dModel d; returns dFF. */
function checkWeights(weights: ExpertBlockWeights, d: number): number {
  const E = weights.w1.length;
  const dFF = weights.w1[0]?.shape[0] ?? 0;
  for (let e = 0; e < E; e++) {
    const check = (t: Tensor, shape: number[], name: string): void => {
      if (t.shape.length !== 2 || t.shape[0] !== shape[0] || t.shape[1] !== shape[1]) {
        throw new ShapeError(`experts.${e}.${name}.weight`, t.shape, `must be [${shape}]`);
      }
    };
    check(weights.w1[e], [dFF, d], 'w1');
    check(weights.w2[e], [d, dFF], 'w2');
    if (weights.w3) check(weights.w3[e], [dFF, d], 'w3');
  }
  return dFF;
}

function checkOffsets(offsets: Int32Array, E: number, N: number, field: string): void {
  if (offsets.length !== E + 1 || offsets[0] !== 0 || offsets[E] !== N) {
    throw new ShapeError(field, Array.from(offsets), `must be ${E + 1} prefix offsets from 0 to ${N}`);
  }
  for (let e = 0; e < E; e++) {
    if (offsets[e + 1] < offsets[e]) throw new ShapeError(field, Array.from(offsets), 'must be non-decreasing');
  }
}

/** fn(e, r0, m) for every expert e with a non-empty row block: rows r0 .. r0 + m - 1. */
function forEachBlock(offsets: Int32Array, fn: (e: number, r0: number, m: number) => void): void {
  for (let e = 0; e + 1 < offsets.length; e++) {
    const r0 = offsets[e], m = offsets[e + 1] - r0;
    if (m > 0) fn(e, r0, m);
  }
}

/**
 * y[N, d] = the experts' FFN over their row blocks of x[N, d]; returns the intermediates. Without
 * `keep` (nothing will run the backward) a gated FFN does not store H1 and H3.
 */
function ffnForward(x: Float32Array, N: number, d: number, dFF: number, offsets: Int32Array, weights: ExpertBlockWeights, act: Activation, y: Float32Array, keep: boolean): FFNTape {
  // Every row of h1/h3/hidden belongs to exactly one expert block and is fully written below, so
  // pooled (stale) buffers are safe.
  const w3 = weights.w3;
  const h1 = keep || !w3 ? acquireScratch(N * dFF) : null;
  const h3 = w3 && keep ? acquireScratch(N * dFF) : null;
  const hidden = acquireScratch(N * dFF);
  if (w3) {
    // Gated: H1 = X W1ᵀ, H3 = X W3ᵀ and hidden = act(H1) ⊙ H3 in one fused call per expert block.
    const up = new GatedGemmTasks('up', act);
    forEachBlock(offsets, (e, r0, m) => {
      const o = r0 * dFF;
      up.add({ a: x, aOff: r0 * d, lda: d, b1: weights.w1[e].f32, b3: w3[e].f32, ldb: d, transB: true, c1: h1, c1Off: o, c3: h3, c3Off: o, o1: hidden, o1Off: o, o3: null, o3Off: 0, ld: dFF, m, n: dFF, k: d });
    });
    up.run();
  } else if (h1) {
    const up = new GemmTasks();
    forEachBlock(offsets, (e, r0, m) => up.add(x, r0 * d, d, weights.w1[e].f32, 0, d, h1, r0 * dFF, dFF, m, dFF, d, GEMM_TRANS_B));
    up.run();
    be().unary(act, h1, hidden);
  }
  const down = new GemmTasks();
  forEachBlock(offsets, (e, r0, m) => down.add(hidden, r0 * dFF, dFF, weights.w2[e].f32, 0, dFF, y, r0 * d, d, m, d, dFF, GEMM_TRANS_B));
  down.run();
  return { h1, h3, hidden };
}

type WeightGrad = { data: Float32Array; flags: number; sunk: boolean } | null;

/**
 * Backward of ffnForward for dy[N, d]: writes dx (when given) and every expert weight's gradient
 * (straight into its .grad when the tape allows it); returns the weight gradients that could not
 * be sunk, as Tensors in the order [w1..., w3..., w2...]. Releases the tape's buffers.
 */
function ffnBackward(tape: FFNTape, x: Float32Array, N: number, d: number, dFF: number, offsets: Int32Array, weights: ExpertBlockWeights, act: Activation, dy: Float32Array, dx: Float32Array | null): (Tensor | null)[] {
  const E = weights.w1.length;
  const { h1, h3, hidden } = tape;
  if (!h1) throw new Error('ffnBackward: the forward kept no intermediates (it ran as inference)');
  // Weight gradients are written straight into each leaf's .grad (accumulating into a live one,
  // overwriting a recycled one) when the tape allows it: no per-step allocation of E·3 matrices.
  const weightGrad = (w: Tensor): WeightGrad => {
    if (!w.requiresGrad) return null;
    const sink = leafGradSink(w);
    if (sink) return { data: sink.data, flags: sink.accumulate ? GEMM_ACCUMULATE : 0, sunk: true };
    return { data: allocFloat32(w.size), flags: 0, sunk: false };
  };
  const dW2 = weights.w2.map(weightGrad);
  // An expert with no rows: an overwritten gradient must still become zeros (a k = 0 task
  // writes zeros); an accumulated or freshly allocated one needs nothing.
  const weightTask = (t: GemmTasks, a: Float32Array, aOff: number, lda: number, b: Float32Array, bOff: number, ldb: number, wg: WeightGrad, ldc: number, rows: number, cols: number, m: number): void => {
    if (!wg || (m === 0 && (wg.flags !== 0 || !wg.sunk))) return;
    // An overwritten gradient is not read until the optimizer runs: stream it past the cache
    // (at 64 experts the gradients are 192 MB a step, and reading each line before writing it
    // doubled that traffic).
    t.add(a, aOff, lda, b, bOff, ldb, wg.data, 0, ldc, rows, cols, m, GEMM_TRANS_A | wg.flags | (wg.flags === 0 ? GEMM_STREAM : 0));
  };
  // 1) dH1, dH3 (or dH1 alone): through dHidden = dY_e · W2_e and the activation. Gated, they
  // overwrite H1 and H3 in place: nothing reads those after this, and storing to lines the
  // epilogue has just read skips the read-for-ownership of 2·N·dFF floats.
  const dH1 = h3 ? h1 : acquireScratch(N * dFF);
  const dH3 = h3;
  if (dH3) {
    // Gated: dHidden is computed block by block and consumed in cache, never stored.
    const down = new GatedGemmTasks('down-grad', act);
    forEachBlock(offsets, (e, r0, m) => {
      const o = r0 * dFF;
      down.add({ a: dy, aOff: r0 * d, lda: d, b1: weights.w2[e].f32, b3: null, ldb: dFF, transB: false, c1: h1, c1Off: o, c3: h3, c3Off: o, o1: dH1, o1Off: o, o3: dH3, o3Off: o, ld: dFF, m, n: dFF, k: d });
    });
    down.run();
  } else {
    const dHidden = acquireScratch(N * dFF);
    const t1 = new GemmTasks();
    forEachBlock(offsets, (e, r0, m) => t1.add(dy, r0 * d, d, weights.w2[e].f32, 0, dFF, dHidden, r0 * dFF, dFF, m, dFF, d, 0));
    t1.run();
    be().unaryGrad(act, h1, hidden, dHidden, dH1);
    releaseScratch(dHidden);
  }
  // 2) dW2_e = dY_eᵀ · Hidden_e; dX = dH1_e · W1_e (+ dH3_e · W3_e); dW1_e = dH1_eᵀ · X_e; dW3_e = dH3_eᵀ · X_e
  const dW1 = weights.w1.map(weightGrad);
  const dW3 = weights.w3 ? weights.w3.map(weightGrad) : [];
  const t2 = new GemmTasks();
  for (let e = 0; e < E; e++) {
    const r0 = offsets[e], m = offsets[e + 1] - r0;
    weightTask(t2, dy, r0 * d, d, hidden, r0 * dFF, dFF, dW2[e], dFF, d, dFF, m);
    if (dx && m > 0) {
      t2.add(dH1, r0 * dFF, dFF, weights.w1[e].f32, 0, d, dx, r0 * d, d, m, d, dFF, 0);
      // dX_e += dH3_e · W3_e, chained: it runs after the product above, in the same call.
      if (dH3 && weights.w3) t2.add(dH3, r0 * dFF, dFF, weights.w3[e].f32, 0, d, dx, r0 * d, d, m, d, dFF, GEMM_ACCUMULATE | GEMM_CHAIN);
    }
    weightTask(t2, dH1, r0 * dFF, dFF, x, r0 * d, d, dW1[e], d, dFF, d, m);
    if (dH3 && weights.w3) weightTask(t2, dH3, r0 * dFF, dFF, x, r0 * d, d, dW3[e], d, dFF, d, m);
  }
  t2.run();
  releaseScratch(h1, h3, hidden, dH1 === h1 ? null : dH1);
  const wrap = (list: WeightGrad[], src: readonly Tensor[]): (Tensor | null)[] =>
    src.map((w, e) => {
      const wg = list[e];
      return wg && !wg.sunk ? new Tensor(wg.data, w.shape) : null;
    });
  return [...wrap(dW1, weights.w1), ...wrap(dW3, weights.w3 ?? []), ...wrap(dW2, weights.w2)];
}

function weightInputs(weights: ExpertBlockWeights): Tensor[] {
  return [...weights.w1, ...(weights.w3 ?? []), ...weights.w2];
}

/**
 * Apply expert e's FFN to rows offsets[e] .. offsets[e+1]-1 of xs [N, dModel] → [N, dModel].
 * Differentiable in xs and in every expert weight (experts with no rows get zero gradients).
 */
export function groupedExpertFFN(xs: Tensor, offsets: Int32Array, weights: ExpertBlockWeights, act: Activation): Tensor {
  const x = requireFloat(xs, 'groupedExpertFFN.xs');
  if (xs.rank !== 2) throw new ShapeError('groupedExpertFFN.xs', xs.shape, 'must be [rows, dModel]');
  const [N, d] = xs.shape;
  checkOffsets(offsets, weights.w1.length, N, 'groupedExpertFFN.offsets');
  const dFF = checkWeights(weights, d);
  const y = new Float32Array(N * d);
  const inputs = [xs, ...weightInputs(weights)];
  const tape = ffnForward(x, N, d, dFF, offsets, weights, act, y, willRecord(inputs));
  const out = record('groupedExpertFFN', inputs, new Tensor(y, [N, d]), (g) => {
    const dx = xs.requiresGrad ? acquireScratch(N * d) : null; // every row lies in a non-empty block
    const wg = ffnBackward(tape, x, N, d, dFF, offsets, weights, act, g.f32, dx);
    return [dx ? new Tensor(dx, [N, d]) : null, ...wg];
  });
  // Nothing recorded (inference, or frozen inputs): the intermediates are dead already.
  if (!out.gradNode) releaseScratch(tape.h1, tape.h3, tape.hidden);
  return out;
}

/**
 * The routed experts' whole contribution as one op (gather, grouped FFN, weighted combine):
 *   out[t] = Σ_{i : tokenIndex[i] = t} rowWeights[i] · FFN_{e(i)}(x[t])
 * where assignment i belongs to expert e(i) by its block offsets[e] ≤ i < offsets[e+1]
 * (Shazeer 2017's y = Σ_i G(x)_i E_i(x), over the sparse dispatch plan). The gathered rows, the
 * expert outputs and every intermediate live in pooled scratch buffers that the backward returns,
 * so a training step allocates only the [tokens, dModel] output and input gradient.
 * Differentiable in x, rowWeights and every expert weight.
 */
export function routedExpertMixture(
  x: Tensor,
  tokenIndex: Int32Array,
  offsets: Int32Array,
  rowWeights: Tensor,
  weights: ExpertBlockWeights,
  act: Activation,
): Tensor {
  const xd = requireFloat(x, 'routedExpertMixture.x');
  if (x.rank !== 2) throw new ShapeError('routedExpertMixture.x', x.shape, 'must be [tokens, dModel]');
  const [T, d] = x.shape;
  const N = tokenIndex.length;
  checkOffsets(offsets, weights.w1.length, N, 'routedExpertMixture.offsets');
  for (let i = 0; i < N; i++) {
    const t = tokenIndex[i];
    if (!Number.isInteger(t) || t < 0 || t >= T) throw new RangeValueError(`routedExpertMixture.tokenIndex[${i}]`, t, `must be a token in [0, ${T})`);
  }
  const wd = requireFloat(rowWeights, 'routedExpertMixture.rowWeights');
  if (rowWeights.size !== N) throw new ShapeError('routedExpertMixture.rowWeights', rowWeights.shape, `needs ${N} entries, one per assignment`);
  const dFF = checkWeights(weights, d);
  const xs = acquireScratch(N * d); // fully written by the gather
  be().gatherRows(xd, tokenIndex, d, xs);
  const y = acquireScratch(N * d); // fully written: every row lies in one expert block
  const inputs = [x, rowWeights, ...weightInputs(weights)];
  const tape = ffnForward(xs, N, d, dFF, offsets, weights, act, y, willRecord(inputs));
  // From the pool when a [tokens, dModel] buffer was released (last step's upstream gradient, say):
  // zeroing warm memory costs less than a fresh buffer's page faults.
  const out = acquireZeroed(T * d);
  be().scatterAddRows(y, tokenIndex, wd, d, out);
  const result = record('routedExpertMixture', inputs, new Tensor(out, [T, d]), (g) => {
    // dys[i] = w[i] · dOut[tokenIndex[i]] (the expert outputs' gradient) and dw[i] = dOut[tokenIndex[i]] · y[i]
    // (the routing weights'), in one pass over the upstream gradient.
    const dys = acquireScratch(N * d);
    const dwd = rowWeights.requiresGrad ? new Float32Array(N) : null;
    be().gatherRowsScaled(g.f32, tokenIndex, d, wd, dys, dwd ? y : null, dwd);
    const dw = dwd ? new Tensor(dwd, rowWeights.shape) : null;
    const dxs = x.requiresGrad ? acquireScratch(N * d) : null;
    const wg = ffnBackward(tape, xs, N, d, dFF, offsets, weights, act, dys, dxs);
    let dx: Tensor | null = null;
    if (dxs) {
      const dxd = acquireZeroed(T * d); // tokens that lost every assignment get zero
      be().scatterAddRows(dxs, tokenIndex, null, d, dxd);
      dx = new Tensor(dxd, [T, d]);
    }
    releaseScratch(xs, y, dys, dxs);
    return [dx, dw, ...wg];
  });
  if (!result.gradNode) releaseScratch(xs, y, tape.h1, tape.h3, tape.hidden);
  return result;
}
