/// <reference lib="dom" />
/**
 * The WebAssembly backend: the same C kernels as the native backend (the GEMM driver native/gemm.c,
 * native/ops.c, the element-wise/row-wise kernels of native/ew_impl.h), compiled by clang for wasm32
 * with SIMD128 (scripts/build-wasm.mjs; native/wasm/ adds a SIMD128 GEMM micro-kernel, the thread
 * pool and a freestanding runtime), behind the synchronous `Backend` interface.
 *
 * Two builds ship in dist/backend/: `switchyard.wasm` (one thread, ordinary memory) and
 * `switchyard-threads.wasm` (atomics, shared memory). The threaded one needs SharedArrayBuffer,
 * which browsers only give cross-origin-isolated pages (COOP/COEP headers); then N-1 module workers
 * (wasm-worker.ts) instantiate the same module on the same memory and serve the C thread pool.
 *
 * Kernels run on linear memory, so each call copies its inputs into a reusable arena inside the
 * module's memory and copies its outputs back: O(size) extra work beside the kernel (small next to
 * a matmul's O(m·n·k)). Arguments are checked first with the native addon's checks (wasm-args.ts),
 * so a rejected call writes nothing.
 */
import type { Activation, BinaryOp, ReduceOp, UnaryOp } from './interface.js';
import { ReferenceBackend } from './reference.js';
import { checkAdamw, checkBinary, checkGemm, checkIndices, checkPermute, count, f32, i32, mul, need, num } from './wasm-args.js';

/** The functions native/wasm/entry.c exports (pointers are byte offsets into linear memory). */
interface WasmExports {
  sy_wasm_alloc(bytes: number): number;
  sy_wasm_free(ptr: number): void;
  sy_wasm_threads(): number;
  sy_wasm_set_threads(n: number): number;
  sy_wasm_default_threads(): number;
  sy_wasm_gemm(params: number, ntasks: number, bufs: number): void;
  sy_wasm_unary(op: number, x: number, out: number, n: number): void;
  sy_wasm_unary_grad(op: number, x: number, y: number, dy: number, dx: number, n: number): void;
  sy_wasm_gated(act: number, a: number, b: number, out: number, n: number): void;
  sy_wasm_gated_grad(act: number, a: number, b: number, dy: number, da: number, db: number, n: number): void;
  sy_wasm_affine(x: number, scale: number, shift: number, out: number, n: number): void;
  sy_wasm_binary(op: number, a: number, as: number, b: number, bs: number, out: number, shape: number, nd: number): void;
  sy_wasm_reduce(op: number, x: number, outer: number, len: number, inner: number, out: number): void;
  sy_wasm_softmax(x: number, rows: number, cols: number, log: number, out: number): void;
  sy_wasm_softmax_grad(y: number, dy: number, rows: number, cols: number, log: number, dx: number): void;
  sy_wasm_logsumexp(x: number, rows: number, cols: number, out: number): void;
  sy_wasm_rms_norm(x: number, w: number, rows: number, cols: number, eps: number, out: number, rstd: number): void;
  sy_wasm_rms_norm_grad(x: number, w: number, rstd: number, dy: number, rows: number, cols: number, dx: number, dw: number): void;
  sy_wasm_layer_norm(x: number, w: number, b: number, rows: number, cols: number, eps: number, out: number, mean: number, rstd: number): void;
  sy_wasm_layer_norm_grad(x: number, w: number, mean: number, rstd: number, dy: number, rows: number, cols: number, dx: number, dw: number, db: number): void;
  sy_wasm_permute(x: number, shape: number, perm: number, nd: number, out: number): void;
  sy_wasm_gather_rows(src: number, idx: number, nidx: number, cols: number, out: number): void;
  sy_wasm_scatter_add_rows(src: number, idx: number, w: number, nidx: number, cols: number, out: number, outRows: number): void;
  sy_wasm_row_dot(a: number, b: number, rows: number, cols: number, out: number): void;
  sy_wasm_sum_squares(x: number, n: number): number;
  sy_wasm_adamw(p: number, g: number, m: number, v: number, vmax: number, n: number, b1: number, b2: number, step: number, bc2: number, eps: number, decay: number, sign: number): void;
  // threaded build only
  __stack_pointer?: WebAssembly.Global;
  __wasm_init_tls?(base: number): void;
  __tls_size?: WebAssembly.Global;
  sy_wasm_worker?(tid: number): void;
}

