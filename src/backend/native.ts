/**
 * The native (C, SIMD, multi-threaded) backend.
 *
 * `NativeBackend` extends `ReferenceBackend` and overrides the kernels the addon accelerates; any
 * kernel or op the addon does not know falls back to the TypeScript implementation. The addon is
 * `build/Release/switchyard_native.node` under the package root (built by `scripts/build-native.mjs`,
 * the package's install script). It is located by walking up from this module to the directory
 * holding package.json, so it resolves the same way from `src/` (vitest) and from `dist/`.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import type { Activation, BinaryOp, GatedGemmMode, ReduceOp, UnaryOp } from './interface.js';
import { setBufferAligner } from './alloc.js';
import { ReferenceBackend } from './reference.js';

/** The functions exported by switchyard_native.node (see native/addon.c). */
interface NativeAddon {
  gemm(buffers: readonly Float32Array[], params: Int32Array): void;
  gemmGated?(mode: number, act: number, buffers: readonly Float32Array[], params: Int32Array): void;
  unary(op: number, x: Float32Array, out: Float32Array): void;
  unaryGrad(op: number, x: Float32Array, y: Float32Array, dy: Float32Array, dx: Float32Array): void;
  gatedAct(act: number, a: Float32Array, b: Float32Array, out: Float32Array): void;
  gatedActGrad(act: number, a: Float32Array, b: Float32Array, dy: Float32Array, da: Float32Array, db: Float32Array): void;
  affine(x: Float32Array, scale: number, shift: number, out: Float32Array): void;
  binary(op: number, a: Float32Array, aStrides: Int32Array, b: Float32Array, bStrides: Int32Array, out: Float32Array, outShape: Int32Array): void;
  reduce(op: number, x: Float32Array, outer: number, len: number, inner: number, out: Float32Array): void;
  softmax(x: Float32Array, rows: number, cols: number, log: boolean, out: Float32Array): void;
  softmaxGrad(y: Float32Array, dy: Float32Array, rows: number, cols: number, log: boolean, dx: Float32Array): void;
  logsumexp(x: Float32Array, rows: number, cols: number, out: Float32Array): void;
  rmsNorm(x: Float32Array, w: Float32Array | null, rows: number, cols: number, eps: number, out: Float32Array, rstd: Float32Array): void;
  rmsNormGrad(x: Float32Array, w: Float32Array | null, rstd: Float32Array, dy: Float32Array, rows: number, cols: number, dx: Float32Array, dw: Float32Array | null): void;
  layerNorm(x: Float32Array, w: Float32Array | null, b: Float32Array | null, rows: number, cols: number, eps: number, out: Float32Array, mean: Float32Array, rstd: Float32Array): void;
  layerNormGrad(x: Float32Array, w: Float32Array | null, mean: Float32Array, rstd: Float32Array, dy: Float32Array, rows: number, cols: number, dx: Float32Array, dw: Float32Array | null, db: Float32Array | null): void;
  permute(x: Float32Array, shape: Int32Array, perm: Int32Array, out: Float32Array): void;
  gatherRows(src: Float32Array, idx: Int32Array, cols: number, out: Float32Array): void;
  scatterAddRows(src: Float32Array, idx: Int32Array, w: Float32Array | null, cols: number, out: Float32Array): void;
  rowDot(a: Float32Array, b: Float32Array, rows: number, cols: number, out: Float32Array): void;
  gatherRowsScaled(g: Float32Array, idx: Int32Array, cols: number, w: Float32Array, out: Float32Array, dotWith: Float32Array | null, dot: Float32Array | null): void;
  /** Optional: absent from addons built before these kernels (the reference is used then). */
  sumSquares?(x: Float32Array): number;
  topKRows?(x: Float32Array, rows: number, cols: number, k: number, values: Float32Array, indices: Int32Array): void;
  loraMixture?(
    x: Float32Array, router: Float32Array | null, A: Float32Array, B: Float32Array, scales: Float32Array,
    dims: Int32Array, experts: Int32Array, gates: Float32Array, logits: Float32Array | null, y: Float32Array,
  ): void;
  rotary?(
    x: Float32Array, out: Float32Array, cos: Float32Array, sin: Float32Array,
    rows: number, seqLen: number, heads: number, dim: number, startPos: number, inverse: boolean,
  ): void;
  adamw?(
    p: Float32Array,
    grad: Float32Array,
    m: Float32Array,
    v: Float32Array,
    vmax: Float32Array | null,
    beta1: number,
    beta2: number,
    stepSize: number,
    bc2Sqrt: number,
    eps: number,
    decay: number,
    sign: number,
  ): void;
  /** Byte offset at which `buffer`'s memory is aligned to `align` (a power of two). */
  alignOffset(buffer: ArrayBuffer, align: number): number;
  threads(): number;
  setThreads(n: number): number;
  defaultThreads(): number;
  isa(): string;
  setIsa(name: string): boolean;
}

