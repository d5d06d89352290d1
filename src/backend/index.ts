import type { Backend } from './interface.js';
import { ReferenceBackend } from './reference.js';
import { loadNativeBackend, nativeLoadError } from './native.js';

export type { Backend } from './interface.js';

let current: Backend | null = null;
let warned = false;

/**
 * The active backend. Resolved once: env SWITCHYARD_BACKEND ('native' | 'reference') if set,
 * else the native addon when it loads, else the reference backend (with one warning).
 */
export function getBackend(): Backend {
  if (current) return current;
  const wanted = process.env.SWITCHYARD_BACKEND;
  if (wanted === 'reference') {
    current = new ReferenceBackend();
    return current;
  }
  const native = loadNativeBackend();
  if (native) {
    current = native;
    return current;
  }
  if (!warned) {
    warned = true;
    const why = nativeLoadError() ?? 'not built';
    process.emitWarning(`switchyard: native backend unavailable (${why}); using the TypeScript reference backend`);
  }
  current = new ReferenceBackend();
  return current;
}

/** Select the backend: 'reference', 'native' (throws if the addon is unavailable) or an instance. */
export function setBackend(backend: 'reference' | 'native' | Backend): Backend {
  if (backend === 'reference') current = new ReferenceBackend();
  else if (backend === 'native') {
    const native = loadNativeBackend();
    if (!native) throw new Error(`switchyard: native backend unavailable: ${nativeLoadError() ?? 'not built'}`);
    current = native;
  } else current = backend;
  return current;
}

/** Run fn with a backend temporarily active (tests parameterised over backends). */
export function withBackend<T>(backend: Backend, fn: () => T): T {
  const prev = current;
  current = backend;
  try {
    return fn();
  } finally {
    current = prev;
  }
}

/** Backends available in this process: always 'reference', plus 'native' when the addon loads. */
export function availableBackends(): Backend[] {
  const list: Backend[] = [new ReferenceBackend()];
  const native = loadNativeBackend();
  if (native) list.push(native);
  return list;
}
