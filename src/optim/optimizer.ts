/**
 * Optimizer base class, PyTorch-style: parameters live in groups that each carry their own
 * hyperparameters; per-parameter state (moments, step counts) is created lazily on the first
 * update and checkpoints as a plain object of Float32Arrays and numbers keyed by parameter index.
 */
import { DTypeError, ShapeError, ValueError } from '../errors.js';
import { noGrad, recycleGrad } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';

/** Hyperparameters every param group carries. */
export interface GroupHyperparams {
  lr: number;
  weightDecay: number;
  /** The lr a scheduler scales (set by LRScheduler on first use, like torch's `initial_lr`). */
  initialLr?: number;
}

/** A param group: its parameters plus its hyperparameters. */
export type ParamGroup<H extends GroupHyperparams> = H & { params: Tensor[] };

/** A group as passed to a constructor: parameters plus any hyperparameters that differ from the defaults. */
export type ParamGroupSpec<H extends GroupHyperparams> = Partial<H> & { params: Iterable<Tensor> };

/** What an optimizer accepts: parameters (one group) or a list of groups. */
export type OptimizerParams<H extends GroupHyperparams> = Iterable<Tensor> | ReadonlyArray<ParamGroupSpec<H>>;

/** A hyperparameter value as stored in a state dict. */
export type HyperValue = number | boolean | number[];

/** Per-parameter state: moment buffers and counters. */
export type ParamState = Record<string, Float32Array | number>;

/**
 * A checkpointable snapshot (torch.optim.Optimizer.state_dict layout): `state` keyed by the
 * parameter's index across all groups in order, `paramGroups` with hyperparameters and the
 * indices of their parameters. Only plain objects, arrays, numbers, booleans and Float32Arrays,
 * so it survives structuredClone and maps onto a safetensors file plus a JSON blob.
 */
export interface OptimizerStateDict {
  state: Record<number, ParamState>;
  paramGroups: Array<Record<string, HyperValue>>;
}

function isTensor(v: unknown): v is Tensor {
  return v instanceof Tensor;
}

function isHyperValue(v: unknown): v is HyperValue {
  return typeof v === 'number' || typeof v === 'boolean' || (Array.isArray(v) && v.every((x) => typeof x === 'number'));
}

/** Throw a ValueError unless v is a finite number ≥ min (strictly > when `open`). */
export function checkNumber(field: string, v: unknown, min = 0, open = false): void {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || (open && v === min)) {
    throw new ValueError(field, v, `must be a finite number ${open ? '>' : '>='} ${min}`);
  }
}

/** Throw a ValueError unless v is a boolean. */
export function checkBoolean(field: string, v: unknown): void {
  if (typeof v !== 'boolean') throw new ValueError(field, v, 'must be true or false');
}

/**
 * Base of every optimizer. Subclasses supply defaults, validate a group's hyperparameters,
 * create a parameter's state and apply one update to one parameter's buffer in place.
 */
export abstract class Optimizer<H extends GroupHyperparams, S extends ParamState = ParamState> {
  readonly paramGroups: ParamGroup<H>[] = [];
  /** Per-parameter state, created on a parameter's first update. */
  protected readonly state = new Map<Tensor, S>();
  protected readonly defaults: H;
  /** Name used in error fields (`AdamW.lr`). */
  protected readonly name: string;

  protected constructor(name: string, params: OptimizerParams<H>, defaults: H) {
    this.name = name;
    this.validateGroup(defaults, `${name}.`);
    this.defaults = defaults;
    const list = [...(params as Iterable<Tensor | ParamGroupSpec<H>>)];
    if (list.length === 0) throw new ValueError(`${name}.params`, [], 'optimizer got an empty parameter list');
    if (list.every(isTensor)) this.addParamGroup({ params: list } as unknown as ParamGroupSpec<H>);
    else if (list.some(isTensor)) throw new ValueError(`${name}.params`, list.length, 'pass either tensors or param groups ({ params, ...hyperparameters }), not a mix');
    else for (const spec of list as ParamGroupSpec<H>[]) this.addParamGroup(spec);
  }

  /** Check one group's hyperparameters; `prefix` starts every error field (`AdamW.paramGroups[1].`). */
  protected abstract validateGroup(group: H, prefix: string): void;

  /** Fresh state for a parameter of `size` elements (zeroed moments, step 0). */
  protected abstract initState(size: number, group: ParamGroup<H>): S;

