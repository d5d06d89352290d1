/**
 * Module: the base class of layers and models, PyTorch-style. Parameters and submodules are
 * registered by name, giving dotted state-dict names (`experts.3.w1.weight`).
 */
import { ShapeError, StateDictError } from '../errors.js';
import { recycleGrad } from '../tensor/autodiff.js';
import { shapesEqual } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';

export interface LoadStateDictOptions {
  /** Throw on missing or unexpected keys (default true). Shape mismatches always throw. */
  strict?: boolean;
}

/** Result of a non-strict loadStateDict. */
export interface LoadStateDictResult {
  missingKeys: string[];
  unexpectedKeys: string[];
}

export class Module {
  /** Training mode (dropout, router noise and jitter on). */
  training = true;
  private readonly paramRegistry = new Map<string, Tensor>();
  private readonly bufferRegistry = new Map<string, Tensor>();
  private readonly moduleRegistry = new Map<string, Module>();

  /** Register (or replace) a trainable parameter; it gets requiresGrad = true. */
  protected registerParameter(name: string, t: Tensor): Tensor {
    t.requiresGrad = true;
    this.paramRegistry.set(name, t);
    return t;
  }

  /** Register a non-trainable tensor saved in the state dict (e.g. a router bias for DeepSeek balancing). */
  protected registerBuffer(name: string, t: Tensor): Tensor {
    this.bufferRegistry.set(name, t);
    return t;
  }

  /** Register a child module under `name` (use numeric names for lists: `experts.0`). */
  protected registerModule<M extends Module>(name: string, m: M): M {
    this.moduleRegistry.set(name, m);
    return m;
  }

  /** The direct parameter registered under name. */
  protected param(name: string): Tensor {
    const t = this.paramRegistry.get(name);
    if (!t) throw new StateDictError('parameter', name, 'no such parameter');
    return t;
  }

  /** Child modules with their names. */
  namedChildren(): [string, Module][] {
    return [...this.moduleRegistry.entries()];
  }

  /** Every trainable parameter with its dotted name, in registration order (depth first). */
  namedParameters(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [n, t] of this.paramRegistry) out.push([prefix + n, t]);
    for (const [n, m] of this.moduleRegistry) out.push(...m.namedParameters(`${prefix}${n}.`));
    return out;
  }

  /** Every buffer with its dotted name. */
  namedBuffers(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [n, t] of this.bufferRegistry) out.push([prefix + n, t]);
    for (const [n, m] of this.moduleRegistry) out.push(...m.namedBuffers(`${prefix}${n}.`));
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  /** Number of scalar parameters. */
  numParameters(): number {
    return this.parameters().reduce((s, t) => s + t.size, 0);
  }

  /** Set training mode on this module and every descendant. */
  train(on = true): this {
    this.training = on;
    for (const m of this.moduleRegistry.values()) m.train(on);
    return this;
  }

  /** Evaluation mode: train(false). */
  eval(): this {
    return this.train(false);
  }

  /** Reset every parameter's .grad to null, keeping the buffers for the next backward (recycleGrad). */
  zeroGrad(): void {
    for (const p of this.parameters()) recycleGrad(p);
  }

  /** Parameters and buffers by dotted name (tensors are shared, not copied). */
  stateDict(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const [n, t] of this.namedParameters()) out[n] = t;
    for (const [n, t] of this.namedBuffers()) out[n] = t;
    return out;
  }

  /**
   * Copy values from a state dict into this module's parameters and buffers. Every missing and
   * unexpected key is listed in one StateDictError (strict, the default); a shape mismatch
   * always throws, naming the key and both shapes.
   */
  loadStateDict(dict: Record<string, Tensor>, opts?: LoadStateDictOptions): LoadStateDictResult {
    const strict = opts?.strict ?? true;
    const own = new Map<string, Tensor>([...this.namedParameters(), ...this.namedBuffers()]);
    const missingKeys = [...own.keys()].filter((k) => !(k in dict));
    const unexpectedKeys = Object.keys(dict).filter((k) => !own.has(k));
    if (strict && (missingKeys.length > 0 || unexpectedKeys.length > 0)) {
      const parts: string[] = [];
      if (missingKeys.length) parts.push(`missing keys: ${missingKeys.join(', ')}`);
      if (unexpectedKeys.length) parts.push(`unexpected keys: ${unexpectedKeys.join(', ')}`);
      throw new StateDictError('stateDict', [...missingKeys, ...unexpectedKeys], parts.join('; '));
    }
    const mismatched: string[] = [];
    for (const [k, t] of own) {
      const src = dict[k];
      if (src && !shapesEqual(src.shape, t.shape)) mismatched.push(`${k}: expected [${t.shape}], got [${src.shape}]`);
    }
    if (mismatched.length) throw new ShapeError('stateDict', mismatched, `shape mismatch: ${mismatched.join('; ')}`);
    for (const [k, t] of own) {
      const src = dict[k];
      if (src) (t.data as Float32Array).set(src.data);
    }
    return { missingKeys, unexpectedKeys };
  }
}
