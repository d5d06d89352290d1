/**
 * Page for the browser-entry test: ?where=page runs the entry check on the main thread,
 * ?where=worker in a module worker (where the synchronous WebGPU backend is allowed).
 */
import { entryCheck, type EntryReport } from './entry-check.js';

declare global {
  interface Window {
    __entry?: EntryReport;
  }
}

async function main(): Promise<EntryReport> {
  if (new URLSearchParams(location.search).get('where') !== 'worker') return entryCheck('page');
  const w = new Worker(new URL('./entry-worker.js', import.meta.url), { type: 'module' });
  const r = await new Promise<EntryReport>((resolve) => {
    w.onmessage = (ev: MessageEvent<EntryReport>) => resolve(ev.data);
    w.onerror = (ev) => resolve({ kind: 'none', description: '', active: '', maxRelErr: NaN, context: 'worker', error: ev.message });
  });
  w.terminate();
  return r;
}

main().then((r) => (window.__entry = r));
