/// <reference lib="dom" />
/**
 * GPU service worker for `WebGpuBackend` (webgpu.ts). It owns the GPUDevice and runs the async
 * WGSL kernels (webgpu-kernels.ts) for requests from the engine's worker, which blocks on
 * Atomics.wait meanwhile. Results go back through a SharedArrayBuffer, so the blocked caller can
 * read them without its event loop: ctrl[0] = 1 (done) or 2 (error: ctrl[1] UTF-16 units of the
 * message in the result buffer), then Atomics.notify.
 */
import { createWebGpuKernels, type WebGpuKernels } from './webgpu-kernels.js';

/** A kernel request: `args` as the kernel takes them, `outputs` the arrays to send back in order. */
export interface GpuRequest {
  op: 'gemm' | 'unary' | 'gatedAct' | 'affine' | 'binary' | 'softmax' | 'logsumexp' | 'gatherRows' | 'scatterAddRows';
  args: unknown[];
  /** For gemm: the written buffer indices; otherwise the argument positions of the outputs. */
  outputs: number[];
  /** A new (bigger) result buffer, when the previous one is too small. */
  result?: SharedArrayBuffer;
}

/** First message: the control words shared with the caller. */
export interface GpuInit {
  ctrl: SharedArrayBuffer;
  result: SharedArrayBuffer;
}

interface Scope {
  onmessage: ((ev: MessageEvent<GpuInit | GpuRequest>) => void) | null;
  postMessage(msg: unknown): void;
}
const scope = globalThis as unknown as Scope;

let kernels: WebGpuKernels | null = null;
let ctrl: Int32Array;
let result: SharedArrayBuffer;
let queue: Promise<void> = Promise.resolve();

function finish(state: 1 | 2, message = ''): void {
  if (state === 2) {
    const units = new Uint16Array(result, 0, Math.min(message.length, result.byteLength >> 1));
    for (let i = 0; i < units.length; i++) units[i] = message.charCodeAt(i);
    Atomics.store(ctrl, 1, units.length);
  }
  Atomics.store(ctrl, 0, state);
  Atomics.notify(ctrl, 0);
}

async function serve(req: GpuRequest): Promise<void> {
  if (req.result) result = req.result;
  const k = kernels!;
  const a = req.args;
  try {
    let outs: ArrayBufferView[];
    if (req.op === 'gemm') {
      const buffers = a[0] as Float32Array[];
      await k.gemm(buffers, a[1] as Int32Array);
      outs = req.outputs.map((i) => buffers[i]);
    } else {
      const fn = (k as unknown as Record<string, (...args: unknown[]) => Promise<void>>)[req.op];
      await fn.apply(k, a);
      outs = req.outputs.map((i) => a[i] as ArrayBufferView);
    }
    const bytes = new Uint8Array(result);
    let off = 0;
    for (const o of outs) {
      bytes.set(new Uint8Array(o.buffer, o.byteOffset, o.byteLength), off);
      off += o.byteLength;
    }
    finish(1);
  } catch (e) {
    finish(2, e instanceof Error ? `${e.name}: ${e.message}` : String(e));
  }
}

scope.onmessage = (ev: MessageEvent<GpuInit | GpuRequest>): void => {
  const d = ev.data;
  if ('ctrl' in d) {
    ctrl = new Int32Array(d.ctrl);
    result = d.result;
    createWebGpuKernels().then(
      (k) => {
        kernels = k;
        scope.postMessage({ ready: true, adapter: k.adapterName });
      },
      (e: unknown) => scope.postMessage({ error: e instanceof Error ? e.message : String(e) }),
    );
    return;
  }
  queue = queue.then(() => serve(d));
};