/** Op codes shared with native/sy.h. */
const UNARY_CODE: Readonly<Record<UnaryOp, number>> = {
  neg: 0, abs: 1, exp: 2, log: 3, sqrt: 4, rsqrt: 5, tanh: 6, sigmoid: 7, softplus: 8,
  relu: 9, gelu: 10, gelu_tanh: 11, silu: 12, square: 13, sign: 14,
};
const BINARY_CODE: Readonly<Record<BinaryOp, number>> = { add: 0, sub: 1, mul: 2, div: 3, max: 4, min: 5, pow: 6 };
const REDUCE_CODE: Readonly<Record<ReduceOp, number>> = { sum: 0, max: 1, min: 2 };
const GATED: ReadonlySet<string> = new Set(['relu', 'gelu', 'gelu_tanh', 'silu']);

function code<T extends string>(table: Readonly<Record<T, number>>, op: T, name: string): number {
  const c = (table as Record<string, number>)[op];
  if (c === undefined) throw new RangeError(`${name}: unknown op ${String(op)}`);
  return c;
}

/** Initial linear memory (must cover the module's static data and main stack) and the maximum. */
const INITIAL_PAGES = 256; // 16 MiB
const MAXIMUM_PAGES = 32768; // 2 GiB, as linked (--max-memory)
const WORKER_STACK = 1 << 20;

type Arr = Float32Array | Int32Array;
/** How a call uses an array: read only, written only, or read and written. */
type Use = 'in' | 'out' | 'inout';

/** Options for `createWasmBackend`. */
export interface WasmBackendOptions {
  /**
   * Threads for the kernels (the calling thread included). Default: navigator.hardwareConcurrency
   * (capped at 16) when the page is cross-origin isolated, else 1. More than 1 needs isolation.
   */
  threads?: number;
  /** The compiled module or its bytes, instead of fetching `wasmUrl` (Node, tests, custom hosting). */
  wasm?: WebAssembly.Module | BufferSource;
  /** Where to fetch the .wasm from (default: switchyard.wasm / switchyard-threads.wasm next to this module). */
  wasmUrl?: string | URL;
  /** Module worker script for the threaded build (default: wasm-worker.js next to this module). */
  workerUrl?: string | URL;
}

/** True when this page can run the threaded build: SharedArrayBuffer, cross-origin isolation, Workers. */
export function wasmThreadsAvailable(): boolean {
  const g = globalThis as { crossOriginIsolated?: boolean; Worker?: unknown; SharedArrayBuffer?: unknown };
  return g.crossOriginIsolated === true && typeof g.SharedArrayBuffer === 'function' && typeof g.Worker === 'function';
}

/**
 * The wasm backend. Create it with `createWasmBackend()` (loading and starting workers is
 * asynchronous); after that every kernel is synchronous, as the `Backend` interface requires.
 */
export class WasmBackend extends ReferenceBackend {
  readonly #ex: WasmExports;
  readonly #memory: WebAssembly.Memory;
  readonly #workers: { terminate(): void }[];
  readonly #threaded: boolean;
  #arena = 0;
  #arenaBytes = 0;

  /** Use `createWasmBackend()`. */
  constructor(ex: WasmExports, memory: WebAssembly.Memory, workers: { terminate(): void }[], threaded: boolean) {
    super();
    this.#ex = ex;
    this.#memory = memory;
    this.#workers = workers;
    this.#threaded = threaded;
  }

