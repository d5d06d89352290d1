/**
 * The mixture's low-rank path as one fused, differentiable op over contiguous per-adapter row
 * blocks (the rows each adapter received, sorted by adapter as the MoE dispatch plan sorts tokens
 * by expert): for adapter e and its rows X_e with per-row weights w (gate · scale),
 *   Y_e = ((X_e A_eᵀ) ⊙ w) B_eᵀ
 * Two task lists on the backend's grouped GEMM (one task per adapter for A, one for B), the weight
 * applied in the rank-r space (cheapest place), and no dense ΔW = B·A anywhere.
 */
import { GEMM_TRANS_A, GEMM_TRANS_B } from '../backend/interface.js';
import { ShapeError } from '../errors.js';
import { acquireScratch, releaseScratch } from '../backend/scratch.js';
import { GemmTasks } from '../ops/gemm-tasks.js';
import { be, requireFloat } from '../ops/util.js';
import { record } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';

/** One adapter's factors at a site: A [r, in], B [out, r] (PEFT lora_A / lora_B layout), or null (no weights here: contributes 0). */
export type LowRankFactors = { A: Tensor; B: Tensor } | null;

/** Each adapter's rank, after checking A [r, in] and B [out, r] (0 for an adapter absent here). */
function checkedRanks(factors: readonly LowRankFactors[], d: number, outFeatures: number): number[] {
  return factors.map((f, e) => {
    if (!f) return 0;
    const r = f.A.shape[0];
    if (f.A.rank !== 2 || f.A.shape[1] !== d) throw new ShapeError(`lora_A[${e}]`, f.A.shape, `must be [r, ${d}]`);
    if (f.B.rank !== 2 || f.B.shape[0] !== outFeatures || f.B.shape[1] !== r) throw new ShapeError(`lora_B[${e}]`, f.B.shape, `must be [${outFeatures}, ${r}]`);
    return r;
  });
}

/** The rank-space layout: H packs each block's [m_e, r_e] rows contiguously, block e at hOff[e]. */
interface RankSpace {
  offsets: Int32Array;
  ranks: number[];
  hOff: Int32Array;
}

function rankSpace(offsets: Int32Array, ranks: number[]): RankSpace {
  const E = ranks.length;
  const hOff = new Int32Array(E + 1);
  for (let e = 0; e < E; e++) hOff[e + 1] = hOff[e] + (offsets[e + 1] - offsets[e]) * ranks[e];
  return { offsets, ranks, hOff };
}

/** H_e = X_e A_eᵀ for every block with rows and factors (one grouped GEMM call). */
function projectDown(xs: Float32Array, d: number, factors: readonly LowRankFactors[], rs: RankSpace, h: Float32Array): void {
  const t = new GemmTasks();
  factors.forEach((f, e) => {
    const m = rs.offsets[e + 1] - rs.offsets[e];
    if (m > 0 && f) t.add(xs, rs.offsets[e] * d, d, f.A.f32, 0, d, h, rs.hOff[e], rs.ranks[e], m, rs.ranks[e], d, GEMM_TRANS_B);
  });
  t.run();
}

/** hs[i, :] = h[i, :] · w[i] in the rank space (the cheapest place to apply a row weight). */
function weightRows(h: Float32Array, wd: Float32Array, rs: RankSpace, hs: Float32Array): void {
  for (let e = 0; e < rs.ranks.length; e++) {
    const r = rs.ranks[e];
    for (let i = rs.offsets[e], p = rs.hOff[e]; i < rs.offsets[e + 1]; i++) {
      const wi = wd[i];
      for (let j = 0; j < r; j++, p++) hs[p] = h[p] * wi;
    }
  }
}

/**
 * Backward of Y_e = ((X_e A_eᵀ) ⊙ w) B_eᵀ for dY [N, out]: writes dX rows into dxs (when given;
 * rows of an adapter absent here get zeros) and returns dw and every dA_e, dB_e. Its rank-space
 * buffers come from and go back to the scratch pool.
 */