/** Op codes shared with native/sy.h (enum sy_unary_op / sy_binary_op / sy_reduce_op). */
const UNARY_CODE: Readonly<Record<UnaryOp, number>> = {
  neg: 0,
  abs: 1,
  exp: 2,
  log: 3,
  sqrt: 4,
  rsqrt: 5,
  tanh: 6,
  sigmoid: 7,
  softplus: 8,
  relu: 9,
  gelu: 10,
  gelu_tanh: 11,
  silu: 12,
  square: 13,
  sign: 14,
};
const BINARY_CODE: Readonly<Record<BinaryOp, number>> = { add: 0, sub: 1, mul: 2, div: 3, max: 4, min: 5, pow: 6 };
const REDUCE_CODE: Readonly<Record<ReduceOp, number>> = { sum: 0, max: 1, min: 2 };

/** Directory holding package.json, walking up from this module. */
function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** Absolute path where the addon is expected. */
export function nativeAddonPath(): string {
  return path.join(packageRoot(), 'build', 'Release', 'switchyard_native.node');
}

let addon: NativeAddon | null = null;
let loadError: string | null = null;
let attempted = false;

function loadAddon(): NativeAddon | null {
  if (attempted) return addon;
  attempted = true;
  try {
    const file = nativeAddonPath();
    if (!existsSync(file)) {
      loadError = `${path.relative(process.cwd(), file) || file} not found (run: node scripts/build-native.mjs)`;
      return null;
    }
    const req = createRequire(import.meta.url);
    const mod = req(file) as NativeAddon;
    if (typeof mod?.gemm !== 'function') throw new Error('addon does not export gemm()');
    addon = mod;
    loadError = null;
    // From now on large tensors and scratch buffers start on page boundaries (see alloc.ts).
    if (typeof mod.alignOffset === 'function') setBufferAligner((buffer, align) => mod.alignOffset(buffer, align));
  } catch (e) {
    addon = null;
    loadError = e instanceof Error ? e.message : String(e);
  }
  return addon;
}

/**
 * The native backend: C kernels with AVX-512 / AVX2 / portable paths chosen at run time and a
 * persistent thread pool. Results are bit-identical across runs for a fixed thread count.
 */
export class NativeBackend extends ReferenceBackend {
  readonly #a: NativeAddon;

  /** Use `loadNativeBackend()`; this throws if the addon cannot be loaded. */
  constructor() {
    super();
    const a = loadAddon();
    if (!a) throw new Error(`switchyard: native backend unavailable: ${loadError ?? 'not built'}`);
    this.#a = a;
  }

  override get name(): string {
    return 'native';
  }
  /** Threads used by parallel kernels (the calling thread plus pool workers). */
  override get threads(): number {
    return this.#a.threads();
  }
  /** Resize the pool (process-wide); n <= 0 restores the startup count. Returns the new count. */
  setThreads(n: number): number {
    return this.#a.setThreads(Math.max(0, Math.floor(n)));
  }
  /** The startup thread count: env SWITCHYARD_THREADS if set, else the number of online CPUs. */
  get defaultThreads(): number {
    return this.#a.defaultThreads();
  }
  /** Instruction-set path in use: 'avx512', 'avx2' or 'scalar'. */
  get isa(): string {
    return this.#a.isa();
  }
  /** Force a lower ISA path (testing); returns false if this CPU does not support it. */
  setIsa(name: 'avx512' | 'avx2' | 'scalar'): boolean {
    return this.#a.setIsa(name);
  }

  override gemm(buffers: readonly Float32Array[], params: Int32Array): void {
    this.#a.gemm(buffers, params);
  }