  override get name(): string {
    return 'wasm';
  }
  /** Threads the kernels use now (calling thread included). */
  override get threads(): number {
    return this.#ex.sy_wasm_threads();
  }
  /** Threads available (1 + started workers). */
  get maxThreads(): number {
    return this.#ex.sy_wasm_default_threads();
  }
  /** Whether this is the shared-memory build with workers (cross-origin isolated pages only). */
  get threaded(): boolean {
    return this.#threaded;
  }
  /** Use n threads (clamped to 1..maxThreads; n <= 0 means all). Returns the count in effect. */
  setThreads(n: number): number {
    return this.#ex.sy_wasm_set_threads(Math.floor(n));
  }
  /** Stop the worker threads (the backend then runs on one thread). */
  dispose(): void {
    this.#ex.sy_wasm_set_threads(1);
    for (const w of this.#workers) w.terminate();
    this.#workers.length = 0;
  }

  /**
   * Copy arrays into the arena, run fn on their addresses, copy written arrays back. Views of the
   * same memory range (out aliasing x exactly) share one copy, as the kernels allow.
   */
  #run<R>(arrays: readonly (Arr | null)[], uses: readonly Use[], fn: (ptrs: number[]) => R): R {
    const ptrs: number[] = new Array(arrays.length).fill(0);
    const owner: number[] = new Array(arrays.length).fill(-1);
    // per unique range: read (copy in) if any alias reads it, written (copy out) if any alias writes it
    const reads: boolean[] = uses.map((u) => u !== 'out');
    const writes: boolean[] = uses.map((u) => u !== 'in');
    let total = 0;
    for (let i = 0; i < arrays.length; i++) {
      const a = arrays[i];
      if (!a) continue;
      for (let j = 0; j < i; j++) {
        const b = arrays[j];
        if (b && owner[j] === -1 && b.buffer === a.buffer && b.byteOffset === a.byteOffset && b.byteLength === a.byteLength) {
          owner[i] = j;
          reads[j] ||= reads[i];
          writes[j] ||= writes[i];
          break;
        }
      }
      if (owner[i] === -1) {
        ptrs[i] = total;
        total += (a.byteLength + 63) & ~63;
      }
    }
    if (total > this.#arenaBytes) {
      if (this.#arena) this.#ex.sy_wasm_free(this.#arena);
      const want = Math.max(total, this.#arenaBytes * 2, 1 << 16);
      const p = this.#ex.sy_wasm_alloc(want);
      if (p === 0) {
        this.#arena = 0;
        this.#arenaBytes = 0;
        throw new RangeError(`wasm backend: out of memory allocating ${want} bytes`);
      }
      this.#arena = p;
      this.#arenaBytes = want;
    }
    let heap = new Uint8Array(this.#memory.buffer);
    for (let i = 0; i < arrays.length; i++) {
      const a = arrays[i];
      if (!a) continue;
      if (owner[i] !== -1) {
        ptrs[i] = ptrs[owner[i]];
        continue;
      }
      ptrs[i] += this.#arena;
      if (reads[i]) heap.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), ptrs[i]);
    }
    let r: R;
    try {
      r = fn(ptrs);
    } catch (e) {
      // a trap inside the C code: out of memory (abort) or a dead worker thread
      if (e instanceof WebAssembly.RuntimeError) throw new Error(`switchyard: wasm kernel failed (${e.message}): out of memory or a worker thread died`, { cause: e });
      throw e;
    }
    heap = new Uint8Array(this.#memory.buffer); // the kernel may have grown memory
    for (let i = 0; i < arrays.length; i++) {
      const a = arrays[i];
      if (!a || owner[i] !== -1 || !writes[i]) continue;
      new Uint8Array(a.buffer, a.byteOffset, a.byteLength).set(heap.subarray(ptrs[i], ptrs[i] + a.byteLength));
    }
    return r;
  }

  override gemm(buffers: readonly Float32Array[], params: Int32Array): void {
    const ntasks = checkGemm(buffers, params);
    if (ntasks === 0) return;
    const written = new Set<number>();
    for (let t = 0; t < ntasks; t++) written.add(params[t * 13 + 6]);
    const bufPtrs = new Int32Array(buffers.length);
    const arrays: Arr[] = [params, bufPtrs, ...buffers];
    const uses: Use[] = ['in', 'in', ...buffers.map((_, i) => (written.has(i) ? 'inout' : 'in') as Use)];
    this.#run(arrays, uses, (p) => {
      // the buffer-address table is written into the arena after the layout is known
      new Int32Array(this.#memory.buffer, p[1], buffers.length).set(p.slice(2));
      this.#ex.sy_wasm_gemm(p[0], ntasks, p[1]);
    });
  }

  override unary(op: UnaryOp, x: Float32Array, out: Float32Array): void {
    const c = code(UNARY_CODE, op, 'op');
    f32(x, 'x');
    f32(out, 'out');
    need('out', out.length, x.length);
    this.#run([x, out], ['in', 'inout'], (p) => this.#ex.sy_wasm_unary(c, p[0], p[1], x.length));
  }

  override unaryGrad(op: UnaryOp, x: Float32Array, y: Float32Array, dy: Float32Array, dx: Float32Array): void {
    const c = code(UNARY_CODE, op, 'op');
    f32(x, 'x');
    f32(y, 'y');
    f32(dy, 'dy');
    f32(dx, 'dx');
    need('y', y.length, x.length);
    need('dy', dy.length, x.length);
    need('dx', dx.length, x.length);
    this.#run([x, y, dy, dx], ['in', 'in', 'in', 'inout'], (p) => this.#ex.sy_wasm_unary_grad(c, p[0], p[1], p[2], p[3], x.length));
  }

  override gatedAct(act: Activation, a: Float32Array, b: Float32Array, out: Float32Array): void {
    if (!GATED.has(act)) throw new RangeError('act: unsupported activation');
    const c = code(UNARY_CODE, act, 'act');
    f32(a, 'a');
    f32(b, 'b');
    f32(out, 'out');
    need('b', b.length, a.length);
    need('out', out.length, a.length);
    this.#run([a, b, out], ['in', 'in', 'inout'], (p) => this.#ex.sy_wasm_gated(c, p[0], p[1], p[2], a.length));
  }

  override gatedActGrad(act: Activation, a: Float32Array, b: Float32Array, dy: Float32Array, da: Float32Array, db: Float32Array): void {
    if (!GATED.has(act)) throw new RangeError('act: unsupported activation');
    const c = code(UNARY_CODE, act, 'act');
    f32(a, 'a');
    f32(b, 'b');
    f32(dy, 'dy');
    f32(da, 'da');
    f32(db, 'db');
    for (const [name, v] of [['b', b], ['dy', dy], ['da', da], ['db', db]] as const) need(name, v.length, a.length);
    this.#run([a, b, dy, da, db], ['in', 'in', 'in', 'inout', 'inout'], (p) =>
      this.#ex.sy_wasm_gated_grad(c, p[0], p[1], p[2], p[3], p[4], a.length),
    );
  }