function lowRankBackward(
  xs: Float32Array, d: number, outFeatures: number, factors: readonly LowRankFactors[], rs: RankSpace,
  h: Float32Array, hs: Float32Array, w: Tensor | null, wd: Float32Array | null, dy: Float32Array, dxs: Float32Array | null,
): { dw: Tensor | null; dA: (Float32Array | null)[]; dB: (Float32Array | null)[] } {
  const { offsets, ranks, hOff } = rs;
  const E = factors.length, N = offsets[E];
  // dHs_e = dY_e B_e ; dB_e = dY_eᵀ Hs_e
  const dhs = acquireScratch(h.length); // every block with factors is written; the others are never read
  const dB = factors.map((f) => (f && f.B.requiresGrad ? new Float32Array(f.B.size) : null));
  const s1 = new GemmTasks();
  for (let e = 0; e < E; e++) {
    const m = offsets[e + 1] - offsets[e], f = factors[e], r = ranks[e];
    if (m === 0 || !f) continue;
    s1.add(dy, offsets[e] * outFeatures, outFeatures, f.B.f32, 0, r, dhs, hOff[e], r, m, r, outFeatures, 0);
    const db = dB[e];
    if (db) s1.add(dy, offsets[e] * outFeatures, outFeatures, hs, hOff[e], r, db, 0, r, outFeatures, r, m, GEMM_TRANS_A);
  }
  s1.run();
  // dw_i = Σ_j dHs[i, j] · H[i, j] ; dH = dHs ⊙ w
  let dw: Tensor | null = null;
  let dh = dhs;
  if (wd && w) {
    const dwd = new Float32Array(N);
    dh = acquireScratch(h.length);
    for (let e = 0; e < E; e++) {
      const r = ranks[e];
      for (let i = offsets[e], p = hOff[e]; i < offsets[e + 1]; i++) {
        let s = 0;
        const wi = wd[i];
        for (let j = 0; j < r; j++, p++) {
          s += dhs[p] * h[p];
          dh[p] = dhs[p] * wi;
        }
        dwd[i] = s;
      }
    }
    dw = w.requiresGrad ? new Tensor(dwd, w.shape) : null;
  }
  // dX_e = dH_e A_e ; dA_e = dH_eᵀ X_e
  const dA = factors.map((f) => (f && f.A.requiresGrad ? new Float32Array(f.A.size) : null));
  const s2 = new GemmTasks();
  for (let e = 0; e < E; e++) {
    const m = offsets[e + 1] - offsets[e], f = factors[e], r = ranks[e];
    if (m === 0) continue;
    if (!f) {
      dxs?.fill(0, offsets[e] * d, offsets[e + 1] * d);
      continue;
    }
    if (dxs) s2.add(dh, hOff[e], r, f.A.f32, 0, d, dxs, offsets[e] * d, d, m, d, r, 0);
    const da = dA[e];
    if (da) s2.add(dh, hOff[e], r, xs, offsets[e] * d, d, da, 0, d, r, d, m, GEMM_TRANS_A);
  }
  s2.run();
  releaseScratch(dhs, dh === dhs ? null : dh);
  return { dw, dA, dB };
}

/** The gradient list of a low-rank op: [dx, (dw), dA of each present adapter..., dB of each...]. */
function lowRankGrads(dx: Tensor | null, w: Tensor | null, factors: readonly LowRankFactors[], g: ReturnType<typeof lowRankBackward>): (Tensor | null)[] {
  const grads: (Tensor | null)[] = [dx];
  if (w) grads.push(g.dw);
  factors.forEach((f, e) => f && grads.push(g.dA[e] ? new Tensor(g.dA[e] as Float32Array, f.A.shape) : null));
  factors.forEach((f, e) => f && grads.push(g.dB[e] ? new Tensor(g.dB[e] as Float32Array, f.B.shape) : null));
  return grads;
}

/**
 * Y [N, out] with rows offsets[e]..offsets[e+1]-1 equal to ((xs_e A_eᵀ) ⊙ w_e) B_eᵀ, w [N] (null
 * means 1). Adapters may differ in rank. Differentiable in xs, w and every A_e, B_e.
 */
