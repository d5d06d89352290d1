/**
 * A small pool of Float32Array buffers for large, short-lived intermediates (the experts' hidden
 * activations, attention probabilities, and backward-pass gradients, which runBackward returns
 * here as soon as the rule that consumed them has run). Fresh large typed arrays cost a zero-fill plus a page fault
 * per 4 KiB on first touch; reusing a released buffer costs neither. Pooled buffers hold stale
 * values: a caller must overwrite every element it reads.
 */
import { allocFloat32, ownsItsBuffer } from './alloc.js';

const pool = new Map<number, Float32Array[]>();
let pooledBytes = 0;
/** Upper bound on memory parked in the pool. */
const MAX_POOLED_BYTES = 512 * 1024 * 1024;
/** Below this size a plain allocation is cheap enough. */
const MIN_POOLED_LENGTH = 1 << 16;

let enabled = true;

/**
 * Turn pooling off (every acquire allocates, every release is dropped) or on again. For tests that
 * check pooled results against unpooled ones.
 */
export function setScratchPooling(on: boolean): void {
  enabled = on;
  if (!on) clearScratch();
}

/** Fill every parked buffer with `value` (tests: stale contents must never be read). */
export function poisonScratch(value: number): void {
  for (const list of pool.values()) for (const buf of list) buf.fill(value);
}

/** A buffer of exactly `length` floats with unspecified contents (zeroed only when freshly allocated). */
export function acquireScratch(length: number): Float32Array {
  return takePooled(length) ?? allocFloat32(length);
}

/**
 * A buffer of exactly `length` zeros: a pooled one is cleared, a fresh one is zero already (the
 * allocator zeroes it, so a second fill would write every page twice).
 */
export function acquireZeroed(length: number): Float32Array {
  return takePooled(length)?.fill(0) ?? allocFloat32(length);
}

/** A parked buffer of exactly `length` floats, taken out of the pool, if there is one. */
function takePooled(length: number): Float32Array | undefined {
  if (!enabled || length < MIN_POOLED_LENGTH) return undefined;
  const buf = pool.get(length)?.pop();
  if (buf) pooledBytes -= buf.byteLength;
  return buf;
}

/** Return buffers that no live tensor references any more. */
export function releaseScratch(...bufs: Array<Float32Array | null | undefined>): void {
  for (const buf of bufs) {
    if (!enabled || !buf || buf.length < MIN_POOLED_LENGTH || pooledBytes + buf.byteLength > MAX_POOLED_BYTES) continue;
    // Only arrays that own their memory: a partial view shares it with tensors the pool knows nothing about.
    if (!ownsItsBuffer(buf)) continue;
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
