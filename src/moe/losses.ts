/**
 * Router balancing losses. Each returns an unweighted scalar tensor; the layer multiplies by the
 * configured coefficient and sums into auxLoss.
 */
import { erf } from '../backend/reference.js';
import { mul, sub, div, add } from '../ops/elementwise.js';
import { topK, scatterAddRows } from '../ops/gather.js';
import { mean, sum } from '../ops/reduce.js';
import { logsumexp, softmax } from '../ops/softmax.js';
import { slice } from '../ops/shape.js';
import { record, noGrad } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';

/**
 * What a top-k router already computed from the same logits: probs = softmax(logits) [T, E] (in
 * the graph) and topK = the indices of each row's k largest probs [T·k], as topK returns them.
 */
export interface RouterChoice {
  probs: Tensor;
  topK: Int32Array;
}

/**
 * Hugging Face `load_balancing_loss_func` (Switch Transformers eq. 4, Mixtral): with
 * p = softmax(logits) [T, E], f_e = (1/T)·#{(t, j): e is token t's j-th top-k choice of p},
 * P_e = mean_t p[t, e]:  loss = E · Σ_e f_e · P_e. Gradient flows through P only. `given` skips
 * recomputing the softmax and top-k when the router has them.
 */
export function balanceLoss(logits: Tensor, k: number, given?: RouterChoice): Tensor {
  const [T, E] = logits.shape;
  const probs = given?.probs ?? softmax(logits, -1);
  const f = new Float32Array(E);
  noGrad(() => {
    const idx = given?.topK ?? topK(probs, k).indices.i32;
    for (let i = 0; i < idx.length; i++) f[idx[i]] += 1 / T;
  });
  const P = mean(probs, 0);
  return mul(sum(mul(P, new Tensor(f, [E]))), E);
}

/** ST-MoE router z-loss (Zoph et al. 2022): mean_t (log Σ_e exp(logits[t, e]))². */
export function routerZLoss(logits: Tensor): Tensor {
  const lse = logsumexp(logits, -1);
  return mean(mul(lse, lse));
}

/**
 * Squared coefficient of variation, as in Shazeer et al.'s reference code: var(x)/(mean(x)² + 1e-10)
 * with the unbiased variance; 0 for a single expert.
 */
export function cvSquared(x: Tensor): Tensor {
  const n = x.size;
  if (n <= 1) return Tensor.scalar(0);
  const m = mean(x);
  const centered = sub(x, m);
  const variance = div(sum(mul(centered, centered)), n - 1);
  return div(variance, add(mul(m, m), 1e-10));
}

/**
 * Importance loss (Shazeer et al. 2017, eq. 6-7): CV²(Σ_t gates[t, :]) over the sparse gate
 * values that the router actually uses. gates [T, k], experts (int32) [T, k].
 */
export function importanceLoss(gates: Tensor, experts: Int32Array, numExperts: number): Tensor {
  const T = gates.shape[0], k = gates.shape[1];
  const importance = scatterAddRows(gates.reshape([T * k, 1]), experts, numExperts).reshape([numExperts]);
  return cvSquared(importance);
}

const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** Standard normal CDF Φ(z) = ½(1 + erf(z/√2)), differentiable (dΦ/dz = φ(z)). */
export function normalCdf(z: Tensor): Tensor {
  const zd = z.f32;
  const out = new Float32Array(zd.length);
  for (let i = 0; i < zd.length; i++) out[i] = 0.5 * (1 + erf(zd[i] * SQRT1_2));
  return record('normalCdf', [z], new Tensor(out, z.shape), (g) => {
    const gd = g.f32;
    const dz = new Float32Array(zd.length);
    for (let i = 0; i < zd.length; i++) dz[i] = gd[i] * INV_SQRT_2PI * Math.exp(-0.5 * zd[i] * zd[i]);
    return [new Tensor(dz, z.shape)];
  });
}

/**
 * Load loss (Shazeer et al. 2017, Appendix A): the smooth estimator of how many tokens each
 * expert receives under noisy top-k, P(t, e) = Φ((clean[t,e] − threshold) / noiseStd[t,e]),
 * where threshold is the k-th largest noisy logit of the other experts (the (k+1)-th if e is
 * in the top k, else the k-th); loss = CV²(Σ_t P(t, :)). Requires k < numExperts.
 */
export function loadLoss(clean: Tensor, noisy: Tensor, noiseStd: Tensor, k: number): Tensor {
  const [T, E] = clean.shape;
  if (k >= E) return Tensor.scalar(0);
  const top = topK(noisy, k + 1).values; // [T, k+1], differentiable in noisy
  const thresholdIfIn = slice(top, 1, k, k + 1); // (k+1)-th largest
  const thresholdIfOut = slice(top, 1, k - 1, k); // k-th largest
  const isIn = new Float32Array(T * E);
  const nd = noisy.f32, tin = thresholdIfIn.f32;
  for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) isIn[t * E + e] = nd[t * E + e] > tin[t] ? 1 : 0;
  const maskIn = new Tensor(isIn, [T, E]);
  const maskOut = new Tensor(isIn.map((v) => 1 - v), [T, E]);
  const probIfIn = normalCdf(div(sub(clean, thresholdIfIn), noiseStd));
  const probIfOut = normalCdf(div(sub(clean, thresholdIfOut), noiseStd));
  const prob = add(mul(probIfIn, maskIn), mul(probIfOut, maskOut));
  return cvSquared(sum(prob, 0));
}