export function groupedLowRank(xs: Tensor, offsets: Int32Array, factors: readonly LowRankFactors[], w: Tensor | null, outFeatures: number): Tensor {
  const x = requireFloat(xs, 'groupedLowRank.xs');
  if (xs.rank !== 2) throw new ShapeError('groupedLowRank.xs', xs.shape, 'must be [rows, in]');
  const [N, d] = xs.shape;
  const E = factors.length;
  if (offsets.length !== E + 1 || offsets[0] !== 0 || offsets[E] !== N) {
    throw new ShapeError('groupedLowRank.offsets', Array.from(offsets), `must be ${E + 1} prefix offsets from 0 to ${N}`);
  }
  if (w && w.size !== N) throw new ShapeError('groupedLowRank.w', w.shape, `needs ${N} entries, one per row`);
  const rs = rankSpace(offsets, checkedRanks(factors, d, outFeatures));
  const h = new Float32Array(rs.hOff[E]);
  projectDown(x, d, factors, rs, h);
  const wd = w ? requireFloat(w, 'groupedLowRank.w') : null;
  const hs = wd ? new Float32Array(h.length) : h;
  if (wd) weightRows(h, wd, rs, hs);
  const y = new Float32Array(N * outFeatures);
  const t2 = new GemmTasks();
  for (let e = 0; e < E; e++) {
    const m = offsets[e + 1] - offsets[e], f = factors[e];
    if (m === 0 || !f) continue;
    t2.add(hs, rs.hOff[e], rs.ranks[e], f.B.f32, 0, rs.ranks[e], y, offsets[e] * outFeatures, outFeatures, m, outFeatures, rs.ranks[e], GEMM_TRANS_B);
  }
  t2.run();
  const present = factors.filter((f): f is { A: Tensor; B: Tensor } => f !== null);
  const inputs: Tensor[] = [xs, ...(w ? [w] : []), ...present.map((f) => f.A), ...present.map((f) => f.B)];
  return record('groupedLowRank', inputs, new Tensor(y, [N, outFeatures]), (g) => {
    const dx = xs.requiresGrad ? new Float32Array(N * d) : null;
    const grads = lowRankBackward(x, d, outFeatures, factors, rs, h, hs, w, wd, g.f32, dx);
    return lowRankGrads(dx ? new Tensor(dx, [N, d]) : null, w, factors, grads);
  });
}

/** At most this many assignments take the plain-loop inference path. */
const SMALL_ROWS = 16;

let smallH = new Float64Array(64);

function smallMixture(
  x: Float32Array, d: number, tokenIndex: Int32Array, offsets: Int32Array, factors: readonly LowRankFactors[], ranks: number[],
  w: Float32Array | null, outF: number, into: Float32Array,
): void {
  let maxR = 1;
  for (const r of ranks) if (r > maxR) maxR = r;
  if (smallH.length < maxR) smallH = new Float64Array(maxR);
  const h = smallH;
  for (let e = 0; e < factors.length; e++) {
    const f = factors[e];
    if (!f) continue;
    const A = f.A.f32, B = f.B.f32, r = ranks[e];
    for (let i = offsets[e]; i < offsets[e + 1]; i++) {
      const xo = tokenIndex[i] * d, yo = tokenIndex[i] * outF;
      const wi = w ? w[i] : 1;
      for (let j = 0; j < r; j++) {
        let acc = 0;
        for (let c = 0, ao = j * d; c < d; c++) acc += A[ao + c] * x[xo + c];
        h[j] = acc * wi;
      }
      for (let o = 0; o < outF; o++) {
        let acc = 0;
        for (let j = 0, bo = o * r; j < r; j++) acc += B[bo + j] * h[j];
        into[yo + o] += acc;
      }
    }
  }
}

/**
 * The whole low-rank path of a mixture site as one op over the dispatch plan: gather each
 * assignment's input row (rows sorted by adapter), Y = groupedLowRank(rows, w), then scatter-add Y
 * back onto token rows:  out[t] (+)= Σ_{assignments i of t} w_i · B_{e_i} A_{e_i} x_t.
 * Intermediates live in the scratch pool; with `into` (inference only: nothing is recorded) the
 * result is added in place to that [T, out] buffer, e.g. the base layer's fresh output, so the
 * mixture costs no extra output allocation or add. `gather: false` means tokenIndex is the
 * identity (a single adapter): x is used as it is.
 */
