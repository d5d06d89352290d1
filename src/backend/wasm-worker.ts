/// <reference lib="dom" />
/**
 * Web Worker body for the threaded wasm backend (see native/wasm/pool_wasm.c): instantiate the same
 * compiled module on the page's shared memory, take the stack and TLS block the main thread carved
 * out for this thread, report ready, then enter the C worker loop, which never returns (the thread
 * waits on the job generation word with memory.atomic.wait32 between kernels).
 *
 * Kept free of imports so it can be loaded as-is as a module worker next to wasm.js.
 */

/** Message the main thread sends to start worker `tid`. */
export interface WasmWorkerStart {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  tid: number;
  stackTop: number;
  tlsBase: number;
}

interface WorkerExports {
  __stack_pointer: WebAssembly.Global;
  __wasm_init_tls(base: number): void;
  sy_wasm_worker(tid: number): void;
  sy_wasm_worker_failed(): void;
}

interface WorkerScope {
  onmessage: ((ev: MessageEvent<WasmWorkerStart>) => void) | null;
  postMessage(msg: unknown): void;
}

const scope = globalThis as unknown as WorkerScope;

scope.onmessage = (ev: MessageEvent<WasmWorkerStart>): void => {
  const { module, memory, tid, stackTop, tlsBase } = ev.data;
  let exports: WorkerExports;
  try {
    const instance = new WebAssembly.Instance(module, { env: { memory, log: Math.log, pow: Math.pow } });
    exports = instance.exports as unknown as WorkerExports;
    exports.__stack_pointer.value = stackTop;
    exports.__wasm_init_tls(tlsBase);
  } catch (e) {
    scope.postMessage({ tid, error: e instanceof Error ? e.message : String(e) });
    return;
  }
  scope.postMessage({ tid, ready: true });
  try {
    exports.sy_wasm_worker(tid); // never returns unless a kernel traps on this thread
  } catch (e) {
    // tell the pool, so the calling thread traps instead of waiting forever for this worker's items
    exports.sy_wasm_worker_failed();
    throw e;
  }
};
