/**
 * Browser page for test/browser-backends.test.ts: runs the op suite (op-suite.ts) against the
 * backend named in the query string and leaves the results on window.__suite.
 *   ?backend=wasm&threads=N   wasm backend on this page's main thread
 *   ?backend=webgpu           WebGPU backend, which must live in a worker (suite-worker.ts)
 *   ?probe=1                  only report what this page offers (isolation, WebGPU adapter)
 */
import { createWasmBackend, wasmThreadsAvailable } from '../../src/backend/wasm.js';
import { webgpuUnavailableReason } from '../../src/backend/webgpu-kernels.js';
import { runAll, type TestResult } from './mini-test.js';
import { registerOpSuite } from './op-suite.js';

/** What the page reports back to the Node side. */
export interface SuiteReport {
  backend: string;
  threads: number;
  isolated: boolean;
  adapter?: string | null;
  /** WebGPU only: kernel calls the GPU served, per op. */
  gpuCalls?: Record<string, number>;
  results: TestResult[];
  error?: string;
}

declare global {
  interface Window {
    __suite?: SuiteReport;
    __probe?: { isolated: boolean; threadsAvailable: boolean; webgpu: string | null; cores: number };
  }
}

async function main(): Promise<void> {
  const q = new URLSearchParams(location.search);
  if (q.get('probe')) {
    window.__probe = { isolated: crossOriginIsolated, threadsAvailable: wasmThreadsAvailable(), webgpu: await webgpuUnavailableReason(), cores: navigator.hardwareConcurrency };
    return;
  }
  const backend = q.get('backend') ?? 'wasm';
  const filter = q.get('filter') ? new RegExp(q.get('filter')!) : undefined;
  if (backend === 'wasm') {
    const threads = Number(q.get('threads') ?? '1');
    const be = await createWasmBackend({ threads });
    registerOpSuite(be, [...new Set([1, threads])]);
    const results = await runAll(filter);
    window.__suite = { backend: be.name, threads: be.maxThreads, isolated: crossOriginIsolated, results };
    be.dispose();
    return;
  }
  const worker = new Worker(new URL('./suite-worker.js', import.meta.url), { type: 'module' });
  window.__suite = await new Promise<SuiteReport>((resolve) => {
    worker.onmessage = (ev: MessageEvent<SuiteReport>) => resolve(ev.data);
    worker.onerror = (ev) => resolve({ backend, threads: 0, isolated: crossOriginIsolated, results: [], error: `worker error: ${ev.message}` });
    worker.postMessage({ backend, filter: q.get('filter') });
  });
  worker.terminate();
}

main().catch((e: unknown) => {
  window.__suite = { backend: 'unknown', threads: 0, isolated: crossOriginIsolated, results: [], error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) };
});
