/**
 * NativeBackend vs ReferenceBackend (the oracle), kernel by kernel, on every ISA path this CPU
 * supports (avx512 / avx2 / scalar) and on 1 thread and the default pool.
 *
 * If the addon is not built the suite is skipped, unless SWITCHYARD_REQUIRE_NATIVE=1, in which
 * case it fails. No timing assertions.
 */
import { createRequire } from 'node:module';

import { afterAll, describe, expect, it } from 'vitest';

import { loadNativeBackend, nativeAddonPath, nativeLoadError, type NativeBackend } from '../src/backend/native.js';
import {
  argumentValidationTests,
  determinismTests,
  elementwiseTests,
  gemmGatedTests,
  gemmTests,
  indexingTests,
  optimizerTests,
  rowwiseTests,
  useHarness,
  type TestHarness,
} from './browser/op-suite.js';

// The kernel case families live in the browser op suite (framework-free); register them with vitest.
useHarness({ describe, it, expect } as unknown as TestHarness);

const native = loadNativeBackend();
const requireNative = process.env.SWITCHYARD_REQUIRE_NATIVE === '1';

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

  // The pool lets an item claim its thread's next item early (native/claim.h), so that the grouped
  // GEMMs can prefetch that item's weights; the addon's claimProbe checks the bookkeeping directly.
  it('pool: early claims (sy_parallel_claim_ahead) run each item once, on the thread that claimed it, nested jobs included', () => {
    const probe = (createRequire(import.meta.url)(nativeAddonPath()) as {
      claimProbe(items: number, nested: boolean): Int32Array;
    }).claimProbe;
    for (const threads of [...new Set([1, originalThreads])]) {
      nb.setThreads(threads);
      for (const n of [0, 1, 2, 3, 7, 64, 1000]) {
        for (const nested of [false, true]) {
          const r = probe(n, nested);
          const at = `threads ${threads}, items ${n}, nested ${nested}`;
          expect(Array.from(r.subarray(0, n)).every((runs) => runs === 1), at).toBe(true);
          expect(r[n], at).toBe(nested ? 3 * n : 0); // nested items run
          expect(r[n + 2], at).toBe(0); // violations
          // one thread claims every item but the last early; T threads skip the last T - 1
          if (threads === 1) expect(r[n + 1], at).toBe(Math.max(0, n - 1));
          else if (n >= 64) expect(r[n + 1], at).toBeGreaterThan(0);
        }
      }
    }
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

  determinismTests(nb, {
    paths: isas.map((isa) => ({ name: isa, select: () => nb.setIsa(isa) })),
    restore: () => {
      nb.setIsa(originalIsa as 'avx512' | 'avx2' | 'scalar');
      nb.setThreads(originalThreads);
    },
  });
  argumentValidationTests(nb);

  describe('argument validation (native only)', () => {
    it('rotary: short tables, odd dim', () => {
      const f = (n: number): Float32Array => new Float32Array(n);
      expect(() => nb.rotary(f(16), f(16), f(3), f(4), 2, 2, 1, 8, 0, false)).toThrow(/cos has 3 elements/);
      expect(() => nb.rotary(f(12), f(12), f(8), f(8), 2, 2, 1, 6, 1, false)).toThrow(/needs at least 9/);
      expect(() => nb.rotary(f(14), f(14), f(8), f(8), 2, 2, 1, 7, 0, false)).toThrow(/even/);
    });
  });
});
