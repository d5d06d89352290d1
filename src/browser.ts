/// <reference lib="dom" />
/**
 * Switchyard's browser entry: what `import { ... } from 'switchyard'` resolves to in a bundler
 * (package.json "exports" → "browser" condition). The engine (tensors, autograd, ops, MoE layers,
 * nn, optimizers) plus the two browser backends, and `selectBrowserBackend()` to pick one.
 *
 * Picking a backend:
 *   const { kind, description } = await selectBrowserBackend();   // and the engine now runs on it
 *   - 'webgpu' when a WebGPU adapter exists AND this code runs in a Web Worker of a
 *     cross-origin-isolated page (COOP: same-origin, COEP: require-corp). The engine's kernels are
 *     synchronous and WebGPU readback is not, so WebGpuBackend runs the GPU in its own worker and
 *     blocks this worker on Atomics.wait, which the main thread may not do (see backend/webgpu.ts).
 *     Kernels without WGSL run on wasm.
 *   - 'wasm' otherwise: the C kernels compiled to WebAssembly (SIMD128), multi-threaded when the
 *     page is cross-origin isolated (SharedArrayBuffer), one thread when not.
 *   Pass { prefer: 'wasm' } to skip WebGPU, { wasm: { threads: n } } to size the wasm pool. The
 *   returned `description` says which backend was chosen and why (also logged unless quiet).
 *   On the main thread, the async WGSL kernels (`createWebGpuKernels`) are usable directly.
 *
 * Hosting: wasm.js loads switchyard.wasm / switchyard-threads.wasm and wasm-worker.js, and
 * webgpu.js loads webgpu-worker.js, all next to themselves in dist/backend/ (new URL(...,
 * import.meta.url)); if a bundler moves them, pass wasmUrl / workerUrl explicitly.
 */
import { setBackend } from './backend/index.js';
import type { Backend } from './backend/interface.js';
import { ReferenceBackend } from './backend/reference.js';
import { createWasmBackend, type WasmBackendOptions } from './backend/wasm.js';
import { createWebGpuBackend, webgpuBackendContextProblem, type WebGpuBackendOptions } from './backend/webgpu.js';
import { webgpuUnavailableReason } from './backend/webgpu-kernels.js';

export * from './tensor/index.js';
export * from './ops/index.js';
export * from './backend/index.js';
export * from './errors.js';
export * from './random.js';
export * from './moe/index.js';
export * from './nn/index.js';
export * from './optim/index.js';
export { ReferenceBackend } from './backend/reference.js';
export { WasmBackend, createWasmBackend, wasmThreadsAvailable, type WasmBackendOptions } from './backend/wasm.js';
export { WebGpuBackend, createWebGpuBackend, webgpuBackendContextProblem, type WebGpuBackendOptions } from './backend/webgpu.js';
export { WebGpuKernels, createWebGpuKernels, webgpuUnavailableReason } from './backend/webgpu-kernels.js';

// getBackend() reads process.env in Node; in a page there is no process, so start on the
// reference backend until selectBrowserBackend() installs a faster one.
if (typeof (globalThis as { process?: unknown }).process === 'undefined') setBackend(new ReferenceBackend());

/** Options for `selectBrowserBackend`. */
export interface SelectBrowserBackendOptions {
  /** 'auto' (default): WebGPU when possible, else wasm. 'wasm': never WebGPU. */
  prefer?: 'auto' | 'wasm';
  /** Options for the wasm backend (also WebGPU's fallback). */
  wasm?: WasmBackendOptions;
  /** Options for the WebGPU backend. */
  webgpu?: Omit<WebGpuBackendOptions, 'wasm'>;
  /** Make the chosen backend the engine's active backend (default true). */
  activate?: boolean;
  /** Do not log the choice with console.info (default false). */
  quiet?: boolean;
}

/** The backend `selectBrowserBackend` chose, and a one-line human-readable reason. */
export interface BrowserBackendChoice {
  kind: 'webgpu' | 'wasm';
  backend: Backend;
  /** e.g. "webgpu (google swiftshader); other kernels on wasm, 1 thread(s)". */
  description: string;
}

/**
 * Pick the browser backend: WebGPU when an adapter exists and the context allows the synchronous
 * WebGPU backend (a worker of a cross-origin-isolated page), wasm otherwise. See the module
 * comment for the rules; `description` says which was chosen and why.
 */
export async function selectBrowserBackend(opts: SelectBrowserBackendOptions = {}): Promise<BrowserBackendChoice> {
  let why = 'WebGPU not requested';
  if ((opts.prefer ?? 'auto') === 'auto') {
    const noAdapter = await webgpuUnavailableReason();
    const context = noAdapter ? null : webgpuBackendContextProblem();
    if (!noAdapter && !context) {
      try {
        const be = await createWebGpuBackend({ ...opts.webgpu, wasm: opts.wasm });
        return finish({ kind: 'webgpu', backend: be, description: `webgpu (${be.adapterName}); other kernels on wasm, ${be.threads} thread(s)` }, opts);
      } catch (e) {
        why = `WebGPU failed: ${e instanceof Error ? e.message : String(e)}`;
      }
    } else why = noAdapter ?? `a WebGPU adapter exists, but ${context}`;
  }
  const be = await createWasmBackend(opts.wasm);
  return finish({ kind: 'wasm', backend: be, description: `wasm (${be.threads} thread(s)${be.threaded ? ', shared memory' : ''}): ${why}` }, opts);
}

function finish(choice: BrowserBackendChoice, opts: SelectBrowserBackendOptions): BrowserBackendChoice {
  if (opts.activate ?? true) setBackend(choice.backend);
  if (!opts.quiet) console.info(`switchyard: backend ${choice.description}`);
  return choice;
}
