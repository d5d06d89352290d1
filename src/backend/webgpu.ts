/// <reference lib="dom" />
/**
 * The WebGPU backend: a synchronous `Backend` whose hot kernels (gemm incl. the grouped task list,
 * softmax, logsumexp, element-wise, gather/scatter) run as WGSL on the GPU.
 *
 * Why a worker and Atomics.wait: the engine's `Backend` is synchronous (autograd calls a kernel and
 * reads the result on the next line), but WebGPU readback (mapAsync) is asynchronous and a thread
 * can only wait for it by returning to its event loop. So the GPU work runs in a dedicated GPU
 * worker (webgpu-worker.ts), and the engine's thread posts each request and blocks on
 * Atomics.wait until the worker has written the results into a SharedArrayBuffer. That is only
 * allowed off the main thread and with SharedArrayBuffer, hence: create this backend inside a
 * Web Worker (where training should run anyway) of a cross-origin-isolated page. On the main
 * thread use the async kernel layer `WebGpuKernels` (webgpu-kernels.ts) directly.
 *
 * Kernels without a WGSL version (norms, optimizer, permute, gradients of element-wise ops, pow,
 * gelu/softplus...) run on the fallback backend (the wasm backend by default). Every GPU call
 * copies its inputs to the GPU and its outputs back; on SwiftShader (Chromium's CPU WebGPU) it is a
 * correctness target, not a speed one.
 */
import type { Activation, Backend, BinaryOp, GatedGemmMode, ReduceOp, UnaryOp } from './interface.js';
import { gemmGatedComposed } from './gemm-gated.js';
import { GEMM_CHAIN } from './interface.js';
import { checkBinary, checkGemm, checkIndices, count, f32, i32, mul, need, num } from './wasm-args.js';
import { createWasmBackend, type WasmBackendOptions } from './wasm.js';
import { GPU_BINARY, GPU_GATED, GPU_UNARY } from './webgpu-kernels.js';
import type { GpuRequest } from './webgpu-worker.js';

/** Options for `createWebGpuBackend`. */
export interface WebGpuBackendOptions {
  /** Backend for the kernels without a WGSL version (default: a wasm backend from `wasm`). */
  fallback?: Backend;
  /** Options for the default wasm fallback. */
  wasm?: WasmBackendOptions;
  /** GPU worker script (default: webgpu-worker.js next to this module). */
  workerUrl?: string | URL;
  /** Milliseconds one kernel may take before the call throws (default 120000). */
  timeoutMs?: number;
}

interface GpuWorker {
  postMessage(msg: unknown): void;
  terminate(): void;
  addEventListener(type: 'message' | 'error', fn: (ev: { data?: unknown; message?: string }) => void): void;
}

/** Why the synchronous WebGPU backend cannot run in this context, or null if it can. */
export function webgpuBackendContextProblem(): string | null {
  const g = globalThis as { WorkerGlobalScope?: unknown; crossOriginIsolated?: boolean; SharedArrayBuffer?: unknown; Worker?: unknown };
  if (typeof g.WorkerGlobalScope === 'undefined') return 'WebGpuBackend blocks on Atomics.wait, which the main thread may not: create it in a Web Worker';
  if (g.crossOriginIsolated !== true || typeof g.SharedArrayBuffer !== 'function') return 'WebGpuBackend needs SharedArrayBuffer: serve the page cross-origin isolated (COOP/COEP headers)';
  if (typeof g.Worker !== 'function') return 'WebGpuBackend needs nested workers (Worker is missing in this worker)';
  return null;
}

/** A view that owns its whole buffer, so structured cloning copies only its elements. */
function compact<T extends Float32Array | Int32Array>(a: T): T {
  return (a.byteOffset === 0 && a.byteLength === a.buffer.byteLength && !(a.buffer instanceof SharedArrayBuffer) ? a : a.slice()) as T;
}

/** The synchronous WebGPU backend (see the module comment). Create with `createWebGpuBackend()`. */
export class WebGpuBackend implements Backend {
  readonly #worker: GpuWorker;
  readonly #ctrl: Int32Array;
  #result: SharedArrayBuffer;
  readonly #timeout: number;
  /** The backend for kernels without a WGSL version. */
  readonly fallback: Backend;
  /** The adapter in use, e.g. "google swiftshader". */
  readonly adapterName: string;
  /** Kernel calls served by the GPU so far, per op (the rest went to `fallback`). */
  readonly gpuCalls: Record<GpuRequest['op'], number> = {
    gemm: 0, unary: 0, gatedAct: 0, affine: 0, binary: 0, softmax: 0, logsumexp: 0, gatherRows: 0, scatterAddRows: 0,
  };

