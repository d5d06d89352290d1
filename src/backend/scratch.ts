/**
 * A small pool of Float32Array buffers for large, short-lived intermediates (the experts' hidden
 * activations and their gradients). Fresh large typed arrays cost a zero-fill plus a page fault
 * per 4 KiB on first touch; reusing a released buffer costs neither. Pooled buffers hold stale
 * values: a caller must overwrite every element it reads.
 */
const pool = new Map<number, Float32Array[]>();
let pooledBytes = 0;
/** Upper bound on memory parked in the pool. */
const MAX_POOLED_BYTES = 512 * 1024 * 1024;
/** Below this size a plain allocation is cheap enough. */
const MIN_POOLED_LENGTH = 1 << 16;

/** A buffer of exactly `length` floats with unspecified contents (zeroed only when freshly allocated). */
export function acquireScratch(length: number): Float32Array {
  if (length >= MIN_POOLED_LENGTH) {
    const list = pool.get(length);
    const buf = list?.pop();
    if (buf) {
      pooledBytes -= buf.byteLength;
      return buf;
    }
  }
  return new Float32Array(length);
}

/** Return buffers that no live tensor references any more. */
export function releaseScratch(...bufs: Array<Float32Array | null | undefined>): void {
  for (const buf of bufs) {
    if (!buf || buf.length < MIN_POOLED_LENGTH || pooledBytes + buf.byteLength > MAX_POOLED_BYTES) continue;
    let list = pool.get(buf.length);
    if (!list) pool.set(buf.length, (list = []));
    if (list.includes(buf)) continue;
    list.push(buf);
    pooledBytes += buf.byteLength;
  }
}

/** Drop every pooled buffer (tests, memory pressure). */
export function clearScratch(): void {
  pool.clear();
  pooledBytes = 0;
}