export function groupedLoRAMixture(
  x2: Tensor, tokenIndex: Int32Array, offsets: Int32Array, factors: readonly LowRankFactors[], w: Tensor | null, outFeatures: number,
  opts: { gather: boolean; into?: Float32Array },
): Tensor {
  const x = requireFloat(x2, 'groupedLoRAMixture.x');
  const [T, d] = x2.shape;
  const E = factors.length, N = tokenIndex.length;
  if (offsets.length !== E + 1 || offsets[0] !== 0 || offsets[E] !== N) throw new ShapeError('groupedLoRAMixture.offsets', Array.from(offsets), `must be ${E + 1} prefix offsets from 0 to ${N}`);
  if (!opts.gather && N !== T) throw new ShapeError('groupedLoRAMixture.tokenIndex', [N], `gather: false needs one row per token (${T})`);
  if (w && w.size !== N) throw new ShapeError('groupedLoRAMixture.w', w.shape, `needs ${N} entries, one per assignment`);
  const ranks = checkedRanks(factors, d, outFeatures);
  if (opts.into && N <= SMALL_ROWS) {
    // A few assignments (sequence-routed decoding; token routing uses the one-call path in
    // decode.ts): a few thousand multiply-adds, cheaper in plain loops than as four kernel calls.
    // Float64 accumulation, so it may differ from the kernel path in the last bits; inference only.
    smallMixture(x, d, tokenIndex, offsets, factors, ranks, w ? requireFloat(w, 'groupedLoRAMixture.w') : null, outFeatures, opts.into);
    return new Tensor(opts.into, [T, outFeatures]);
  }
  const rs = rankSpace(offsets, ranks);
  const hOff = rs.hOff;
  let xs = x;
  if (opts.gather) {
    xs = acquireScratch(N * d);
    be().gatherRows(x, tokenIndex, d, xs);
  }
  const h = acquireScratch(hOff[E]);
  projectDown(xs, d, factors, rs, h);
  const wd = w ? requireFloat(w, 'groupedLoRAMixture.w') : null;
  // Inference applies the row weights in the scatter-add instead (one fused native pass).
  const weightInScatter = !!opts.into && wd !== null;
  const hs = wd && !weightInScatter ? acquireScratch(h.length) : h;
  if (wd && !weightInScatter) weightRows(h, wd, rs, hs);
  const y = acquireScratch(N * outFeatures);
  const t2 = new GemmTasks();
  for (let e = 0; e < E; e++) {
    const m = offsets[e + 1] - offsets[e], f = factors[e];
    if (m === 0) continue;
    if (f) t2.add(hs, hOff[e], ranks[e], f.B.f32, 0, ranks[e], y, offsets[e] * outFeatures, outFeatures, m, outFeatures, ranks[e], GEMM_TRANS_B);
    else y.fill(0, offsets[e] * outFeatures, offsets[e + 1] * outFeatures); // no weights here: contributes 0
  }
  t2.run();
  const out = opts.into ?? new Float32Array(T * outFeatures);
  if (opts.into && opts.into.length !== T * outFeatures) throw new ShapeError('groupedLoRAMixture.into', [opts.into.length], `must hold ${T}x${outFeatures}`);
  be().scatterAddRows(y, tokenIndex, weightInScatter ? wd : null, outFeatures, out);
  releaseScratch(y);
  const present = factors.filter((f): f is { A: Tensor; B: Tensor } => f !== null);
  const inputs: Tensor[] = [x2, ...(w ? [w] : []), ...present.map((f) => f.A), ...present.map((f) => f.B)];
  const release = (): void => releaseScratch(opts.gather ? xs : null, h, hs === h ? null : hs);
  const result = new Tensor(out, [T, outFeatures]);
  if (opts.into) {
    release();
    return result;
  }
  const recorded = record('groupedLoRAMixture', inputs, result, (g) => {
    const gd = g.f32;
    let dy = gd;
    if (opts.gather) {
      dy = acquireScratch(N * outFeatures);
      be().gatherRows(gd, tokenIndex, outFeatures, dy);
    }
    const dxs = x2.requiresGrad ? (opts.gather ? acquireScratch(N * d) : new Float32Array(N * d)) : null;
    const grads = lowRankBackward(xs, d, outFeatures, factors, rs, h, hs, w, wd, dy, dxs);
    let dx = dxs;
    if (dxs && opts.gather) {
      dx = new Float32Array(T * d);
      be().scatterAddRows(dxs, tokenIndex, null, d, dx);
      releaseScratch(dxs);
    }
    releaseScratch(opts.gather ? dy : null);
    release();
    return lowRankGrads(dx ? new Tensor(dx, [T, d]) : null, w, factors, grads);
  });
  if (!recorded.gradNode) release();
  return recorded;
}
