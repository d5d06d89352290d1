/**
 * Stochastic gradient descent with momentum, exactly torch.optim.SGD: heavy-ball momentum
 * (Polyak 1964) in PyTorch's formulation, and Nesterov momentum as in Sutskever et al. 2013.
 */
import { ValueError } from '../errors.js';
import { Optimizer, checkBoolean, checkNumber, definedOnly, stateArray, type GroupHyperparams, type OptimizerParams, type ParamGroup, type ParamState } from './optimizer.js';

/** SGD hyperparameters (torch names in camelCase). */
export interface SGDHyperparams extends GroupHyperparams {
  /** Learning rate (default 1e-3, as torch ≥ 2.0). */
  lr: number;
  /** Momentum factor μ (default 0: plain SGD, no state). */
  momentum: number;
  /** Dampening τ of the gradient added to the momentum buffer (default 0). */
  dampening: number;
  /** L2 penalty λ added to the gradient (coupled weight decay; default 0). */
  weightDecay: number;
  /** Nesterov momentum (needs momentum > 0 and dampening 0). */
  nesterov: boolean;
  /** Ascend instead of descend. */
  maximize: boolean;
}

/** Per-parameter SGD state: the momentum buffer (present only when momentum ≠ 0 and after the first step). */
export interface SGDState extends ParamState {
  momentumBuffer: Float32Array;
  /** 1 once the buffer has been seeded with the first gradient. */
  initialised: number;
}

const SGD_DEFAULTS: SGDHyperparams = { lr: 1e-3, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, maximize: false };

/**
 * torch.optim.SGD. Per step, with g = ±∇ (sign by `maximize`):
 *   g ← g + λ·p;  b ← g on the first step, else μ·b + (1-τ)·g;
 *   g ← g + μ·b (Nesterov) or g ← b;  p ← p - lr·g.
 */
export class SGD extends Optimizer<SGDHyperparams, SGDState> {
  constructor(params: OptimizerParams<SGDHyperparams>, opts?: Partial<SGDHyperparams>) {
    super('SGD', params, { ...SGD_DEFAULTS, ...definedOnly(opts) });
  }

  protected validateGroup(g: SGDHyperparams, prefix: string): void {
    checkNumber(`${prefix}lr`, g.lr);
    checkNumber(`${prefix}momentum`, g.momentum);
    if (typeof g.dampening !== 'number' || !Number.isFinite(g.dampening)) throw new ValueError(`${prefix}dampening`, g.dampening, 'must be a finite number');
    checkNumber(`${prefix}weightDecay`, g.weightDecay);
    checkBoolean(`${prefix}nesterov`, g.nesterov);
    checkBoolean(`${prefix}maximize`, g.maximize);
    if (g.nesterov && (g.momentum <= 0 || g.dampening !== 0)) {
      throw new ValueError(`${prefix}nesterov`, true, `Nesterov momentum requires momentum > 0 and dampening = 0 (got momentum ${g.momentum}, dampening ${g.dampening})`);
    }
  }

  protected initState(size: number, group: ParamGroup<SGDHyperparams>): SGDState {
    // Without momentum SGD is stateless; an empty buffer keeps the state type uniform.
    return { momentumBuffer: new Float32Array(group.momentum !== 0 ? size : 0), initialised: 0 };
  }

  protected checkState(s: ParamState, size: number, _group: ParamGroup<SGDHyperparams>, field: string): SGDState {
    const initialised = s.initialised;
    if (initialised !== 0 && initialised !== 1) throw new ValueError(`${field}.initialised`, initialised, 'must be 0 or 1');
    const buf = s.momentumBuffer instanceof Float32Array && s.momentumBuffer.length === 0 ? s.momentumBuffer : stateArray(s, 'momentumBuffer', size, field);
    return { momentumBuffer: buf, initialised };
  }

  protected update(p: Float32Array, grad: Float32Array, s: SGDState, group: ParamGroup<SGDHyperparams>): void {
    const { lr, momentum: mu, dampening, weightDecay: wd, nesterov, maximize } = group;
    const sign = maximize ? -1 : 1;
    if (mu !== 0 && s.momentumBuffer.length !== p.length) {
      // Momentum switched on after the parameter's first (stateless) step: start a buffer now.
      s.momentumBuffer = new Float32Array(p.length);
      s.initialised = 0;
    }
    const buf = s.momentumBuffer;
    const first = s.initialised === 0;
    for (let i = 0; i < p.length; i++) {
      let d = sign * grad[i];
      if (wd !== 0) d += wd * p[i];
      if (mu !== 0) {
        // torch seeds the buffer with the raw first gradient (no dampening on step one).
        buf[i] = first ? d : mu * buf[i] + (1 - dampening) * d;
        d = nesterov ? d + mu * buf[i] : buf[i];
      }
      p[i] -= lr * d;
    }
    if (mu !== 0) s.initialised = 1;
  }
}