  override unary(op: UnaryOp, x: Float32Array, out: Float32Array): void {
    const code = UNARY_CODE[op];
    if (code === undefined) return super.unary(op, x, out);
    this.#a.unary(code, x, out);
  }

  override unaryGrad(op: UnaryOp, x: Float32Array, y: Float32Array, dy: Float32Array, dx: Float32Array): void {
    const code = UNARY_CODE[op];
    if (code === undefined) return super.unaryGrad(op, x, y, dy, dx);
    this.#a.unaryGrad(code, x, y, dy, dx);
  }

  override binary(
    op: BinaryOp,
    a: Float32Array,
    aStrides: Int32Array,
    b: Float32Array,
    bStrides: Int32Array,
    out: Float32Array,
    outShape: Int32Array,
  ): void {
    const code = BINARY_CODE[op];
    if (code === undefined) return super.binary(op, a, aStrides, b, bStrides, out, outShape);
    this.#a.binary(code, a, aStrides, b, bStrides, out, outShape);
  }

  override affine(x: Float32Array, scale: number, shift: number, out: Float32Array): void {
    this.#a.affine(x, scale, shift, out);
  }

  override reduce(op: ReduceOp, x: Float32Array, outer: number, len: number, inner: number, out: Float32Array): void {
    const code = REDUCE_CODE[op];
    if (code === undefined) return super.reduce(op, x, outer, len, inner, out);
    this.#a.reduce(code, x, outer, len, inner, out);
  }

  override softmax(x: Float32Array, rows: number, cols: number, log: boolean, out: Float32Array): void {
    this.#a.softmax(x, rows, cols, log, out);
  }

  override softmaxGrad(y: Float32Array, dy: Float32Array, rows: number, cols: number, log: boolean, dx: Float32Array): void {
    this.#a.softmaxGrad(y, dy, rows, cols, log, dx);
  }

  override logsumexp(x: Float32Array, rows: number, cols: number, out: Float32Array): void {
    this.#a.logsumexp(x, rows, cols, out);
  }

  override rmsNorm(x: Float32Array, w: Float32Array | null, rows: number, cols: number, eps: number, out: Float32Array, rstd: Float32Array): void {
    this.#a.rmsNorm(x, w, rows, cols, eps, out, rstd);
  }

  override rmsNormGrad(
    x: Float32Array,
    w: Float32Array | null,
    rstd: Float32Array,
    dy: Float32Array,
    rows: number,
    cols: number,
    dx: Float32Array,
    dw: Float32Array | null,
  ): void {
    this.#a.rmsNormGrad(x, w, rstd, dy, rows, cols, dx, dw);
  }

  override layerNorm(
    x: Float32Array,
    w: Float32Array | null,
    b: Float32Array | null,
    rows: number,
    cols: number,
    eps: number,
    out: Float32Array,
    mean: Float32Array,
    rstd: Float32Array,
  ): void {
    this.#a.layerNorm(x, w, b, rows, cols, eps, out, mean, rstd);
  }

  override layerNormGrad(
    x: Float32Array,
    w: Float32Array | null,
    mean: Float32Array,
    rstd: Float32Array,
    dy: Float32Array,
    rows: number,
    cols: number,
    dx: Float32Array,
    dw: Float32Array | null,
    db: Float32Array | null,
  ): void {
    this.#a.layerNormGrad(x, w, mean, rstd, dy, rows, cols, dx, dw, db);
  }

  override permute(x: Float32Array, shape: Int32Array, perm: Int32Array, out: Float32Array): void {
    this.#a.permute(x, shape, perm, out);
  }

  override gatherRows(src: Float32Array, idx: Int32Array, cols: number, out: Float32Array): void {
    this.#a.gatherRows(src, idx, cols, out);
  }

  override scatterAddRows(src: Float32Array, idx: Int32Array, w: Float32Array | null, cols: number, out: Float32Array): void {
    this.#a.scatterAddRows(src, idx, w, cols, out);
  }

  override rowDot(a: Float32Array, b: Float32Array, rows: number, cols: number, out: Float32Array): void {
    this.#a.rowDot(a, b, rows, cols, out);
  }

