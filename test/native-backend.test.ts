/**
 * NativeBackend vs ReferenceBackend (the oracle), kernel by kernel, on every ISA path this CPU
 * supports (avx512 / avx2 / scalar) and on 1 thread and the default pool.
 *
 * If the addon is not built the suite is skipped, unless SWITCHYARD_REQUIRE_NATIVE=1, in which
 * case it fails. No timing assertions.
 */
import { afterAll, describe, expect, it } from 'vitest';

import { GEMM_TRANS_A, GEMM_TRANS_B } from '../src/backend/interface.js';
import { loadNativeBackend, nativeLoadError, type NativeBackend } from '../src/backend/native.js';
import { ReferenceBackend } from '../src/backend/reference.js';
import {
  adamwHyper,
  adamwState,
  bitsEqual,
  elementwiseTests,
  gatedDeterminismCase,
  gemmGatedTests,
  gemmTests,
  groupedCase,
  indexingTests,
  optimizerTests,
  randArray,
  rowwiseTests,
  sameBits,
  useHarness,
  wideArray,
  type TestHarness,
} from './browser/op-suite.js';

// The kernel case families live in the browser op suite (framework-free); register them with vitest.
useHarness({ describe, it, expect } as unknown as TestHarness);

const native = loadNativeBackend();
const requireNative = process.env.SWITCHYARD_REQUIRE_NATIVE === '1';
const ref = new ReferenceBackend();

describe('native addon availability', () => {
  it.runIf(requireNative)('loads (SWITCHYARD_REQUIRE_NATIVE=1)', () => {
    expect(native, `native backend failed to load: ${nativeLoadError()}`).not.toBeNull();
  });
  it.runIf(!requireNative && !native)('is not built: native tests skipped', () => {
    expect(nativeLoadError()).not.toBeNull();
  });
});

// ---------------------------------------------------------------------------------------------

const d = native ? describe : describe.skip;

