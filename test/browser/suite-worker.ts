/**
 * Worker side of the WebGPU op-suite run: WebGpuBackend blocks on Atomics.wait, which only a
 * worker may do, so the suite runs here and posts its results to the page.
 */
import { createWebGpuBackend } from '../../src/backend/webgpu.js';
import { runAll } from './mini-test.js';
import { registerOpSuite } from './op-suite.js';
import type { SuiteReport } from './page.js';

const scope = globalThis as unknown as { onmessage: ((ev: MessageEvent<{ backend: string; filter: string | null }>) => void) | null; postMessage(m: SuiteReport): void };

scope.onmessage = async (ev) => {
  const filter = ev.data.filter ? new RegExp(ev.data.filter) : undefined;
  try {
    const be = await createWebGpuBackend({ wasm: { threads: 1 } });
    registerOpSuite(be, [1]);
    const results = await runAll(filter);
    scope.postMessage({ backend: be.name, threads: be.threads, isolated: crossOriginIsolated, adapter: be.adapterName, gpuCalls: { ...be.gpuCalls }, results });
    be.dispose();
  } catch (e) {
    scope.postMessage({ backend: ev.data.backend, threads: 0, isolated: crossOriginIsolated, results: [], error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
  }
};