  /** Use `createWebGpuBackend()`. */
  constructor(worker: GpuWorker, ctrl: SharedArrayBuffer, result: SharedArrayBuffer, fallback: Backend, adapterName: string, timeoutMs: number) {
    this.#worker = worker;
    this.#ctrl = new Int32Array(ctrl);
    this.#result = result;
    this.fallback = fallback;
    this.adapterName = adapterName;
    this.#timeout = timeoutMs;
  }

  get name(): string {
    return 'webgpu';
  }
  /** Threads of the fallback backend (GPU kernels are not thread-bound). */
  get threads(): number {
    return this.fallback.threads;
  }
  /** Set the fallback backend's thread count when it has one; returns the count in effect. */
  setThreads(n: number): number {
    const fb = this.fallback as Backend & { setThreads?(n: number): number };
    return fb.setThreads ? fb.setThreads(n) : fb.threads;
  }
  /** Stop the GPU worker (and the fallback's workers). */
  dispose(): void {
    this.#worker.terminate();
    (this.fallback as Backend & { dispose?(): void }).dispose?.();
  }

  /** Post one request to the GPU worker and block until it has written the outputs. */
  #call(op: GpuRequest['op'], args: unknown[], outputs: number[], targets: (Float32Array | Int32Array)[]): void {
    let bytes = 0;
    for (const t of targets) bytes += t.byteLength;
    let fresh: SharedArrayBuffer | undefined;
    if (bytes > this.#result.byteLength) {
      this.#result = fresh = new SharedArrayBuffer(Math.max(bytes, 2 * this.#result.byteLength));
    }
    Atomics.store(this.#ctrl, 0, 0);
    const req: GpuRequest = { op, args, outputs, result: fresh };
    this.#worker.postMessage(req);
    if (Atomics.wait(this.#ctrl, 0, 0, this.#timeout) === 'timed-out') {
      throw new Error(`switchyard: WebGPU ${op} did not finish within ${this.#timeout} ms`);
    }
    if (Atomics.load(this.#ctrl, 0) === 2) {
      const n = Atomics.load(this.#ctrl, 1);
      const msg = String.fromCharCode(...new Uint16Array(this.#result, 0, n));
      throw new Error(`switchyard: WebGPU ${op} failed: ${msg}`);
    }
    this.gpuCalls[op]++;
    const src = new Uint8Array(this.#result);
    let off = 0;
    for (const t of targets) {
      new Uint8Array(t.buffer, t.byteOffset, t.byteLength).set(src.subarray(off, off + t.byteLength));
      off += t.byteLength;
    }
  }

  gemm(buffers: readonly Float32Array[], params: Int32Array): void {
    const ntasks = checkGemm(buffers, params);
    if (ntasks === 0) return;
    // One dispatch runs every task at once: a chain's later tasks (GEMM_CHAIN) go in later waves.
    let waves = 1;
    const wave = new Int32Array(ntasks);
    for (let t = 1; t < ntasks; t++) if (params[t * 13 + 12] & GEMM_CHAIN) waves = Math.max(waves, (wave[t] = wave[t - 1] + 1) + 1);
    if (waves > 1) {
      for (let w = 0; w < waves; w++) {
        const sub: number[] = [];
        for (let t = 0; t < ntasks; t++) if (wave[t] === w) sub.push(...params.subarray(t * 13, t * 13 + 13));
        this.gemm(buffers, Int32Array.from(sub, (v, i) => (i % 13 === 12 ? v & ~GEMM_CHAIN : v)));
      }
      return;
    }
    // one clone per distinct buffer (aliases stay aliases through structured cloning)
    const clones = new Map<Float32Array, Float32Array>();
    const sent = buffers.map((b) => {
      let c = clones.get(b);
      if (!c) clones.set(b, (c = compact(b)));
      return c;
    });
    const written = [...new Set(Array.from({ length: ntasks }, (_, t) => params[t * 13 + 6]))].sort((a, b) => a - b);
    this.#call('gemm', [sent, compact(params)], written, written.map((i) => buffers[i]));
  }

  unary(op: UnaryOp, x: Float32Array, out: Float32Array): void {
    if (!GPU_UNARY.has(op)) return this.fallback.unary(op, x, out);
    f32(x, 'x');
    f32(out, 'out');
    need('out', out.length, x.length);
    const xs = compact(x);
    this.#call('unary', [op, xs, out === x ? xs : new Float32Array(out.length)], [2], [out]);
  }

  unaryGrad(op: UnaryOp, x: Float32Array, y: Float32Array, dy: Float32Array, dx: Float32Array): void {
    this.fallback.unaryGrad(op, x, y, dy, dx);
  }

  binary(op: BinaryOp, a: Float32Array, aStrides: Int32Array, b: Float32Array, bStrides: Int32Array, out: Float32Array, outShape: Int32Array): void {
    if (!GPU_BINARY.has(op)) return this.fallback.binary(op, a, aStrides, b, bStrides, out, outShape);
    checkBinary(a, aStrides, b, bStrides, out, outShape);
    this.#call('binary', [op, compact(a), compact(aStrides), compact(b), compact(bStrides), new Float32Array(out.length), compact(outShape)], [5], [out]);
  }

  affine(x: Float32Array, scale: number, shift: number, out: Float32Array): void {
    f32(x, 'x');
    num(scale, 'scale');
    num(shift, 'shift');
    f32(out, 'out');
    need('out', out.length, x.length);
    this.#call('affine', [compact(x), scale, shift, new Float32Array(out.length)], [3], [out]);
  }

  reduce(op: ReduceOp, x: Float32Array, outer: number, len: number, inner: number, out: Float32Array): void {
    this.fallback.reduce(op, x, outer, len, inner, out);
  }

  softmax(x: Float32Array, rows: number, cols: number, log: boolean, out: Float32Array): void {
    f32(x, 'x');
    const tot = mul(count(rows, 'rows'), count(cols, 'cols'));
    f32(out, 'out');
    need('x', x.length, tot);
    need('out', out.length, tot);
    this.#call('softmax', [compact(x), rows, cols, log, new Float32Array(out.length)], [4], [out]);
  }

  softmaxGrad(y: Float32Array, dy: Float32Array, rows: number, cols: number, log: boolean, dx: Float32Array): void {
    this.fallback.softmaxGrad(y, dy, rows, cols, log, dx);
  }

  logsumexp(x: Float32Array, rows: number, cols: number, out: Float32Array): void {
    f32(x, 'x');
    const tot = mul(count(rows, 'rows'), count(cols, 'cols'));
    f32(out, 'out');
    need('x', x.length, tot);
    need('out', out.length, rows);
    this.#call('logsumexp', [compact(x), rows, cols, new Float32Array(out.length)], [3], [out]);
  }

  rmsNorm(x: Float32Array, w: Float32Array | null, rows: number, cols: number, eps: number, out: Float32Array, rstd: Float32Array): void {
    this.fallback.rmsNorm(x, w, rows, cols, eps, out, rstd);
  }

  rmsNormGrad(x: Float32Array, w: Float32Array | null, rstd: Float32Array, dy: Float32Array, rows: number, cols: number, dx: Float32Array, dw: Float32Array | null): void {
    this.fallback.rmsNormGrad(x, w, rstd, dy, rows, cols, dx, dw);
  }

  layerNorm(x: Float32Array, w: Float32Array | null, b: Float32Array | null, rows: number, cols: number, eps: number, out: Float32Array, mean: Float32Array, rstd: Float32Array): void {
    this.fallback.layerNorm(x, w, b, rows, cols, eps, out, mean, rstd);
  }

  layerNormGrad(
    x: Float32Array, w: Float32Array | null, mean: Float32Array, rstd: Float32Array, dy: Float32Array,
    rows: number, cols: number, dx: Float32Array, dw: Float32Array | null, db: Float32Array | null,
  ): void {
    this.fallback.layerNormGrad(x, w, mean, rstd, dy, rows, cols, dx, dw, db);
  }

  permute(x: Float32Array, shape: Int32Array, perm: Int32Array, out: Float32Array): void {
    this.fallback.permute(x, shape, perm, out);
  }

  gatherRows(src: Float32Array, idx: Int32Array, cols: number, out: Float32Array): void {
    f32(src, 'src');
    i32(idx, 'idx');
    count(cols, 'cols');
    f32(out, 'out');
    const n = mul(idx.length, cols);
    need('out', out.length, n);
    if (cols === 0 || n === 0) return;
    checkIndices(idx, Math.floor(src.length / cols));
    this.#call('gatherRows', [compact(src), compact(idx), cols, out.slice()], [3], [out]);
  }

  scatterAddRows(src: Float32Array, idx: Int32Array, w: Float32Array | null, cols: number, out: Float32Array): void {
    f32(src, 'src');
    i32(idx, 'idx');
    f32(w, 'w', true);
    count(cols, 'cols');
    f32(out, 'out');
    need('src', src.length, mul(idx.length, cols));
    if (w) need('w', w.length, idx.length);
    if (cols === 0) return;
    checkIndices(idx, Math.floor(out.length / cols));
    if (idx.length === 0) return;
    this.#call('scatterAddRows', [compact(src), compact(idx), w ? compact(w) : null, cols, out.slice()], [4], [out]);
  }

  rowDot(a: Float32Array, b: Float32Array, rows: number, cols: number, out: Float32Array): void {
    this.fallback.rowDot(a, b, rows, cols, out);
  }

  gatherRowsScaled(
    g: Float32Array, idx: Int32Array, cols: number, w: Float32Array, out: Float32Array,
    dotWith: Float32Array | null, dot: Float32Array | null,
  ): void {
    this.fallback.gatherRowsScaled(g, idx, cols, w, out, dotWith, dot);
  }

  topKRows(x: Float32Array, rows: number, cols: number, k: number, values: Float32Array, indices: Int32Array): void {
    this.fallback.topKRows(x, rows, cols, k, values, indices);
  }

  loraMixture(
    x: Float32Array, router: Float32Array | null, A: Float32Array, B: Float32Array, scales: Float32Array,
    dims: Int32Array, experts: Int32Array, gates: Float32Array, logits: Float32Array | null, y: Float32Array,
  ): void {
    this.fallback.loraMixture(x, router, A, B, scales, dims, experts, gates, logits, y);
  }

  rotary(
    x: Float32Array, out: Float32Array, cos: Float32Array, sin: Float32Array,
    rows: number, seqLen: number, heads: number, dim: number, startPos: number, inverse: boolean,
  ): void {
    this.fallback.rotary(x, out, cos, sin, rows, seqLen, heads, dim, startPos, inverse);
  }

  sumSquares(x: Float32Array): number {
    return this.fallback.sumSquares(x);
  }

  adamw(
    p: Float32Array, grad: Float32Array, m: Float32Array, v: Float32Array, vmax: Float32Array | null,
    h: { beta1: number; beta2: number; stepSize: number; bc2Sqrt: number; eps: number; decay: number; sign: number },
  ): void {
    this.fallback.adamw(p, grad, m, v, vmax, h);
  }

  gatedAct(act: Activation, a: Float32Array, b: Float32Array, out: Float32Array): void {
    if (!GPU_GATED.has(act)) return this.fallback.gatedAct(act, a, b, out);
    f32(a, 'a');
    f32(b, 'b');
    f32(out, 'out');
    need('b', b.length, a.length);
    need('out', out.length, a.length);
    this.#call('gatedAct', [act, compact(a), compact(b), new Float32Array(out.length)], [3], [out]);
  }

  gatedActGrad(act: Activation, a: Float32Array, b: Float32Array, dy: Float32Array, da: Float32Array, db: Float32Array): void {
    this.fallback.gatedActGrad(act, a, b, dy, da, db);
  }

  gemmGated(mode: GatedGemmMode, act: Activation, buffers: readonly Float32Array[], params: Int32Array): void {
    // The products on the GPU's grouped GEMM, the gated epilogue through this backend's own kernels.
    gemmGatedComposed(this, mode, act, buffers, params);
  }
}

/**
 * Start the GPU worker, acquire an adapter and device there, and return the synchronous WebGPU
 * backend. Call it inside a Web Worker of a cross-origin-isolated page (see the module comment);
 * throws with the reason otherwise or when no adapter exists.
 */
export async function createWebGpuBackend(opts: WebGpuBackendOptions = {}): Promise<WebGpuBackend> {
  const problem = webgpuBackendContextProblem();
  if (problem) throw new Error(`switchyard: ${problem}`);
  const W = (globalThis as unknown as { Worker: new (url: URL, o: { type: 'module'; name: string }) => GpuWorker }).Worker;
  const url = new URL(opts.workerUrl ?? './webgpu-worker.js', import.meta.url);
  const worker = new W(url, { type: 'module', name: 'switchyard-webgpu' });
  const ctrl = new SharedArrayBuffer(8);
  const result = new SharedArrayBuffer(1 << 16);
  let adapter: string;
  try {
    adapter = await new Promise<string>((resolve, reject) => {
      worker.addEventListener('message', (ev) => {
        const d = ev.data as { ready?: boolean; adapter?: string; error?: string };
        if (d.ready) resolve(d.adapter ?? 'unknown adapter');
        else if (d.error) reject(new Error(`switchyard: WebGPU unavailable: ${d.error}`));
      });
      worker.addEventListener('error', (ev) => reject(new Error(`switchyard: WebGPU worker failed to start (${url.href}): ${ev.message ?? 'error'}`)));
      worker.postMessage({ ctrl, result });
    });
  } catch (e) {
    worker.terminate();
    throw e;
  }
  const fallback = opts.fallback ?? (await createWasmBackend(opts.wasm));
  return new WebGpuBackend(worker, ctrl, result, fallback, adapter, opts.timeoutMs ?? 120_000);
}
