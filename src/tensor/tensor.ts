import { DTypeError, GradError, ShapeError, ValueError } from '../errors.js';
import { Generator, defaultGenerator } from '../random.js';
import { checkShape, shapesEqual, sizeOf } from './shape.js';
import { runBackward, type GradNode } from './autodiff.js';
import * as ew from '../ops/elementwise.js';
import * as mm from '../ops/matmul.js';
import * as red from '../ops/reduce.js';
import * as sm from '../ops/softmax.js';
import * as sh from '../ops/shape.js';
import * as ix from '../ops/gather.js';
import type { Activation } from '../backend/interface.js';
import { getBackend } from '../backend/index.js';
import { allocFloat32 } from '../backend/alloc.js';

/** Element types: fp32 for values, int32 for indices. */

/**
 * A zeroed buffer for a new tensor. The backend is chosen first, so that once the native one has
 * loaded, large tensors (weights, inputs) start on page boundaries (backend/alloc.ts).
 */
function freshData(n: number): Float32Array {
  getBackend();
  return allocFloat32(n);
}

export type DType = 'float32' | 'int32';
/** The buffer behind a tensor. */
export type TensorData = Float32Array | Int32Array;

export interface TensorOptions {
  requiresGrad?: boolean;
}

export interface RandomOptions {
  /** Seed a fresh generator for this call (same seed ⇒ same values). */
  seed?: number;
  /** Or draw from this generator (advancing it). Default: the process-wide generator. */
  generator?: Generator;
  requiresGrad?: boolean;
}

/** Anything that ops accept where an index tensor is needed. */
export type IndexLike = Tensor | Int32Array | readonly number[];

function pickGenerator(opts: RandomOptions | undefined): Generator {
  if (opts?.generator) return opts.generator;
  if (opts?.seed !== undefined) return new Generator(opts.seed);
  return defaultGenerator();
}

/**
 * An n-dimensional fp32 (or int32 index) array, contiguous row-major, with PyTorch-style
 * reverse-mode autodiff: ops on tensors with `requiresGrad` record onto a tape and
 * `loss.backward()` fills `.grad` of the leaves.
 */