  /** One update of `param` in place from `grad`, advancing `state`. */
  protected abstract update(param: Float32Array, grad: Float32Array, state: S, group: ParamGroup<H>): void;

  /** Check a loaded per-parameter state against a parameter of `size` elements and return it typed. */
  protected abstract checkState(state: ParamState, size: number, group: ParamGroup<H>, field: string): S;

  /** Add a group of parameters; hyperparameters it leaves out come from the optimizer's defaults. */
  addParamGroup(spec: ParamGroupSpec<H>): void {
    const index = this.paramGroups.length;
    const prefix = `${this.name}.paramGroups[${index}].`;
    if (spec === null || typeof spec !== 'object' || !('params' in spec)) {
      throw new ValueError(`${this.name}.paramGroups[${index}]`, spec, 'a param group needs a `params` field');
    }
    const params = [...spec.params];
    const seen = new Set<Tensor>(this.paramGroups.flatMap((g) => g.params));
    params.forEach((p, i) => {
      if (!isTensor(p)) throw new ValueError(`${prefix}params[${i}]`, brief(p), 'must be a Tensor');
      if (p.dtype !== 'float32') throw new DTypeError(`${prefix}params[${i}]`, p.dtype, 'parameters must be float32');
      if (seen.has(p)) throw new ValueError(`${prefix}params[${i}]`, p.shape, 'parameter appears in more than one place (each parameter may be optimised once)');
      seen.add(p);
    });
    const merged = shallowRecord(this.defaults);
    for (const [k, v] of Object.entries(spec)) {
      if (k !== 'params' && v !== undefined) merged[k] = Array.isArray(v) ? [...v] : v;
    }
    merged.params = params;
    const group = merged as unknown as ParamGroup<H>;
    this.validateGroup(group, prefix);
    this.paramGroups.push(group);
  }

  /**
   * One optimisation step over every parameter that has a gradient (parameters whose `.grad` is
   * null are skipped and keep their state untouched). Mutates parameter buffers in place.
   */
  step(): void {
    noGrad(() => {
      this.paramGroups.forEach((group, gi) => {
        group.params.forEach((p, pi) => {
          const g = p.grad;
          if (g === null) return;
          if (g.size !== p.size) {
            throw new ShapeError(`${this.name}.paramGroups[${gi}].params[${pi}].grad`, g.shape, `must match the parameter's shape [${p.shape}]`);
          }
          let s = this.state.get(p);
          if (!s) {
            s = this.initState(p.size, group);
            this.state.set(p, s);
          }
          this.update(p.f32, g.f32, s, group);
        });
      });
    });
  }

  /**
   * Reset gradients: set to null (default, as torch ≥ 2.0; the buffers are kept for the next
   * backward, see recycleGrad) or, with setToNone false, fill with zeros.
   */
  zeroGrad(setToNone = true): void {
    for (const group of this.paramGroups) {
      for (const p of group.params) {
        if (setToNone) recycleGrad(p);
        else if (p.grad) p.grad.f32.fill(0);
      }
    }
  }

  /** The state of one parameter (undefined before its first update). */
  getState(param: Tensor): Readonly<S> | undefined {
    return this.state.get(param);
  }

  /** A deep copy of hyperparameters and per-parameter state, for checkpoints. */
  stateDict(): OptimizerStateDict {
    const state: Record<number, ParamState> = {};
    const paramGroups: Array<Record<string, HyperValue>> = [];
    let index = 0;
    for (const group of this.paramGroups) {
      const saved: Record<string, HyperValue> = {};
      for (const [k, v] of Object.entries(group)) {
        if (k !== 'params' && isHyperValue(v)) saved[k] = Array.isArray(v) ? [...v] : v;
      }
      const ids: number[] = [];
      for (const p of group.params) {
        const s = this.state.get(p);
        if (s) state[index] = copyState(s);
        ids.push(index++);
      }
      saved.params = ids;
      paramGroups.push(saved);
    }
    return { state, paramGroups };
  }

