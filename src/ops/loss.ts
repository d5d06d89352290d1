/** Losses: cross-entropy (fused log-softmax + NLL, PyTorch semantics) and mean squared error. */
import { RangeValueError, ShapeError, ValueError } from '../errors.js';
import { record } from '../tensor/autodiff.js';
import { shapesEqual, sizeOf } from '../tensor/shape.js';
import { Tensor, type IndexLike } from '../tensor/tensor.js';
import { sub } from './elementwise.js';
import { mean, sum } from './reduce.js';
import { be, indexShape, requireFloat, toIndexArray } from './util.js';

/** How a per-element loss is reduced. */
export type Reduction = 'mean' | 'sum' | 'none';

export interface CrossEntropyOptions {
  /** Targets equal to this contribute no loss and no gradient, and are not counted by 'mean'. Default -100 (PyTorch). */
  ignoreIndex?: number;
  /** 'mean' (over non-ignored targets; NaN when all are ignored, like PyTorch), 'sum' or 'none'. Default 'mean'. */
  reduction?: Reduction;
  /** ε in [0, 1]: the target distribution is (1-ε)·onehot + ε/C (Szegedy et al. 2016). Default 0. */
  labelSmoothing?: number;
}

function checkReduction(r: unknown, field: string): Reduction {
  if (r !== 'mean' && r !== 'sum' && r !== 'none') throw new ValueError(field, r, "must be 'mean', 'sum' or 'none'");
  return r;
}

/**
 * Cross-entropy of logits [..., C] (classes on the last axis) against int32 class targets
 * shaped like the leading dims: ℓᵢ = -Σ_c qᵢ_c · log softmax(zᵢ)_c with
 * qᵢ = (1-ε)·onehot(tᵢ) + ε/C (torch.nn.functional.cross_entropy, without class weights).
 * Gradient: ∂ℓᵢ/∂zᵢ = softmax(zᵢ) - qᵢ (zero for ignored targets).
 */
export function crossEntropy(logits: Tensor, targets: IndexLike, opts?: CrossEntropyOptions): Tensor {
  const zd = requireFloat(logits, 'crossEntropy.logits');
  if (logits.rank < 1) throw new ShapeError('crossEntropy.logits', logits.shape, 'needs rank >= 1 (classes on the last axis)');
  const ignoreIndex = opts?.ignoreIndex ?? -100;
  if (!Number.isInteger(ignoreIndex)) throw new ValueError('crossEntropy.ignoreIndex', ignoreIndex, 'must be an integer');
  const reduction = checkReduction(opts?.reduction ?? 'mean', 'crossEntropy.reduction');
  const eps = opts?.labelSmoothing ?? 0;
  if (!(eps >= 0 && eps <= 1)) throw new RangeValueError('crossEntropy.labelSmoothing', eps, 'must be in [0, 1]');

  const C = logits.shape[logits.rank - 1];
  const lead = logits.shape.slice(0, -1);
  const N = sizeOf(lead);
  const tShape = indexShape(targets);
  // Plain arrays are 1-d by construction, so for them only the count has to match.
  const shapeOk = targets instanceof Tensor ? shapesEqual(tShape, lead) : sizeOf(tShape) === N;
  if (!shapeOk) throw new ShapeError('crossEntropy.targets.shape', tShape, `must equal the logits' leading dims [${lead}]`);
  const t = toIndexArray(targets, 'crossEntropy.targets');
  for (let i = 0; i < N; i++) {
    const c = t[i];
    if (c !== ignoreIndex && (c < 0 || c >= C)) {
      throw new RangeValueError(`crossEntropy.targets[${i}]`, c, `class index out of range [0, ${C}) (and not ignoreIndex=${ignoreIndex})`);
    }
  }

  // log-probabilities are all the backward needs (p = exp(logp)).
  const logp = new Float32Array(logits.size);
  be().softmax(zd, N, C, true, logp);
  const perRow = new Float64Array(N);
  let count = 0;
  for (let i = 0; i < N; i++) {
    if (t[i] === ignoreIndex) continue;
    count++;
    const base = i * C;
    let l = -(1 - eps) * logp[base + t[i]];
    if (eps > 0) {
      let s = 0;
      for (let c = 0; c < C; c++) s += logp[base + c];
      l -= (eps / C) * s;
    }
    perRow[i] = l;
  }

  let out: Tensor;
  if (reduction === 'none') out = new Tensor(Float32Array.from(perRow), lead);
  else {
    let total = 0;
    for (let i = 0; i < N; i++) total += perRow[i];
    // mean over zero counted targets is 0/0 = NaN, as in PyTorch.
    out = Tensor.scalar(reduction === 'sum' ? total : total / count);
  }

  return record('crossEntropy', [logits], out, (g) => {
    const gd = g.f32;
    const dz = new Float32Array(logits.size);
    const scale = reduction === 'mean' ? 1 / count : 1;
    // softmax(z) = exp(log softmax(z)) on the backend, then dz = gᵢ·(p - ε/C) - gᵢ(1-ε)·onehot.
    be().unary('exp', logp, dz);
    if (reduction !== 'none') {
      const gi = gd[0] * scale;
      be().affine(dz, gi, -gi * (eps / C), dz);
    }
    for (let i = 0; i < N; i++) {
      const base = i * C;
      // Ignored rows get zero (not 0·p), so an all-ignored mean has zero, not NaN, gradient.
      if (t[i] === ignoreIndex) {
        dz.fill(0, base, base + C);
        continue;
      }
      const gi = reduction === 'none' ? gd[i] * scale : gd[0] * scale;
      if (reduction === 'none') for (let c = 0; c < C; c++) dz[base + c] = gi * (dz[base + c] - eps / C);
      dz[base + t[i]] -= gi * (1 - eps);
    }
    return [new Tensor(dz, logits.shape)];
  });
}

/** Mean squared error: mean((a - b)²) ('sum' or 'none' via opts.reduction). a and b must have the same shape. */
export function mseLoss(a: Tensor, b: Tensor, opts?: { reduction?: Reduction }): Tensor {
  if (!shapesEqual(a.shape, b.shape)) throw new ShapeError('mseLoss.b.shape', b.shape, `must equal a's shape [${a.shape}]`);
  const reduction = checkReduction(opts?.reduction ?? 'mean', 'mseLoss.reduction');
  const sq = sub(a, b).square();
  return reduction === 'mean' ? mean(sq) : reduction === 'sum' ? sum(sq) : sq;
}