export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** The backing buffer (contiguous row-major). Ops and optimizers read it directly; treat it as read-only elsewhere. */
  readonly data: TensorData;
  /** Whether gradients flow to this tensor. Set on leaves (parameters, inputs); ops propagate it. */
  requiresGrad: boolean;
  /** Accumulated gradient of a leaf after backward(); set to null to reset. */
  grad: Tensor | null = null;
  /** The tape entry that produced this tensor (null for leaves and under noGrad). */
  gradNode: GradNode | null = null;

  /** Low-level constructor: takes ownership of `data` (no copy). Prefer Tensor.from. */
  constructor(data: TensorData, shape: readonly number[], requiresGrad = false) {
    checkShape(shape);
    const n = sizeOf(shape);
    if (data.length !== n) {
      throw new ShapeError('shape', shape, `data has ${data.length} elements but shape [${shape}] needs ${n}`);
    }
    this.data = data;
    this.shape = Object.freeze([...shape]);
    this.dtype = data instanceof Int32Array ? 'int32' : 'float32';
    if (requiresGrad && this.dtype !== 'float32') throw new DTypeError('requiresGrad', true, 'only float32 tensors can require grad');
    this.requiresGrad = requiresGrad;
  }

  /** A float32 tensor from values (copied) and a shape. Int32Array data makes an int32 index tensor. */
  static from(data: Float32Array | Int32Array | readonly number[], shape: readonly number[], opts?: TensorOptions): Tensor {
    checkShape(shape);
    let buf: TensorData;
    if (data instanceof Int32Array) buf = data.slice();
    else if (data instanceof Float32Array) buf = data.slice();
    else if (Array.isArray(data)) buf = Float32Array.from(data as number[]);
    else throw new ValueError('data', data, 'Tensor.from expects a Float32Array, an Int32Array or a number[]');
    return new Tensor(buf, shape, opts?.requiresGrad ?? false);
  }

  /** A scalar (shape []) tensor. */
  static scalar(value: number, opts?: TensorOptions): Tensor {
    return new Tensor(Float32Array.of(value), [], opts?.requiresGrad ?? false);
  }

  /** An int32 index tensor (default shape: 1-d). */
  static indices(data: Int32Array | readonly number[], shape?: readonly number[]): Tensor {
    const buf = data instanceof Int32Array ? data.slice() : Int32Array.from(data as number[]);
    for (let i = 0; i < buf.length; i++) {
      if (!Array.isArray(data)) break;
      if (!Number.isInteger((data as readonly number[])[i])) throw new DTypeError('indices', (data as readonly number[])[i], 'index values must be integers');
    }
    return new Tensor(buf, shape ?? [buf.length]);
  }

  static zeros(shape: readonly number[], opts?: TensorOptions): Tensor {
    checkShape(shape);
    return new Tensor(freshData(sizeOf(shape)), shape, opts?.requiresGrad ?? false);
  }

  static ones(shape: readonly number[], opts?: TensorOptions): Tensor {
    return Tensor.full(shape, 1, opts);
  }

  static full(shape: readonly number[], value: number, opts?: TensorOptions): Tensor {
    checkShape(shape);
    return new Tensor(freshData(sizeOf(shape)).fill(value), shape, opts?.requiresGrad ?? false);
  }

  /** Standard normal samples (Box–Muller on the seeded xoshiro128** stream). */
  static randn(shape: readonly number[], opts?: RandomOptions): Tensor {
    checkShape(shape);
    const g = pickGenerator(opts);
    const d = freshData(sizeOf(shape));
    for (let i = 0; i < d.length; i++) d[i] = g.normal();
    return new Tensor(d, shape, opts?.requiresGrad ?? false);
  }

  /** Uniform samples in [low, high). */
  static rand(shape: readonly number[], opts?: RandomOptions & { low?: number; high?: number }): Tensor {
    checkShape(shape);
    const g = pickGenerator(opts);
    const lo = opts?.low ?? 0, hi = opts?.high ?? 1;
    const d = freshData(sizeOf(shape));
    for (let i = 0; i < d.length; i++) d[i] = lo + (hi - lo) * g.uniform();
    return new Tensor(d, shape, opts?.requiresGrad ?? false);
  }

  /** [0, 1, ..., n-1] as float32. */
  static arange(n: number): Tensor {
    const d = new Float32Array(n);
    for (let i = 0; i < n; i++) d[i] = i;
    return new Tensor(d, [n]);
  }

  get size(): number {
    return this.data.length;
  }

  get rank(): number {
    return this.shape.length;
  }

  /** The fp32 buffer; throws a DTypeError on an index tensor. */
  get f32(): Float32Array {
    if (!(this.data instanceof Float32Array)) throw new DTypeError('dtype', this.dtype, 'expected a float32 tensor');
    return this.data;
  }

  /** The int32 buffer; throws a DTypeError on a float tensor. */
  get i32(): Int32Array {
    if (!(this.data instanceof Int32Array)) throw new DTypeError('dtype', this.dtype, 'expected an int32 index tensor');
    return this.data;
  }

  /** A copy of the values as Float32Array. */
  toFloat32Array(): Float32Array {
    return Float32Array.from(this.data);
  }

  /** The values as a flat number[]. */
  toArray(): number[] {
    return Array.from(this.data);
  }

  /** The value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) throw new ShapeError('shape', this.shape, 'item() needs a tensor with exactly one element');
    return this.data[0];
  }

  /** A new leaf with the same values, cut from the graph. */
  detach(): Tensor {
    return new Tensor(this.data, this.shape);
  }

  /** A deep copy (not recorded on the tape). */
  clone(): Tensor {
    return new Tensor(this.data.slice(), this.shape);
  }

  /** this += other, in place, not recorded (gradient accumulation, optimizer updates). */
  addInPlace(other: Tensor): this {
    if (other.size !== this.size) throw new ShapeError('other.shape', other.shape, `addInPlace needs ${this.size} elements ([${this.shape}])`);
    const a = this.data, b = other.data;
    if (a.length >= 4096 && a instanceof Float32Array && b instanceof Float32Array) {
      // Large gradient sums (the residual stream) run on the backend's vectorised kernel.
      const shape = Int32Array.of(a.length), unit = Int32Array.of(1);
      getBackend().binary('add', a, unit, b, unit, a, shape);
      return this;
    }
    for (let i = 0; i < a.length; i++) a[i] += b[i];
    return this;
  }

  /**
   * Backpropagate from this tensor: fills `.grad` of every leaf that requires grad. Without an
   * argument the tensor must be a scalar (one element), as in PyTorch.
   */
  backward(gradOutput?: Tensor): void {
    if (gradOutput === undefined) {
      if (this.size !== 1) {
        throw new GradError('backward', this.shape, 'backward() without a gradient needs a scalar (one-element) tensor; reduce it first (e.g. .sum()) or pass gradOutput');
      }
      gradOutput = Tensor.ones(this.shape);
    } else if (!shapesEqual(gradOutput.shape, this.shape)) {
      throw new ShapeError('gradOutput.shape', gradOutput.shape, `must equal the tensor's shape [${this.shape}]`);
    }
    runBackward(this, gradOutput);
  }

  toString(): string {
    const head = Array.from(this.data.slice(0, 8)).map((v) => +v.toPrecision(5));
    return `Tensor(shape=[${this.shape}], dtype=${this.dtype}${this.requiresGrad ? ', requiresGrad' : ''}, [${head.join(', ')}${this.size > 8 ? ', ...' : ''}])`;
  }

  // ---- method-style ops (each delegates to the functional op of the same name) ----
  add(other: Tensor | number): Tensor { return ew.add(this, other); }
  sub(other: Tensor | number): Tensor { return ew.sub(this, other); }
  mul(other: Tensor | number): Tensor { return ew.mul(this, other); }
  div(other: Tensor | number): Tensor { return ew.div(this, other); }
  pow(exponent: number): Tensor { return ew.pow(this, exponent); }
  maximum(other: Tensor): Tensor { return ew.maximum(this, other); }
  minimum(other: Tensor): Tensor { return ew.minimum(this, other); }
  neg(): Tensor { return ew.neg(this); }
  abs(): Tensor { return ew.abs(this); }
  exp(): Tensor { return ew.exp(this); }
  log(): Tensor { return ew.log(this); }
  sqrt(): Tensor { return ew.sqrt(this); }
  rsqrt(): Tensor { return ew.rsqrt(this); }
  square(): Tensor { return ew.square(this); }
  tanh(): Tensor { return ew.tanh(this); }
  sigmoid(): Tensor { return ew.sigmoid(this); }
  softplus(): Tensor { return ew.softplus(this); }
  relu(): Tensor { return ew.relu(this); }
  gelu(opts?: { approximate?: 'none' | 'tanh' }): Tensor { return ew.gelu(this, opts); }
  silu(): Tensor { return ew.silu(this); }
  gatedAct(other: Tensor, act: Activation): Tensor { return ew.gatedAct(this, other, act); }

  matmul(other: Tensor, opts?: mm.MatmulOptions): Tensor { return mm.matmul(this, other, opts); }

  sum(axis?: number | readonly number[], keepDims = false): Tensor { return red.sum(this, axis, keepDims); }
  mean(axis?: number | readonly number[], keepDims = false): Tensor { return red.mean(this, axis, keepDims); }
  max(axis?: number | readonly number[], keepDims = false): Tensor { return red.max(this, axis, keepDims); }
  min(axis?: number | readonly number[], keepDims = false): Tensor { return red.min(this, axis, keepDims); }
  argmax(axis = -1): Tensor { return red.argmax(this, axis); }

  softmax(axis = -1): Tensor { return sm.softmax(this, axis); }
  logSoftmax(axis = -1): Tensor { return sm.logSoftmax(this, axis); }
  logsumexp(axis = -1, keepDims = false): Tensor { return sm.logsumexp(this, axis, keepDims); }

  reshape(shape: readonly number[]): Tensor { return sh.reshape(this, shape); }
  transpose(perm?: readonly number[]): Tensor { return sh.transpose(this, perm); }
  slice(axis: number, start: number, end?: number): Tensor { return sh.slice(this, axis, start, end); }
  squeeze(axis: number): Tensor { return sh.squeeze(this, axis); }
  unsqueeze(axis: number): Tensor { return sh.unsqueeze(this, axis); }
  expand(shape: readonly number[]): Tensor { return sh.expand(this, shape); }

  gatherRows(indices: IndexLike): Tensor { return ix.gatherRows(this, indices); }
  topK(k: number): { values: Tensor; indices: Tensor } { return ix.topK(this, k); }
}
