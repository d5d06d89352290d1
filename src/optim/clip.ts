/** Gradient clipping by global norm (Pascanu et al. 2013), exactly torch.nn.utils.clip_grad_norm_. */
import { getBackend } from '../backend/index.js';
import { ValueError } from '../errors.js';
import { noGrad } from '../tensor/autodiff.js';
import type { Tensor } from '../tensor/tensor.js';

export interface ClipGradNormOptions {
  /** Throw a ValueError when the total norm is NaN or ±Inf instead of scaling by it (torch's error_if_nonfinite). */
  errorIfNonfinite?: boolean;
}

/**
 * Scale every gradient by min(1, maxNorm / (‖g‖ + 1e-6)), where ‖g‖ is the `normType`-norm of
 * all gradients concatenated (Infinity: max |gᵢ|). Parameters without a gradient are ignored.
 * Returns the total norm before clipping. As in torch the scale is applied even when it is 1,
 * and the 1e-6 keeps the result just under maxNorm and avoids dividing by zero.
 */
export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number, normType = 2, opts?: ClipGradNormOptions): number {
  if (typeof maxNorm !== 'number' || Number.isNaN(maxNorm)) throw new ValueError('clipGradNorm.maxNorm', maxNorm, 'must be a number');
  if (typeof normType !== 'number' || !(normType > 0)) throw new ValueError('clipGradNorm.normType', normType, 'must be a positive number or Infinity');
  const grads: Float32Array[] = [];
  for (const p of params) if (p.grad) grads.push(p.grad.f32);
  if (grads.length === 0) return 0;
  // Accumulate in float64: fp32 squares of large gradients would overflow or lose precision.
  let total: number;
  if (normType === Infinity) {
    total = 0;
    for (const g of grads) {
      for (let i = 0; i < g.length; i++) {
        const a = Math.abs(g[i]);
        if (!(a <= total)) total = a; // NaN wins, as torch's max
      }
    }
  } else {
    let acc = 0;
    for (const g of grads) {
      if (normType === 2) acc += getBackend().sumSquares(g);
      else if (normType === 1) for (let i = 0; i < g.length; i++) acc += Math.abs(g[i]);
      else for (let i = 0; i < g.length; i++) acc += Math.abs(g[i]) ** normType;
    }
    total = normType === 2 ? Math.sqrt(acc) : normType === 1 ? acc : acc ** (1 / normType);
  }
  if (opts?.errorIfNonfinite && !Number.isFinite(total)) {
    throw new ValueError('clipGradNorm.totalNorm', total, `the total ${normType}-norm of the gradients is non-finite, so they cannot be clipped (pass errorIfNonfinite: false to scale anyway)`);
  }
  // Math.min propagates NaN like torch.clamp, so a NaN norm poisons the gradients visibly.
  const scale = Math.min(maxNorm / (total + 1e-6), 1);
  noGrad(() => {
    for (const g of grads) getBackend().affine(g, scale, 0, g);
  });
  return total;
}
