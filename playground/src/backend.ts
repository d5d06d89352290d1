/**
 * Which engine backend the playground's Worker trains on: the library's browser entry picks it
 * (WebGPU when an adapter exists, wasm otherwise; see src/browser.ts), or the user asks for wasm or
 * the TypeScript reference backend. If the chosen backend cannot start, training goes on with the
 * reference backend and the status line says why.
 */
import { ReferenceBackend, selectBrowserBackend, setBackend } from '../../src/browser.js';
import type { BackendChoice } from './settings.js';

/** Activate the backend and return its description for the status line. */
export async function selectBackend(choice: BackendChoice): Promise<string> {
  if (choice === 'reference') {
    setBackend(new ReferenceBackend());
    return 'TypeScript reference';
  }
  try {
    return (await selectBrowserBackend({ prefer: choice, quiet: true })).description;
  } catch (e) {
    setBackend(new ReferenceBackend());
    return `TypeScript reference (${choice} unavailable: ${(e as Error).message})`;
  }
}
