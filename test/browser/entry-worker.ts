/** Worker side of the browser-entry test (see entry-page.ts). */
import { entryCheck } from './entry-check.js';

(globalThis as unknown as { postMessage(m: unknown): void }).postMessage(await entryCheck('worker'));