d('NativeBackend', () => {
  const nb = native as NativeBackend;
  const originalIsa = native ? nb.isa : 'scalar';
  const originalThreads = native ? nb.threads : 1;
  afterAll(() => {
    if (!native) return;
    nb.setIsa(originalIsa as 'avx512' | 'avx2' | 'scalar');
    nb.setThreads(originalThreads);
  });

  it('reports its name, threads and ISA', () => {
    expect(nb.name).toBe('native');
    expect(nb.threads).toBeGreaterThanOrEqual(1);
    expect(['avx512', 'avx2', 'scalar']).toContain(nb.isa);
  });

  const isas = (['avx512', 'avx2', 'scalar'] as const).filter((isa) => {
    if (!native) return false;
    const ok = nb.setIsa(isa);
    nb.setIsa(originalIsa as 'avx512' | 'avx2' | 'scalar');
    return ok;
  });
  const threadCounts = native ? [...new Set([1, originalThreads])] : [1];

  for (const isa of isas) {
    for (const threads of threadCounts) {
      describe(`${isa}, ${threads} thread(s)`, () => {
        const setup = (): void => {
          nb.setIsa(isa);
          nb.setThreads(threads);
        };
        gemmTests(nb, setup);
        gemmGatedTests(nb, setup);
        elementwiseTests(nb, setup);
        rowwiseTests(nb, setup);
        indexingTests(nb, setup);
        optimizerTests(nb, setup);
      });
    }
  }

  describe('determinism', () => {
    it('gemmGated results do not depend on the thread count (every ISA path)', () => {
      for (const isa of isas) {
        nb.setIsa(isa);
        const outs = [1, 2, 3].map((t) => {
          nb.setThreads(t);
          return gatedDeterminismCase(nb);
        });
        outs.slice(1).forEach((o) => o.forEach((arr, i) => expect(bitsEqual(arr, outs[0][i]), `${isa}: output ${i}`).toBe(true)));
      }
      nb.setIsa(originalIsa as 'avx512' | 'avx2' | 'scalar');
      nb.setThreads(originalThreads);
    });

    it('gemm, softmax, norms and scatter give bit-identical results on repeated calls', () => {
      nb.setIsa(originalIsa as 'avx512' | 'avx2' | 'scalar');
      nb.setThreads(originalThreads);
      const run = (): Float32Array[] => {
        const m = 300, n = 520, k = 700;
        const A = randArray(m * k, 1), B = randArray(k * n, 2), C = new Float32Array(m * n);
        nb.gemm([A, B, C], new Int32Array([0, 0, k, 1, 0, n, 2, 0, n, m, n, k, 0]));
        const grouped = groupedCase(16, 48, 96, 40, 5);
        nb.gemm(grouped.buffers, grouped.params);
        const x = randArray(64 * 4096, 3, -5, 5);
        const sm = new Float32Array(x.length);
        nb.softmax(x, 64, 4096, false, sm);
        const ln = new Float32Array(x.length), mean = new Float32Array(64), rstd = new Float32Array(64);
        const w = randArray(4096, 4), b = randArray(4096, 5);
        nb.layerNorm(x, w, b, 64, 4096, 1e-5, ln, mean, rstd);
        const dx = new Float32Array(x.length), dw = new Float32Array(4096), db = new Float32Array(4096);
        nb.layerNormGrad(x, w, mean, rstd, sm, 64, 4096, dx, dw, db);
        const idx = new Int32Array(5000).map((_, i) => (i * 7919) % 37);
        const out = new Float32Array(37 * 300);
        nb.scatterAddRows(randArray(5000 * 300, 6), idx, randArray(5000, 7), 300, out);
        return [C, grouped.buffers[2], sm, ln, dx, dw, db, out];
      };
      const a = run();
      const b = run();
      a.forEach((arr, i) => expect(bitsEqual(arr, b[i]), `output ${i}`).toBe(true));
    });

    it('gemm results do not depend on the thread count', () => {
      nb.setIsa(originalIsa as 'avx512' | 'avx2' | 'scalar');
      const m = 333, n = 517, k = 611;
      const A = randArray(m * k, 11), B = randArray(n * k, 12);
      const outs: Float32Array[] = [];
      for (const t of [1, 2, 3]) {
        nb.setThreads(t);
        const C = new Float32Array(m * n);
        nb.gemm([A, B, C], new Int32Array([0, 0, k, 1, 0, k, 2, 0, n, m, n, k, GEMM_TRANS_B]));
        outs.push(C);
      }
      nb.setThreads(originalThreads);
      expect(bitsEqual(outs[0], outs[1])).toBe(true);
      expect(bitsEqual(outs[0], outs[2])).toBe(true);
    });

    it('sumSquares: identical across repeated calls, thread counts and ISA paths (fixed chunks summed in order)', () => {
      const xs = [wideArray(1_000_003, 21), randArray(65536 * 3 + 5, 22, -3, 3), wideArray(40_000, 23)];
      const results = new Set<string>();
      for (const isa of isas)
        for (const t of [1, 2, 3, originalThreads]) {
          nb.setIsa(isa);
          nb.setThreads(t);
          results.add(xs.map((x) => [nb.sumSquares(x), nb.sumSquares(x)].join()).join('|'));
        }
      nb.setIsa(originalIsa as 'avx512' | 'avx2' | 'scalar');
      nb.setThreads(originalThreads);
      expect(results.size).toBe(1);
    });

    it('adamw: identical across thread counts (and equal to the reference)', () => {
      nb.setIsa(originalIsa as 'avx512' | 'avx2' | 'scalar');
      const n = 300_007;
      const outs: Float32Array[][] = [];
      for (const t of [1, 2, 3]) {
        nb.setThreads(t);
        const st = adamwState(n, 31, true);
        nb.adamw(st.p, st.grad, st.m, st.v, st.vmax, adamwHyper(1e-3, [0.9, 0.999], 1e-8, 1e-2, 3, false));
        outs.push([st.p, st.m, st.v, st.vmax as Float32Array]);
      }
      nb.setThreads(originalThreads);
      const st = adamwState(n, 31, true);
      ref.adamw(st.p, st.grad, st.m, st.v, st.vmax, adamwHyper(1e-3, [0.9, 0.999], 1e-8, 1e-2, 3, false));
      const want = [st.p, st.m, st.v, st.vmax as Float32Array];
      for (const o of outs) o.forEach((arr, i) => expect(sameBits(arr, want[i]), `buffer ${i}`).toBe(true));
    });
  });

  describe('argument validation', () => {
    it('gemm: a task reaching past a buffer throws RangeError (A, B and C)', () => {
      const A = new Float32Array(6), B = new Float32Array(6), C = new Float32Array(4);
      // 2x3 · 3x2 fits exactly
      expect(() => nb.gemm([A, B, C], new Int32Array([0, 0, 3, 1, 0, 2, 2, 0, 2, 2, 2, 3, 0]))).not.toThrow();
      expect(() => nb.gemm([A, B, C], new Int32Array([0, 1, 3, 1, 0, 2, 2, 0, 2, 2, 2, 3, 0]))).toThrow(RangeError);
      expect(() => nb.gemm([A, B, C], new Int32Array([0, 0, 3, 1, 0, 3, 2, 0, 2, 2, 2, 3, 0]))).toThrow(/B \(buffers\[1\]\)/);
      expect(() => nb.gemm([A, B, C], new Int32Array([0, 0, 3, 1, 0, 2, 2, 1, 2, 2, 2, 3, 0]))).toThrow(/C \(buffers\[2\]\)/);
      expect(() => nb.gemm([A, B, C], new Int32Array([0, 0, 4, 1, 0, 2, 2, 0, 2, 2, 2, 3, 0]))).toThrow(/A \(buffers\[0\]\)/);
      // transposed extents
      expect(() => nb.gemm([A, B, C], new Int32Array([0, 0, 3, 1, 0, 2, 2, 0, 2, 2, 2, 3, GEMM_TRANS_A]))).toThrow(RangeError);
      // second task is the bad one; the first must not have run
      C.fill(7);
      expect(() =>
        nb.gemm([A, B, C], new Int32Array([0, 0, 3, 1, 0, 2, 2, 0, 2, 2, 2, 3, 0, 0, 0, 3, 1, 0, 2, 2, 0, 2, 2, 2, 30, 0])),
      ).toThrow(/task 1/);
      expect(Array.from(C)).toEqual([7, 7, 7, 7]);
    });

    it('gemm: bad buffer index, negative sizes, overlapping C rows, params length, wrong types', () => {
      const A = new Float32Array(16), B = new Float32Array(16), C = new Float32Array(16);
      expect(() => nb.gemm([A, B, C], new Int32Array([0, 0, 2, 3, 0, 2, 2, 0, 2, 2, 2, 2, 0]))).toThrow(/missing buffer/);
      expect(() => nb.gemm([A, B, C], new Int32Array([0, 0, 2, 1, 0, 2, 2, 0, 2, -1, 2, 2, 0]))).toThrow(RangeError);
      expect(() => nb.gemm([A, B, C], new Int32Array([0, 0, 2, 1, 0, 2, 2, 0, 1, 2, 2, 2, 0]))).toThrow(/ldc/);
      expect(() => nb.gemm([A, B, C], new Int32Array(12))).toThrow(RangeError);
      expect(() => nb.gemm([A, B, new Float64Array(4) as unknown as Float32Array], new Int32Array([0, 0, 2, 1, 0, 2, 2, 0, 2, 2, 2, 2, 0]))).toThrow(TypeError);
      expect(() => nb.gemm([A, B, C], new Float32Array(13) as unknown as Int32Array)).toThrow(TypeError);
      // empty and k = 0 tasks need no A/B extent
      expect(() => nb.gemm([A, B, C], new Int32Array([0, 100, 2, 1, 100, 2, 2, 0, 2, 0, 2, 5, 0]))).not.toThrow();
    });

    it('other kernels: short outputs and bad indices throw RangeError naming the argument', () => {
      const x = new Float32Array(10);
      expect(() => nb.unary('exp', x, new Float32Array(9))).toThrow(/out/);
      expect(() => nb.unaryGrad('tanh', x, x, new Float32Array(3), x)).toThrow(/dy/);
      expect(() => nb.softmax(x, 3, 4, false, new Float32Array(12))).toThrow(/x/);
      expect(() => nb.rmsNorm(x, new Float32Array(4), 2, 5, 1e-5, new Float32Array(10), new Float32Array(2))).toThrow(/w/);
      expect(() => nb.gatherRows(x, new Int32Array([0, 5]), 2, new Float32Array(4))).toThrow(/idx\[1\]/);
      expect(() => nb.scatterAddRows(x, new Int32Array([0, -1]), null, 2, new Float32Array(4))).toThrow(/idx\[1\]/);
      expect(() =>
        nb.binary('add', x, new Int32Array([1, 5]), x, new Int32Array([0, 1]), new Float32Array(10), new Int32Array([2, 5])),
      ).toThrow(/a has 10 elements/);
      expect(() => nb.permute(x, new Int32Array([2, 5]), new Int32Array([0, 0]), new Float32Array(10))).toThrow(/perm/);
      expect(() => nb.reduce('sum', x, 2, 3, 2, new Float32Array(4))).toThrow(/x/);
      expect(() => nb.unary('exp', [1, 2] as unknown as Float32Array, new Float32Array(2))).toThrow(TypeError);
    });

    it('rotary: short tables, odd dim', () => {
      const f = (n: number): Float32Array => new Float32Array(n);
      expect(() => nb.rotary(f(16), f(16), f(3), f(4), 2, 2, 1, 8, 0, false)).toThrow(/cos has 3 elements/);
      expect(() => nb.rotary(f(12), f(12), f(8), f(8), 2, 2, 1, 6, 1, false)).toThrow(/needs at least 9/);
      expect(() => nb.rotary(f(14), f(14), f(8), f(8), 2, 2, 1, 7, 0, false)).toThrow(/even/);
    });

    it('sumSquares / adamw: wrong types, short or overlapping state buffers', () => {
      const h = adamwHyper(1e-3, [0.9, 0.999], 1e-8, 1e-2, 1, false);
      const f = (n: number): Float32Array => new Float32Array(n);
      expect(() => nb.sumSquares(new Float64Array(3) as unknown as Float32Array)).toThrow(TypeError);
      expect(nb.sumSquares(f(0))).toBe(0);
      expect(() => nb.adamw(f(4), f(3), f(4), f(4), null, h)).toThrow(/grad has 3 elements/);
      expect(() => nb.adamw(f(4), f(4), f(3), f(4), null, h)).toThrow(/m has 3/);
      expect(() => nb.adamw(f(4), f(4), f(4), f(2), null, h)).toThrow(/v has 2/);
      expect(() => nb.adamw(f(4), f(4), f(4), f(4), f(0), h)).toThrow(/vmax has 0/);
      expect(() => nb.adamw(f(4), f(4), f(4), f(4), null, h)).not.toThrow();
      expect(() => nb.adamw(f(4), f(4), new Float64Array(4) as unknown as Float32Array, f(4), null, h)).toThrow(TypeError);
      expect(() => nb.adamw(f(4), f(4), f(4), f(4), null, { ...h, beta1: 'x' as unknown as number })).toThrow(/beta1/);
      const buf = f(10);
      expect(() => nb.adamw(f(4), f(4), buf.subarray(0, 4), buf.subarray(3, 7), null, h)).toThrow(/m and v overlap/);
      expect(() => nb.adamw(f(4), f(4), buf.subarray(0, 4), buf.subarray(4, 8), null, h)).not.toThrow();
      const p = f(4);
      expect(() => nb.adamw(p, p, f(4), f(4), null, h)).toThrow(/p and grad overlap/);
      // nothing was written by a rejected call
      const q = new Float32Array([1, 2, 3, 4]), mm = f(4);
      expect(() => nb.adamw(q, new Float32Array([1, 1, 1, 1]), mm, f(4), f(3), h)).toThrow(RangeError);
      expect(Array.from(q)).toEqual([1, 2, 3, 4]);
      expect(Array.from(mm)).toEqual([0, 0, 0, 0]);
    });
  });
});
