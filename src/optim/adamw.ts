/**
 * AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"): Adam (Kingma & Ba
 * 2015) with weight decay applied to the parameters directly instead of through the gradient.
 * Matches torch.optim.AdamW, including its defaults and the AMSGrad variant (Reddi et al. 2018).
 */
import { getBackend } from '../backend/index.js';
import { ValueError } from '../errors.js';
import { Optimizer, checkBoolean, checkNumber, definedOnly, stateArray, stateCount, type GroupHyperparams, type OptimizerParams, type ParamGroup, type ParamState } from './optimizer.js';

/** AdamW hyperparameters (torch names in camelCase). */
export interface AdamWHyperparams extends GroupHyperparams {
  /** Learning rate (default 1e-3). */
  lr: number;
  /** Decay rates (β₁, β₂) of the first and second moment averages (default [0.9, 0.999]). */
  betas: [number, number];
  /** Added to the bias-corrected √v̂ for stability (default 1e-8; outside the square root). */
  eps: number;
  /** Decoupled weight decay λ: p ← p·(1 - lr·λ) each step (default 1e-2). */
  weightDecay: number;
  /** AMSGrad: divide by the running maximum of v (default false). */
  amsgrad: boolean;
  /** Ascend instead of descend. */
  maximize: boolean;
}

/** Per-parameter AdamW state (torch's exp_avg, exp_avg_sq, max_exp_avg_sq, step). */
export interface AdamWState extends ParamState {
  step: number;
  expAvg: Float32Array;
  expAvgSq: Float32Array;
  /** Running maximum of expAvgSq (AMSGrad only; empty otherwise). */
  maxExpAvgSq: Float32Array;
}

const ADAMW_DEFAULTS: AdamWHyperparams = { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2, amsgrad: false, maximize: false };

/**
 * torch.optim.AdamW. Per step t, with g = ±∇:
 *   p ← p·(1 - lr·λ);  m ← β₁m + (1-β₁)g;  v ← β₂v + (1-β₂)g²;
 *   p ← p - (lr / (1-β₁ᵗ)) · m / (√v / √(1-β₂ᵗ) + eps)   (v → max(v) with AMSGrad).
 */
export class AdamW extends Optimizer<AdamWHyperparams, AdamWState> {
  constructor(params: OptimizerParams<AdamWHyperparams>, opts?: Partial<AdamWHyperparams>) {
    super('AdamW', params, { ...ADAMW_DEFAULTS, ...definedOnly(opts) });
  }

  protected validateGroup(g: AdamWHyperparams, prefix: string): void {
    checkNumber(`${prefix}lr`, g.lr);
    checkNumber(`${prefix}eps`, g.eps);
    checkNumber(`${prefix}weightDecay`, g.weightDecay);
    checkBoolean(`${prefix}amsgrad`, g.amsgrad);
    checkBoolean(`${prefix}maximize`, g.maximize);
    if (!Array.isArray(g.betas) || g.betas.length !== 2) throw new ValueError(`${prefix}betas`, g.betas, 'must be a pair [beta1, beta2]');
    g.betas.forEach((b, i) => {
      if (typeof b !== 'number' || !(b >= 0 && b < 1)) throw new ValueError(`${prefix}betas[${i}]`, b, 'must be in [0, 1)');
    });
  }

  protected initState(size: number, group: ParamGroup<AdamWHyperparams>): AdamWState {
    return {
      step: 0,
      expAvg: new Float32Array(size),
      expAvgSq: new Float32Array(size),
      maxExpAvgSq: new Float32Array(group.amsgrad ? size : 0),
    };
  }

  protected checkState(s: ParamState, size: number, group: ParamGroup<AdamWHyperparams>, field: string): AdamWState {
    const m = s.maxExpAvgSq;
    return {
      step: stateCount(s, 'step', field),
      expAvg: stateArray(s, 'expAvg', size, field),
      expAvgSq: stateArray(s, 'expAvgSq', size, field),
      maxExpAvgSq: group.amsgrad || (m instanceof Float32Array && m.length > 0) ? stateArray(s, 'maxExpAvgSq', size, field) : new Float32Array(0),
    };
  }

  protected update(p: Float32Array, grad: Float32Array, s: AdamWState, group: ParamGroup<AdamWHyperparams>): void {
    const { lr, eps, weightDecay: wd, amsgrad, maximize } = group;
    const [beta1, beta2] = group.betas;
    const sign = maximize ? -1 : 1;
    const t = ++s.step;
    // Scalars in float64 like torch's Python-side math; the buffers round to fp32 on store.
    const stepSize = lr / (1 - beta1 ** t);
    const bc2Sqrt = Math.sqrt(1 - beta2 ** t);
    const decay = 1 - lr * wd;
    if (amsgrad && s.maxExpAvgSq.length !== p.length) s.maxExpAvgSq = new Float32Array(p.length);
    getBackend().adamw(p, grad, s.expAvg, s.expAvgSq, amsgrad ? s.maxExpAvgSq : null, { beta1, beta2, stepSize, bc2Sqrt, eps, decay: wd !== 0 ? decay : 1, sign });
  }
}
