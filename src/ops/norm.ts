/** Normalisation over the last axis (LayerNorm, RMSNorm) on the backend's fused kernels, with backward rules. */
import { RangeValueError, ShapeError } from '../errors.js';
import { acquireScratch } from '../backend/scratch.js';
import { record } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';
import { be, requireFloat } from './util.js';

/** Validate an optional per-feature parameter ([cols]) and return its buffer (null when absent). */
function featureParam(p: Tensor | null | undefined, cols: number, field: string): Float32Array | null {
  if (!p) return null;
  const d = requireFloat(p, field);
  if (p.rank !== 1 || p.shape[0] !== cols) throw new ShapeError(`${field}.shape`, p.shape, `must be [${cols}] (the size of x's last axis)`);
  return d;
}

function rowsCols(x: Tensor, op: string, eps: number): { rows: number; cols: number } {
  if (!(eps >= 0) || !Number.isFinite(eps)) throw new RangeValueError(`${op}.eps`, eps, 'must be a finite number >= 0');
  if (x.rank < 1) throw new ShapeError(`${op}.x`, x.shape, 'needs rank >= 1 (normalises over the last axis)');
  const cols = x.shape[x.rank - 1];
  return { rows: cols === 0 ? 0 : x.size / cols, cols };
}

/**
 * LayerNorm (Ba et al. 2016) over the last axis: y = (x - μ) / √(σ² + eps) ⊙ weight + bias, with
 * μ, σ² the mean and biased variance of each row. weight and bias ([C]) are optional.
 */
export function layerNorm(x: Tensor, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  const xd = requireFloat(x, 'layerNorm.x');
  const { rows, cols } = rowsCols(x, 'layerNorm', eps);
  const wd = featureParam(weight, cols, 'layerNorm.weight');
  const bd = featureParam(bias, cols, 'layerNorm.bias');
  const out = new Float32Array(x.size);
  // The kernel's per-row statistics are exactly what the backward needs; nothing else is saved.
  const mean = new Float32Array(rows), rstd = new Float32Array(rows);
  be().layerNorm(xd, wd, bd, rows, cols, eps, out, mean, rstd);
  const inputs = [x];
  if (weight) inputs.push(weight);
  if (bias) inputs.push(bias);
  return record('layerNorm', inputs, new Tensor(out, x.shape), (g) => {
    const dx = acquireScratch(x.size); // every element written by the kernel
    // Only allocate the parameter gradients that are wanted (the kernel skips null ones).
    const dw = weight?.requiresGrad ? new Float32Array(cols) : null;
    const db = bias?.requiresGrad ? new Float32Array(cols) : null;
    be().layerNormGrad(xd, wd, mean, rstd, g.f32, rows, cols, dx, dw, db);
    const grads: Array<Tensor | null> = [new Tensor(dx, x.shape)];
    if (weight) grads.push(dw && new Tensor(dw, weight.shape));
    if (bias) grads.push(db && new Tensor(db, bias.shape));
    return grads;
  });
}

/**
 * RMSNorm (Zhang & Sennrich 2019) over the last axis: y = x / √(mean(x²) + eps) ⊙ weight.
 * weight ([C]) is optional.
 */
export function rmsNorm(x: Tensor, weight?: Tensor | null, eps = 1e-6): Tensor {
  const xd = requireFloat(x, 'rmsNorm.x');
  const { rows, cols } = rowsCols(x, 'rmsNorm', eps);
  const wd = featureParam(weight, cols, 'rmsNorm.weight');
  const out = new Float32Array(x.size);
  const rstd = new Float32Array(rows);
  be().rmsNorm(xd, wd, rows, cols, eps, out, rstd);
  const inputs = weight ? [x, weight] : [x];
  return record('rmsNorm', inputs, new Tensor(out, x.shape), (g) => {
    const dx = acquireScratch(x.size); // every element written by the kernel
    const dw = weight?.requiresGrad ? new Float32Array(cols) : null;
    be().rmsNormGrad(xd, wd, rstd, g.f32, rows, cols, dx, dw);
    return [new Tensor(dx, x.shape), dw && weight ? new Tensor(dw, weight.shape) : null];
  });
}