  override affine(x: Float32Array, scale: number, shift: number, out: Float32Array): void {
    f32(x, 'x');
    num(scale, 'scale');
    num(shift, 'shift');
    f32(out, 'out');
    need('out', out.length, x.length);
    this.#run([x, out], ['in', 'inout'], (p) => this.#ex.sy_wasm_affine(p[0], scale, shift, p[1], x.length));
  }

  override binary(op: BinaryOp, a: Float32Array, aStrides: Int32Array, b: Float32Array, bStrides: Int32Array, out: Float32Array, outShape: Int32Array): void {
    const c = code(BINARY_CODE, op, 'op');
    checkBinary(a, aStrides, b, bStrides, out, outShape);
    this.#run([a, aStrides, b, bStrides, out, outShape], ['in', 'in', 'in', 'in', 'inout', 'in'], (p) =>
      this.#ex.sy_wasm_binary(c, p[0], p[1], p[2], p[3], p[4], p[5], outShape.length),
    );
  }

  override reduce(op: ReduceOp, x: Float32Array, outer: number, len: number, inner: number, out: Float32Array): void {
    const c = code(REDUCE_CODE, op, 'op');
    f32(x, 'x');
    count(outer, 'outer');
    count(len, 'len');
    count(inner, 'inner');
    f32(out, 'out');
    const oi = mul(outer, inner);
    need('x', x.length, mul(oi, len));
    need('out', out.length, oi);
    this.#run([x, out], ['in', 'inout'], (p) => this.#ex.sy_wasm_reduce(c, p[0], outer, len, inner, p[1]));
  }

  override softmax(x: Float32Array, rows: number, cols: number, log: boolean, out: Float32Array): void {
    f32(x, 'x');
    const tot = mul(count(rows, 'rows'), count(cols, 'cols'));
    f32(out, 'out');
    need('x', x.length, tot);
    need('out', out.length, tot);
    this.#run([x, out], ['in', 'inout'], (p) => this.#ex.sy_wasm_softmax(p[0], rows, cols, log ? 1 : 0, p[1]));
  }

  override softmaxGrad(y: Float32Array, dy: Float32Array, rows: number, cols: number, log: boolean, dx: Float32Array): void {
    f32(y, 'y');
    f32(dy, 'dy');
    const tot = mul(count(rows, 'rows'), count(cols, 'cols'));
    f32(dx, 'dx');
    need('y', y.length, tot);
    need('dy', dy.length, tot);
    need('dx', dx.length, tot);
    this.#run([y, dy, dx], ['in', 'in', 'inout'], (p) => this.#ex.sy_wasm_softmax_grad(p[0], p[1], rows, cols, log ? 1 : 0, p[2]));
  }

  override logsumexp(x: Float32Array, rows: number, cols: number, out: Float32Array): void {
    f32(x, 'x');
    const tot = mul(count(rows, 'rows'), count(cols, 'cols'));
    f32(out, 'out');
    need('x', x.length, tot);
    need('out', out.length, rows);
    this.#run([x, out], ['in', 'inout'], (p) => this.#ex.sy_wasm_logsumexp(p[0], rows, cols, p[1]));
  }

  override rmsNorm(x: Float32Array, w: Float32Array | null, rows: number, cols: number, eps: number, out: Float32Array, rstd: Float32Array): void {
    f32(x, 'x');
    f32(w, 'w', true);
    const tot = mul(count(rows, 'rows'), count(cols, 'cols'));
    num(eps, 'eps');
    f32(out, 'out');
    f32(rstd, 'rstd');
    need('x', x.length, tot);
    if (w) need('w', w.length, cols);
    need('out', out.length, tot);
    need('rstd', rstd.length, rows);
    this.#run([x, w, out, rstd], ['in', 'in', 'inout', 'inout'], (p) => this.#ex.sy_wasm_rms_norm(p[0], p[1], rows, cols, eps, p[2], p[3]));
  }

  override rmsNormGrad(x: Float32Array, w: Float32Array | null, rstd: Float32Array, dy: Float32Array, rows: number, cols: number, dx: Float32Array, dw: Float32Array | null): void {
    f32(x, 'x');
    f32(w, 'w', true);
    f32(rstd, 'rstd');
    f32(dy, 'dy');
    const tot = mul(count(rows, 'rows'), count(cols, 'cols'));
    f32(dx, 'dx');
    f32(dw, 'dw', true);
    need('x', x.length, tot);
    if (w) need('w', w.length, cols);
    need('rstd', rstd.length, rows);
    need('dy', dy.length, tot);
    need('dx', dx.length, tot);
    const dwUsed = dw && w ? dw : null;
    if (dwUsed) need('dw', dwUsed.length, cols);
    this.#run([x, w, rstd, dy, dx, dwUsed], ['in', 'in', 'in', 'in', 'inout', 'inout'], (p) =>
      this.#ex.sy_wasm_rms_norm_grad(p[0], p[1], p[2], p[3], rows, cols, p[4], p[5]),
    );
  }

  override layerNorm(x: Float32Array, w: Float32Array | null, b: Float32Array | null, rows: number, cols: number, eps: number, out: Float32Array, mean: Float32Array, rstd: Float32Array): void {
    f32(x, 'x');
    f32(w, 'w', true);
    f32(b, 'b', true);
    const tot = mul(count(rows, 'rows'), count(cols, 'cols'));
    num(eps, 'eps');
    f32(out, 'out');
    f32(mean, 'mean');
    f32(rstd, 'rstd');
    need('x', x.length, tot);
    if (w) need('w', w.length, cols);
    if (b) need('b', b.length, cols);
    need('out', out.length, tot);
    need('mean', mean.length, rows);
    need('rstd', rstd.length, rows);
    this.#run([x, w, b, out, mean, rstd], ['in', 'in', 'in', 'inout', 'inout', 'inout'], (p) =>
      this.#ex.sy_wasm_layer_norm(p[0], p[1], p[2], rows, cols, eps, p[3], p[4], p[5]),
    );
  }

  override layerNormGrad(
    x: Float32Array, w: Float32Array | null, mean: Float32Array, rstd: Float32Array, dy: Float32Array,
    rows: number, cols: number, dx: Float32Array, dw: Float32Array | null, db: Float32Array | null,
  ): void {
    f32(x, 'x');
    f32(w, 'w', true);
    f32(mean, 'mean');
    f32(rstd, 'rstd');
    f32(dy, 'dy');
    const tot = mul(count(rows, 'rows'), count(cols, 'cols'));
    f32(dx, 'dx');
    f32(dw, 'dw', true);
    f32(db, 'db', true);
    need('x', x.length, tot);
    if (w) need('w', w.length, cols);
    need('mean', mean.length, rows);
    need('rstd', rstd.length, rows);
    need('dy', dy.length, tot);
    need('dx', dx.length, tot);
    const dwUsed = dw && w ? dw : null;
    if (dwUsed) need('dw', dwUsed.length, cols);
    if (db) need('db', db.length, cols);
    this.#run([x, w, mean, rstd, dy, dx, dwUsed, db], ['in', 'in', 'in', 'in', 'in', 'inout', 'inout', 'inout'], (p) =>
      this.#ex.sy_wasm_layer_norm_grad(p[0], p[1], p[2], p[3], p[4], rows, cols, p[5], p[6], p[7]),
    );
  }

  override permute(x: Float32Array, shape: Int32Array, perm: Int32Array, out: Float32Array): void {
    checkPermute(x, shape, perm, out);
    this.#run([x, shape, perm, out], ['in', 'in', 'in', 'out'], (p) => this.#ex.sy_wasm_permute(p[0], p[1], p[2], shape.length, p[3]));
  }

  override gatherRows(src: Float32Array, idx: Int32Array, cols: number, out: Float32Array): void {
    f32(src, 'src');
    i32(idx, 'idx');
    count(cols, 'cols');
    f32(out, 'out');
    need('out', out.length, mul(idx.length, cols));
    if (cols > 0) checkIndices(idx, Math.floor(src.length / cols));
    this.#run([src, idx, out], ['in', 'in', 'inout'], (p) => this.#ex.sy_wasm_gather_rows(p[0], p[1], idx.length, cols, p[2]));
  }

  override scatterAddRows(src: Float32Array, idx: Int32Array, w: Float32Array | null, cols: number, out: Float32Array): void {
    f32(src, 'src');
    i32(idx, 'idx');
    f32(w, 'w', true);
    count(cols, 'cols');
    f32(out, 'out');
    need('src', src.length, mul(idx.length, cols));
    if (w) need('w', w.length, idx.length);
    const rows = cols > 0 ? Math.floor(out.length / cols) : 0;
    if (cols > 0) checkIndices(idx, rows);
    this.#run([src, idx, w, out], ['in', 'in', 'in', 'inout'], (p) =>
      this.#ex.sy_wasm_scatter_add_rows(p[0], p[1], p[2], idx.length, cols, p[3], rows),
    );
  }

  override rowDot(a: Float32Array, b: Float32Array, rows: number, cols: number, out: Float32Array): void {
    f32(a, 'a');
    f32(b, 'b');
    const tot = mul(count(rows, 'rows'), count(cols, 'cols'));
    f32(out, 'out');
    need('a', a.length, tot);
    need('b', b.length, tot);
    need('out', out.length, rows);
    this.#run([a, b, out], ['in', 'in', 'inout'], (p) => this.#ex.sy_wasm_row_dot(p[0], p[1], rows, cols, p[2]));
  }

  /** Σx² in float64 over fixed 65536-element chunks summed in order (as the native backend). */
  override sumSquares(x: Float32Array): number {
    f32(x, 'x');
    return this.#run([x], ['in'], (p) => this.#ex.sy_wasm_sum_squares(p[0], x.length));
  }

  /** Fused AdamW; bit-identical to the reference (same double operations and float32 roundings). */
  override adamw(
    p: Float32Array, grad: Float32Array, m: Float32Array, v: Float32Array, vmax: Float32Array | null,
    h: { beta1: number; beta2: number; stepSize: number; bc2Sqrt: number; eps: number; decay: number; sign: number },
  ): void {
    checkAdamw(p, grad, m, v, vmax, h);
    this.#run([p, grad, m, v, vmax], ['inout', 'in', 'inout', 'inout', 'inout'], (q) =>
      this.#ex.sy_wasm_adamw(q[0], q[1], q[2], q[3], q[4], p.length, h.beta1, h.beta2, h.stepSize, h.bc2Sqrt, h.eps, h.decay, h.sign),
    );
  }
}

