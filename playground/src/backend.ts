/**
 * Which engine backend the playground's Worker trains on: the library's browser entry picks it
 * (WebGPU when an adapter exists, wasm otherwise; see src/browser.ts), or the user asks for wasm or
 * the TypeScript reference backend. If the chosen backend cannot start, training goes on with the
 * reference backend and the status line says why.
 */
import { getBackend, ReferenceBackend, selectBrowserBackend, setBackend, type Backend } from '../../src/browser.js';
import type { BackendChoice } from './settings.js';

/** Stop the previous backend's worker threads once another one is active. */
function disposePrevious(previous: Backend): void {
  if (previous !== getBackend()) (previous as Backend & { dispose?(): void }).dispose?.();
}

/** Activate the backend and return its description for the status line. */
export async function selectBackend(choice: BackendChoice): Promise<string> {
  const previous = getBackend();
  let description: string;
  if (choice === 'reference') {
    setBackend(new ReferenceBackend());
    description = 'TypeScript reference';
  } else {
    try {
      description = (await selectBrowserBackend({ prefer: choice, quiet: true })).description;
    } catch (e) {
      setBackend(new ReferenceBackend());
      description = `TypeScript reference (${choice} unavailable: ${(e as Error).message})`;
    }
  }
  disposePrevious(previous);
  return description;
}