  /**
   * Restore a snapshot from stateDict() of an optimizer over parameters of the same shapes in
   * the same group layout. Values are copied, so the snapshot can be reused.
   */
  loadStateDict(dict: OptimizerStateDict): void {
    const field = `${this.name}.loadStateDict`;
    if (dict === null || typeof dict !== 'object' || !Array.isArray(dict.paramGroups) || dict.state === null || typeof dict.state !== 'object') {
      throw new ValueError(field, brief(dict), 'expected { state, paramGroups } as produced by stateDict()');
    }
    if (dict.paramGroups.length !== this.paramGroups.length) {
      throw new ValueError(`${field}.paramGroups.length`, dict.paramGroups.length, `this optimizer has ${this.paramGroups.length} param groups`);
    }
    const total = this.paramGroups.reduce((n, g) => n + g.params.length, 0);
    const byIndex = new Map<number, { p: Tensor; group: ParamGroup<H> }>();
    const newGroups: ParamGroup<H>[] = [];
    dict.paramGroups.forEach((saved, gi) => {
      const group = this.paramGroups[gi];
      const ids = saved.params;
      if (!Array.isArray(ids) || ids.length !== group.params.length) {
        throw new ValueError(`${field}.paramGroups[${gi}].params`, ids, `group ${gi} has ${group.params.length} parameters`);
      }
      const merged = shallowRecord(group);
      for (const [k, v] of Object.entries(saved)) {
        // Hyperparameters this optimizer does not know are ignored (forward compatibility).
        if (k === 'params' || (!(k in group) && k !== 'initialLr')) continue;
        if (!isHyperValue(v)) throw new ValueError(`${field}.paramGroups[${gi}].${k}`, brief(v), 'must be a number, boolean or number[]');
        merged[k] = Array.isArray(v) ? [...v] : v;
      }
      const next = merged as unknown as ParamGroup<H>;
      this.validateGroup(next, `${field}.paramGroups[${gi}].`);
      newGroups.push(next);
      group.params.forEach((p, pi) => {
        const id = ids[pi];
        if (!Number.isInteger(id) || id < 0 || id >= total || byIndex.has(id)) {
          throw new ValueError(`${field}.paramGroups[${gi}].params[${pi}]`, id, `parameter indices must be 0..${total - 1}, each used once`);
        }
        byIndex.set(id, { p, group: next });
      });
    });
    const newState = new Map<Tensor, S>();
    for (const [key, s] of Object.entries(dict.state)) {
      const i = Number(key);
      const entry = byIndex.get(i);
      if (!Number.isInteger(i) || !entry) throw new ValueError(`${field}.state`, key, `no parameter with index ${key}`);
      if (s === null || typeof s !== 'object') throw new ValueError(`${field}.state[${key}]`, brief(s), 'must be an object');
      newState.set(entry.p, this.checkState(copyState(s), entry.p.size, entry.group, `${field}.state[${key}]`));
    }
    // Everything validated: commit.
    newGroups.forEach((g, gi) => Object.assign(this.paramGroups[gi], g));
    this.state.clear();
    for (const [p, s] of newState) this.state.set(p, s);
  }
}

function copyState(s: ParamState): ParamState {
  const out: ParamState = {};
  for (const [k, v] of Object.entries(s)) out[k] = v instanceof Float32Array ? v.slice() : v;
  return out;
}

/** Validate a Float32Array state entry of `size` elements. */
export function stateArray(s: ParamState, key: string, size: number, field: string): Float32Array {
  const v = s[key];
  if (!(v instanceof Float32Array)) throw new ValueError(`${field}.${key}`, brief(v), 'must be a Float32Array');
  if (v.length !== size) throw new ShapeError(`${field}.${key}`, v.length, `must have ${size} elements (the parameter's size)`);
  return v;
}

/** Validate a non-negative integer state entry (a step count). */
export function stateCount(s: ParamState, key: string, field: string): number {
  const v = s[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new ValueError(`${field}.${key}`, brief(v), 'must be a non-negative integer');
  return v;
}

/** Drop undefined entries so they do not override defaults. */
export function definedOnly<T extends object>(o: T | undefined): Partial<T> {
  const out: Partial<T> = {};
  if (!o) return out;
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

/** A copy of an object as a string-keyed record (to merge hyperparameters by name); arrays such as betas are copied too, so groups never share them. */
function shallowRecord(o: object): Record<string, unknown> {
  const out: Record<string, unknown> = { ...o };
  for (const [k, v] of Object.entries(out)) if (Array.isArray(v) && k !== 'params') out[k] = [...v];
  return out;
}

/** A value for an error message: primitives and short arrays as they are, larger values summarised. */
function brief(v: unknown): unknown {
  if (Array.isArray(v)) return v.length <= 8 ? v : `array of ${v.length}`;
  if (ArrayBuffer.isView(v)) return v;
  if (typeof v === 'object' && v !== null) return `object with keys ${JSON.stringify(Object.keys(v).slice(0, 8))}`;
  return v;
}
