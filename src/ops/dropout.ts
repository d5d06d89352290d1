/** Dropout (Srivastava et al. 2014), inverted form, with a mask drawn from the seeded Generator. */
import { RangeValueError } from '../errors.js';
import { Generator, defaultGenerator } from '../random.js';
import { record } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';
import { requireFloat } from './util.js';

export interface DropoutOptions {
  /** Apply dropout (true, the default) or return x unchanged (evaluation). */
  training?: boolean;
  /** Draw the mask from this generator (advancing it). Takes precedence over seed. */
  generator?: Generator;
  /** Seed a fresh generator for this call: the same seed gives the same mask. */
  seed?: number;
}

/**
 * Inverted dropout: y = x ⊙ m / (1 - p) with mᵢ ~ Bernoulli(1 - p), so E[y] = x and evaluation
 * needs no rescaling. p in [0, 1); p = 0 or training = false returns x itself.
 * Mask source: opts.generator, else a Generator(opts.seed), else defaultGenerator().
 */
export function dropout(x: Tensor, p: number, opts?: DropoutOptions): Tensor {
  const xd = requireFloat(x, 'dropout.x');
  if (typeof p !== 'number' || !(p >= 0 && p < 1)) throw new RangeValueError('dropout.p', p, 'must be a number in [0, 1)');
  if (p === 0 || opts?.training === false) return x;
  const gen = opts?.generator ?? (opts?.seed !== undefined ? new Generator(opts.seed) : defaultGenerator());
  const keep = 1 / (1 - p);
  // The mask holds 0 or 1/(1-p): forward and backward are then the same single multiply.
  const mask = new Float32Array(xd.length);
  for (let i = 0; i < mask.length; i++) mask[i] = gen.uniform() >= p ? keep : 0;
  const out = new Float32Array(xd.length);
  for (let i = 0; i < out.length; i++) out[i] = xd[i] * mask[i];
  return record('dropout', [x], new Tensor(out, x.shape), (g) => {
    const gd = g.f32;
    const dx = new Float32Array(gd.length);
    for (let i = 0; i < dx.length; i++) dx[i] = gd[i] * mask[i];
    return [new Tensor(dx, x.shape)];
  });
}
