/**
 * Which engine backend the playground's Worker trains on. Until the browser entry's backend
 * selection (WebGPU, else wasm) lands, this is the TypeScript reference backend; switching is the
 * one line in selectBackend().
 */
import { setBackend } from '../../src/backend/index.js';
import { ReferenceBackend } from '../../src/backend/reference.js';

/** Activate the backend and return its name for the status line. */
export async function selectBackend(): Promise<string> {
  setBackend(new ReferenceBackend());
  return 'TypeScript reference';
}