interface WorkerLike {
  postMessage(msg: unknown): void;
  terminate(): void;
  addEventListener(type: 'message' | 'error', fn: (ev: { data?: unknown; message?: string }) => void): void;
}
type WorkerCtor = new (url: string | URL, opts: { type: 'module'; name?: string }) => WorkerLike;

async function compile(source: WebAssembly.Module | BufferSource | undefined, url: URL): Promise<WebAssembly.Module> {
  if (source instanceof WebAssembly.Module) return source;
  if (source) return WebAssembly.compile(source);
  const res = await fetch(url);
  if (!res.ok) throw new Error(`switchyard: cannot load the wasm backend from ${url.href} (HTTP ${res.status})`);
  return WebAssembly.compile(await res.arrayBuffer());
}

/**
 * Load the wasm backend. Threads > 1 use the shared-memory build and module workers, which needs a
 * cross-origin-isolated page (see `wasmThreadsAvailable`); otherwise the one-thread build is used.
 */
export async function createWasmBackend(opts: WasmBackendOptions = {}): Promise<WasmBackend> {
  const canThread = wasmThreadsAvailable();
  const hc = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? 1;
  let threads = opts.threads ?? (canThread ? Math.min(16, Math.max(1, hc)) : 1);
  if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`threads must be a positive integer (got ${opts.threads})`);
  if (threads > 1 && !canThread) {
    throw new RangeError(`threads=${threads} needs a cross-origin-isolated page (COOP/COEP headers) with SharedArrayBuffer; use threads: 1`);
  }
  threads = Math.min(threads, 64);
  const threaded = threads > 1;
  const url = new URL(opts.wasmUrl ?? (threaded ? './switchyard-threads.wasm' : './switchyard.wasm'), import.meta.url);
  const module = await compile(opts.wasm, url);
  // the threaded build exports the worker loop (and imports a shared memory): check before instantiating
  const isThreadedBuild = WebAssembly.Module.exports(module).some((e) => e.name === 'sy_wasm_worker');
  if (threaded !== isThreadedBuild) {
    throw new Error(`switchyard: ${opts.wasm ? 'the given module' : url.href} is the ${isThreadedBuild ? 'threaded' : 'one-thread'} build, expected the other one (threads=${threads})`);
  }
  const memory = new WebAssembly.Memory(
    threaded ? { initial: INITIAL_PAGES, maximum: MAXIMUM_PAGES, shared: true } : { initial: INITIAL_PAGES, maximum: MAXIMUM_PAGES },
  );
  const instance = await WebAssembly.instantiate(module, { env: { memory, log: Math.log, pow: Math.pow } });
  const ex = instance.exports as unknown as WasmExports;
  const workers: WorkerLike[] = [];
  if (threaded) {
    const tlsSize = Number(ex.__tls_size!.value);
    ex.__wasm_init_tls!(ex.sy_wasm_alloc(Math.max(tlsSize, 16)));
    const W = (globalThis as { Worker?: WorkerCtor }).Worker!;
    const workerUrl = new URL(opts.workerUrl ?? './wasm-worker.js', import.meta.url);
    const started: Promise<void>[] = [];
    for (let tid = 1; tid < threads; tid++) {
      const stack = ex.sy_wasm_alloc(WORKER_STACK);
      const tls = ex.sy_wasm_alloc(Math.max(tlsSize, 16));
      if (!stack || !tls) throw new RangeError('wasm backend: out of memory for worker stacks');
      const w = new W(workerUrl, { type: 'module', name: `switchyard-wasm-${tid}` });
      workers.push(w);
      started.push(
        new Promise<void>((resolve, reject) => {
          w.addEventListener('message', (ev) => {
            const d = ev.data as { ready?: boolean; error?: string };
            if (d.ready) resolve();
            else if (d.error) reject(new Error(`wasm worker ${tid}: ${d.error}`));
          });
          w.addEventListener('error', (ev) => reject(new Error(`wasm worker ${tid} failed to start: ${ev.message ?? 'error'} (${workerUrl.href})`)));
        }),
      );
      w.postMessage({ module, memory, tid, stackTop: stack + WORKER_STACK, tlsBase: tls });
    }
    try {
      await Promise.all(started);
      // each worker counts itself in the C pool as it enters its loop, right after saying ready
      const deadline = Date.now() + 10_000;
      while (ex.sy_wasm_default_threads() < threads) {
        if (Date.now() > deadline) throw new Error(`wasm backend: only ${ex.sy_wasm_default_threads()} of ${threads} threads started`);
        await new Promise((r) => setTimeout(r, 1));
      }
    } catch (e) {
      for (const w of workers) w.terminate();
      throw e;
    }
  }
  ex.sy_wasm_set_threads(threads);
  return new WasmBackend(ex, memory, workers, threaded);
}