  override gatherRowsScaled(
    g: Float32Array, idx: Int32Array, cols: number, w: Float32Array, out: Float32Array,
    dotWith: Float32Array | null, dot: Float32Array | null,
  ): void {
    this.#a.gatherRowsScaled(g, idx, cols, w, out, dotWith, dot);
  }

  override loraMixture(
    x: Float32Array, router: Float32Array | null, A: Float32Array, B: Float32Array, scales: Float32Array,
    dims: Int32Array, experts: Int32Array, gates: Float32Array, logits: Float32Array | null, y: Float32Array,
  ): void {
    if (this.#a.loraMixture === undefined) return super.loraMixture(x, router, A, B, scales, dims, experts, gates, logits, y);
    this.#a.loraMixture(x, router, A, B, scales, dims, experts, gates, logits, y);
  }

  /** Σx² in float64 over fixed 65536-element chunks summed in chunk order (deterministic for any thread count). */
  override rotary(
    x: Float32Array, out: Float32Array, cos: Float32Array, sin: Float32Array,
    rows: number, seqLen: number, heads: number, dim: number, startPos: number, inverse: boolean,
  ): void {
    if (this.#a.rotary === undefined) return super.rotary(x, out, cos, sin, rows, seqLen, heads, dim, startPos, inverse);
    this.#a.rotary(x, out, cos, sin, rows, seqLen, heads, dim, startPos, inverse);
  }

  override topKRows(x: Float32Array, rows: number, cols: number, k: number, values: Float32Array, indices: Int32Array): void {
    if (this.#a.topKRows === undefined) return super.topKRows(x, rows, cols, k, values, indices);
    this.#a.topKRows(x, rows, cols, k, values, indices);
  }

  override sumSquares(x: Float32Array): number {
    if (this.#a.sumSquares === undefined) return super.sumSquares(x);
    return this.#a.sumSquares(x);
  }

  /** Fused AdamW; bit-identical to the reference (same double operations and float32 roundings per element). */
  override adamw(
    p: Float32Array,
    grad: Float32Array,
    m: Float32Array,
    v: Float32Array,
    vmax: Float32Array | null,
    h: { beta1: number; beta2: number; stepSize: number; bc2Sqrt: number; eps: number; decay: number; sign: number },
  ): void {
    if (this.#a.adamw === undefined) return super.adamw(p, grad, m, v, vmax, h);
    this.#a.adamw(p, grad, m, v, vmax, h.beta1, h.beta2, h.stepSize, h.bc2Sqrt, h.eps, h.decay, h.sign);
  }

  override gatedAct(act: Activation, a: Float32Array, b: Float32Array, out: Float32Array): void {
    const code = UNARY_CODE[act];
    if (code === undefined) return super.gatedAct(act, a, b, out);
    this.#a.gatedAct(code, a, b, out);
  }

  override gatedActGrad(act: Activation, a: Float32Array, b: Float32Array, dy: Float32Array, da: Float32Array, db: Float32Array): void {
    const code = UNARY_CODE[act];
    if (code === undefined) return super.gatedActGrad(act, a, b, dy, da, db);
    this.#a.gatedActGrad(code, a, b, dy, da, db);
  }

  override gemmGated(mode: GatedGemmMode, act: Activation, buffers: readonly Float32Array[], params: Int32Array): void {
    const code = UNARY_CODE[act];
    const modeCode = mode === 'up' ? 0 : mode === 'down-grad' ? 1 : undefined;
    // An addon built before this kernel existed, or an unknown mode: the composed definition.
    if (code === undefined || modeCode === undefined || this.#a.gemmGated === undefined) return super.gemmGated(mode, act, buffers, params);
    this.#a.gemmGated(modeCode, code, buffers, params);
  }
}

let instance: NativeBackend | null = null;

/** The native backend, or null if the addon cannot be loaded (see `nativeLoadError()`). */
export function loadNativeBackend(): NativeBackend | null {
  if (instance) return instance;
  if (!loadAddon()) return null;
  try {
    instance = new NativeBackend();
  } catch (e) {
    loadError = e instanceof Error ? e.message : String(e);
    return null;
  }
  return instance;
}

/** Why the addon could not be loaded (null if it loaded or was not tried yet). */
export function nativeLoadError(): string | null {
  loadAddon();
  return loadError;
}
