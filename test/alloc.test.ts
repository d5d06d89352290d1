// Page-aligned allocation of large Float32Arrays (src/backend/alloc.ts) and the native addon's
// alignOffset, which tells JavaScript where a buffer's memory is aligned.
import { createRequire } from 'node:module';
import { afterAll, describe, expect, it } from 'vitest';

import { ALIGN_BYTES, allocFloat32, ownsItsBuffer, setBufferAligner } from '../src/backend/alloc.js';
import { loadNativeBackend, nativeAddonPath } from '../src/backend/native.js';
import { acquireScratch, acquireZeroed, clearScratch, releaseScratch } from '../src/backend/scratch.js';
import { Tensor } from '../src/tensor/tensor.js';

const native = loadNativeBackend();
type Aligner = { alignOffset(buffer: unknown, align: number): number };
const addon: Aligner | null = native ? (createRequire(import.meta.url)(nativeAddonPath()) as Aligner) : null;
const restore = (): void => setBufferAligner(addon ? (b, a) => addon.alignOffset(b, a) : null);
afterAll(restore);

const BIG = 1 << 16;

describe('allocFloat32 with a given aligner', () => {
  it('returns a zeroed view at the offset the aligner names, for large lengths only', () => {
    setBufferAligner(() => 12);
    const a = allocFloat32(BIG);
    expect(a.length).toBe(BIG);
    expect(a.byteOffset).toBe(12);
    expect(a.buffer.byteLength).toBe(BIG * 4 + ALIGN_BYTES);
    expect(a.every((v) => v === 0)).toBe(true);
    const small = allocFloat32(BIG - 1);
    expect(small.byteOffset).toBe(0);
    expect(small.buffer.byteLength).toBe((BIG - 1) * 4);
    restore();
  });

  it('falls back to a plain array when the aligner answers nonsense', () => {
    for (const bad of [-4, 3, ALIGN_BYTES, Number.NaN]) {
      setBufferAligner(() => bad);
      const a = allocFloat32(BIG);
      expect(a.byteOffset, `offset ${bad}`).toBe(0);
      expect(a.buffer.byteLength).toBe(BIG * 4);
    }
    restore();
  });

  it('ownsItsBuffer: whole buffers and aligned views yes, other views no', () => {
    setBufferAligner(() => 64);
    const aligned = allocFloat32(BIG);
    expect(ownsItsBuffer(aligned)).toBe(true);
    expect(ownsItsBuffer(new Float32Array(10))).toBe(true);
    expect(ownsItsBuffer(aligned.subarray(1))).toBe(false);
    expect(ownsItsBuffer(new Float32Array(aligned.buffer, 64, BIG))).toBe(false); // same memory, not ours
    expect(ownsItsBuffer(new Float32Array(new SharedArrayBuffer(16)))).toBe(false);
    restore();
  });

  it('the scratch pool recycles aligned views and zeroes them for acquireZeroed', () => {
    setBufferAligner(() => 64);
    clearScratch();
    const a = acquireScratch(BIG);
    expect(a.byteOffset).toBe(64);
    a.fill(7);
    releaseScratch(a);
    const b = acquireZeroed(BIG);
    expect(b).toBe(a);
    expect(b.every((v) => v === 0)).toBe(true);
    releaseScratch(b.subarray(0, BIG - 4)); // a partial view is never pooled
    expect(acquireScratch(BIG - 4)).not.toBe(b);
    clearScratch();
    restore();
  });
});

describe.runIf(addon)('native alignOffset', () => {
  it('names an offset consistent across alignments (so it comes from the real address)', () => {
    for (let i = 0; i < 8; i++) {
      const buf = new ArrayBuffer(BIG * 4 + i * 40);
      const o4096 = addon!.alignOffset(buf, 4096), o64 = addon!.alignOffset(buf, 64), o1 = addon!.alignOffset(buf, 1);
      expect(o4096).toBeGreaterThanOrEqual(0);
      expect(o4096).toBeLessThan(4096);
      expect(o64).toBe(o4096 % 64);
      expect(o1).toBe(0);
    }
  });

  it('rejects a non-ArrayBuffer and an alignment that is not a power of two, naming the argument', () => {
    expect(() => addon!.alignOffset(new Float32Array(4), 64)).toThrow(/buffer must be an ArrayBuffer/);
    expect(() => addon!.alignOffset(new ArrayBuffer(8), 48)).toThrow(/align must be a power of two.*48/);
    expect(() => addon!.alignOffset(new ArrayBuffer(8), 1 << 17)).toThrow(RangeError);
  });

  it('large tensors and scratch buffers start on a page boundary once the native backend is loaded', () => {
    restore();
    for (const a of [Tensor.zeros([512, 256]).f32, Tensor.randn([300, 1024]).f32, acquireScratch(BIG + 5)]) {
      expect(a.byteOffset).toBe(addon!.alignOffset(a.buffer as ArrayBuffer, ALIGN_BYTES));
    }
  });
});
