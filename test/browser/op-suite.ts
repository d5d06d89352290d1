/**
 * The engine's backend op suite, framework-free so it runs inside a browser page: the kernel
 * cases and tolerances of test/native-backend.test.ts (gemm incl. the MoE grouped task list,
 * element-wise, row-wise, indexing, optimizer kernels, determinism, argument validation), checked
 * against the TypeScript reference backend. test/native-backend.test.ts registers the same case
 * families under vitest (useHarness) for each of its ISA paths; here there is no ISA switching
 * (wasm has one SIMD128 path).
 */
import {
  GEMM_ACCUMULATE,
  GEMM_CHAIN,
  GEMM_GATED_PARAMS,
  GEMM_PARAMS,
  GEMM_STREAM,
  GEMM_TRANS_A,
  GEMM_TRANS_B,
  LORA_MIX_ALL,
  LORA_MIX_DENSE,
  LORA_MIX_TOPK,
  LORA_MIX_TOPK_SOFTMAX,
  type Activation,
  type Backend,
  type BinaryOp,
  type GatedGemmMode,
  type ReduceOp,
  type UnaryOp,
} from '../../src/backend/interface.js';
import { allocFloat32 } from '../../src/backend/alloc.js';
import { ReferenceBackend } from '../../src/backend/reference.js';
import * as mini from './mini-test.js';

/**
 * The describe/it/expect the cases register with: mini-test in a browser page; a vitest file
 * (test/native-backend.test.ts) passes vitest's own through useHarness before registering.
 */
export interface TestHarness {
  describe: typeof mini.describe;
  it: typeof mini.it;
  expect: typeof mini.expect;
}
let { describe, it, expect }: TestHarness = mini;

/** Register later cases with `h` instead of mini-test. */
export function useHarness(h: TestHarness): void {
  ({ describe, it, expect } = h);
}

const ref = new ReferenceBackend();

/** A backend whose thread count can be changed (wasm); setThreads returns the count in effect. */
export interface ThreadedBackend extends Backend {
  setThreads(n: number): number;
}

/**
 * Register the suite for backend nb at thread counts `threads` (each pass sets its count first),
 * plus the determinism and argument-validation checks.
 */
export function registerOpSuite(nb: ThreadedBackend, threads: number[]): void {
  const originalThreads = Math.max(...threads);
  for (const t of threads) {
    describe(`${nb.name}, ${t} thread(s)`, () => {
      const setup = (): void => {
        const got = nb.setThreads(t);
        expect(got, 'threads in effect').toBe(t);
      };
      gemmTests(nb, setup);
      gemmGatedTests(nb, setup);
      elementwiseTests(nb, setup);
      rowwiseTests(nb, setup);
      indexingTests(nb, setup);
      optimizerTests(nb, setup);
    });
  }
  describe(`${nb.name}`, () => {
    determinismTests(nb, { paths: [{ name: nb.name, select: () => {} }], restore: () => nb.setThreads(originalThreads) });
    argumentValidationTests(nb);
  });
}

/** The code paths a backend can switch between (native: its ISA paths); `select` makes one current. */
export interface DeterminismOptions {
  paths: Array<{ name: string; select: () => void }>;
  /** Back to the backend's normal path and thread count. */
  restore: () => void;
}

/**
 * Bit-identical results on repeated calls, across thread counts, and (sumSquares) across paths;
 * adamw equal to the reference bit for bit.
 */
export function determinismTests(nb: ThreadedBackend, o: DeterminismOptions): void {
  describe('determinism', () => {
    it('gemm, softmax, norms and scatter give bit-identical results on repeated calls', () => {
      o.restore();
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
      o.restore();
      const m = 333, n = 517, k = 611;
      const A = randArray(m * k, 11), B = randArray(n * k, 12);
      const outs: Float32Array[] = [];
      for (const t of [1, 2, 3]) {
        nb.setThreads(t);
        const C = new Float32Array(m * n);
        nb.gemm([A, B, C], new Int32Array([0, 0, k, 1, 0, k, 2, 0, n, m, n, k, GEMM_TRANS_B]));
        outs.push(C);
      }
      o.restore();
      expect(bitsEqual(outs[0], outs[1])).toBe(true);
      expect(bitsEqual(outs[0], outs[2])).toBe(true);
    });

    it('sumSquares: identical across repeated calls, thread counts and code paths (fixed chunks summed in order)', () => {
      const xs = [wideArray(1_000_003, 21), randArray(65536 * 3 + 5, 22, -3, 3), wideArray(40_000, 23)];
      const results = new Set<string>();
      for (const path of o.paths)
        for (const t of [1, 2, 3]) {
          path.select();
          nb.setThreads(t);
          results.add(xs.map((x) => [nb.sumSquares(x), nb.sumSquares(x)].join()).join('|'));
        }
      o.restore();
      results.add(xs.map((x) => nb.sumSquares(x)).map((v) => [v, v].join()).join('|'));
      expect(results.size).toBe(1);
    });

    it('gemmGated results do not depend on the thread count (every code path)', () => {
      for (const path of o.paths) {
        path.select();
        const outs = [1, 2, 3].map((t) => {
          nb.setThreads(t);
          return gatedDeterminismCase(nb);
        });
        outs.slice(1).forEach((out) => out.forEach((arr, i) => expect(bitsEqual(arr, outs[0][i]), `${path.name}: output ${i}`).toBe(true)));
      }
      o.restore();
    });

    it('adamw: identical across thread counts (and equal to the reference)', () => {
      o.restore();
      const n = 300_007;
      const outs: Float32Array[][] = [];
      for (const t of [1, 2, 3]) {
        nb.setThreads(t);
        const st = adamwState(n, 31, true);
        nb.adamw(st.p, st.grad, st.m, st.v, st.vmax, adamwHyper(1e-3, [0.9, 0.999], 1e-8, 1e-2, 3, false));
        outs.push([st.p, st.m, st.v, st.vmax as Float32Array]);
      }
      o.restore();
      const st = adamwState(n, 31, true);
      ref.adamw(st.p, st.grad, st.m, st.v, st.vmax, adamwHyper(1e-3, [0.9, 0.999], 1e-8, 1e-2, 3, false));
      const want = [st.p, st.m, st.v, st.vmax as Float32Array];
      for (const o of outs) o.forEach((arr, i) => expect(sameBits(arr, want[i]), `buffer ${i}`).toBe(true));
    });
  });

}

/** Argument checks shared by every backend: bad extents, indices and types throw naming the argument. */
export function argumentValidationTests(nb: Backend): void {
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
}

// ---------------------------------------------------------------------------------------------
// helpers


// ---------------------------------------------------------------------------------------------
// helpers

/** mulberry32: small seeded PRNG so failures reproduce. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * r();
  return out;
}

/** Values spanning magnitudes ~1e-4 .. ~1e4 with random signs. */
export function wideArray(n: number, seed: number): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const mag = r() < 0.5 ? 1e4 : 1e-4;
    out[i] = (r() - 0.5) * 2 * mag;
  }
  return out;
}

export function bitsEqual(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const ia = new Uint8Array(a.buffer, a.byteOffset, a.byteLength), ib = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  for (let i = 0; i < ia.length; i++) if (ia[i] !== ib[i]) return false;
  return true;
}

/**
 * |got - want| <= rtol·|want| + atol[i] elementwise, NaN matches NaN, ±Inf must match exactly.
 * atol may be a number or per-element bounds.
 */
function expectClose(got: Float32Array, want: Float32Array, rtol: number, atol: number | Float64Array | Float32Array, label: string): void {
  expect(got.length, `${label}: length`).toBe(want.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i], w = want[i];
    if (Number.isNaN(w) || Number.isNaN(g)) {
      if (Number.isNaN(w) !== Number.isNaN(g)) {
        worst = i;
        worstExcess = Infinity;
        break;
      }
      continue;
    }
    if (!Number.isFinite(w) || !Number.isFinite(g)) {
      if (g !== w) {
        worst = i;
        worstExcess = Infinity;
        break;
      }
      continue;
    }
    const tol = rtol * Math.abs(w) + (typeof atol === 'number' ? atol : atol[i]);
    const excess = Math.abs(g - w) / (tol || Number.MIN_VALUE);
    if (excess > 1 && excess > worstExcess) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    const tol = typeof atol === 'number' ? atol : atol[worst];
    expect.fail(`${label}: index ${worst}: got ${got[worst]}, want ${want[worst]} (rtol ${rtol}, atol ${tol}, ${worstExcess.toFixed(2)}x over)`);
  }
}



// ---------------------------------------------------------------------------------------------
// gemm

interface GemmCase {
  buffers: Float32Array[];
  params: Int32Array;
}

function task(
  aBuf: number, aOff: number, lda: number, bBuf: number, bOff: number, ldb: number,
  cBuf: number, cOff: number, ldc: number, m: number, n: number, k: number, flags: number,
): number[] {
  return [aBuf, aOff, lda, bBuf, bOff, ldb, cBuf, cOff, ldc, m, n, k, flags];
}

/** One task with padded leading dimensions and offsets. */
function singleCase(m: number, n: number, k: number, flags: number, seed: number, opts: { pad?: number; off?: number; wide?: boolean } = {}): GemmCase {
  const pad = opts.pad ?? 0, off = opts.off ?? 0;
  const ta = (flags & GEMM_TRANS_A) !== 0, tb = (flags & GEMM_TRANS_B) !== 0;
  const lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
  const aRows = ta ? k : m, bRows = tb ? n : k;
  const gen = opts.wide ? wideArray : randArray;
  const A = gen(off + Math.max(aRows, 1) * Math.max(lda, 1) + 3, seed);
  const B = gen(off + Math.max(bRows, 1) * Math.max(ldb, 1) + 3, seed + 1);
  const C = gen(off + Math.max(m, 1) * Math.max(ldc, 1) + 3, seed + 2);
  return { buffers: [A, B, C], params: new Int32Array(task(0, off, lda, 1, off, ldb, 2, off, ldc, m, n, k, flags)) };
}

/**
 * The MoE grouped case: E experts with uneven token counts (some zero), forward Y_e = X_e·W_eᵀ
 * ([rows, d] x [f, d]ᵀ), plus the two backward products dX_e = dY_e·W_e and dW_e = dY_eᵀ·X_e.
 */
export function groupedCase(E: number, d: number, f: number, avgRows: number, seed: number): GemmCase {
  const r = rng(seed);
  const rows: number[] = [];
  for (let e = 0; e < E; e++) rows.push(e % 5 === 3 ? 0 : Math.floor(r() * 2 * avgRows) + (e % 7 === 1 ? 1 : 0));
  const total = rows.reduce((s, v) => s + v, 0);
  const X = randArray(total * d, seed + 1), W = randArray(E * f * d, seed + 2), dY = randArray(total * f, seed + 3);
  const Y = randArray(total * f, seed + 4), dX = randArray(total * d, seed + 5), dW = randArray(E * f * d, seed + 6);
  const p: number[] = [];
  let row = 0;
  for (let e = 0; e < E; e++) {
    const m = rows[e];
    p.push(...task(0, row * d, d, 1, e * f * d, d, 3, row * f, f, m, f, d, GEMM_TRANS_B)); // Y = X·Wᵀ
    p.push(...task(2, row * f, f, 1, e * f * d, d, 4, row * d, d, m, d, f, e % 2 ? GEMM_ACCUMULATE : 0)); // dX (+)= dY·W
    p.push(...task(2, row * f, f, 0, row * d, d, 5, e * f * d, d, f, d, m, GEMM_TRANS_A | GEMM_ACCUMULATE)); // dW += dYᵀ·X
    row += m;
  }
  return { buffers: [X, W, dY, Y, dX, dW], params: new Int32Array(p) };
}

/** Reference results per case label (identical for every ISA / thread-count pass). */
const gemmOracle = new Map<string, { want: Float32Array[]; atol: Float64Array[] }>();

/** Run both backends on copies; compare every buffer with a |A|·|B|-scaled sqrt(k) tolerance. */
function checkGemm(nb: Backend, c: GemmCase, label: string): void {
  const mine = c.buffers.map((b) => b.slice());
  nb.gemm(mine, c.params);
  let oracle = gemmOracle.get(label);
  if (!oracle) {
    oracle = gemmReference(c);
    gemmOracle.set(label, oracle);
  }
  const { want, atol } = oracle;
  mine.forEach((b, i) => expectClose(b, want[i], 0, atol[i], `${label} buffer ${i}`));
}

function gemmReference(c: GemmCase): { want: Float32Array[]; atol: Float64Array[] } {
  const want = c.buffers.map((b) => b.slice());
  ref.gemm(want, c.params);
  // tolerance: 1e-5·sqrt(k)·(|A|·|B|)_ij + 1e-6·|C0_ij| per written element, exact elsewhere
  const atol = c.buffers.map((b) => new Float64Array(b.length));
  const absBufs = c.buffers.map((b) => b.map(Math.abs));
  for (let t = 0; t < c.params.length; t += GEMM_PARAMS) {
    const p = c.params.subarray(t, t + GEMM_PARAMS);
    const [, , , , , , cBuf, cOff, ldc, m, n, k, flags] = p;
    const one = new Int32Array(p);
    const absOut = absBufs.map((b) => b.slice());
    const cAbs = absOut[cBuf];
    one[12] = flags & ~GEMM_ACCUMULATE;
    ref.gemm(absOut, one);
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        const q = cOff + i * ldc + j;
        atol[cBuf][q] += 1e-5 * Math.sqrt(Math.max(k, 1)) * cAbs[q] + 1e-6 * Math.abs(c.buffers[cBuf][q]) + 1e-30;
      }
  }
  return { want, atol };
}

/**
 * A grouped gemmGated case: expert blocks of `rows` rows over A [N, k]; C1/C3/O1/O3 [N, n] with
 * leading dimension ld (= n + pad). 'up' uses transposed B ([n, k], the expert weight layout),
 * 'down-grad' row-major B ([k, n]) and saved H1, H3 in C1, C3.
 */
function gatedCase(mode: GatedGemmMode, rows: number[], k: number, n: number, pad: number, seed: number) {
  const N = rows.reduce((a, b) => a + b, 0), ld = n + pad;
  const A = randArray(N * k + 2, seed, -1, 1);
  const E = rows.length;
  const B1 = Array.from({ length: E }, (_, e) => randArray(n * k, seed + 10 + e, -0.5, 0.5));
  const B3 = Array.from({ length: E }, (_, e) => randArray(n * k, seed + 40 + e, -0.5, 0.5));
  const size = N * ld + 3;
  const C1 = randArray(size, seed + 1, -3, 3), C3 = randArray(size, seed + 2, -3, 3);
  const O1 = randArray(size, seed + 3), O3 = randArray(size, seed + 4);
  const buffers = [A, C1, C3, O1, O3, ...B1, ...B3];
  const params: number[] = [];
  let r0 = 0;
  rows.forEach((m, e) => {
    const b3 = mode === 'up' ? 5 + E + e : -1, o3 = mode === 'up' ? -1 : 4;
    params.push(0, 1 + r0 * k, k, 5 + e, 0, b3, 0, mode === 'up' ? k : n, 1, r0 * ld, 2, r0 * ld, 3, r0 * ld, o3, r0 * ld, ld, m, n, k, mode === 'up' ? 1 : 0);
    r0 += m;
  });
  return { buffers, params: Int32Array.from(params), N, ld };
}

/** The same case run as its definition: gemm, then gatedAct / gatedActGrad per task (on backend `be`). */
function gatedComposed(be: Backend, mode: GatedGemmMode, act: Activation, c: ReturnType<typeof gatedCase>): Float32Array[] {
  const bufs = c.buffers.map((b) => Float32Array.from(b));
  const ntasks = c.params.length / GEMM_GATED_PARAMS;
  for (let t = 0; t < ntasks; t++) {
    const p = c.params.subarray(t * GEMM_GATED_PARAMS, (t + 1) * GEMM_GATED_PARAMS);
    const [aBuf, aOff, lda, b1, , b3, , ldb, c1, c1Off, c3, c3Off, o1, o1Off, o3, o3Off, ld, m, n, k, tb] = p;
    if (m === 0) continue;
    const flags = tb ? GEMM_TRANS_B : 0;
    const rowsOf = (buf: Float32Array, off: number, r: number) => buf.subarray(off + r * ld, off + r * ld + n);
    if (mode === 'up') {
      be.gemm(bufs, Int32Array.from([...task(aBuf, aOff, lda, b1, 0, ldb, c1, c1Off, ld, m, n, k, flags), ...task(aBuf, aOff, lda, b3, 0, ldb, c3, c3Off, ld, m, n, k, flags)]));
      for (let r = 0; r < m; r++) be.gatedAct(act, rowsOf(bufs[c1], c1Off, r), rowsOf(bufs[c3], c3Off, r), rowsOf(bufs[o1], o1Off, r));
    } else {
      const G = new Float32Array(m * n);
      be.gemm([...bufs, G], Int32Array.from(task(aBuf, aOff, lda, b1, 0, ldb, bufs.length, 0, n, m, n, k, flags)));
      for (let r = 0; r < m; r++) be.gatedActGrad(act, rowsOf(bufs[c1], c1Off, r), rowsOf(bufs[c3], c3Off, r), G.subarray(r * n, (r + 1) * n), rowsOf(bufs[o1], o1Off, r), rowsOf(bufs[o3], o3Off, r));
    }
  }
  return bufs;
}

/** Outputs of one 'up' and one 'down-grad' call (a big task split across threads and small ones). */
export function gatedDeterminismCase(nb: Backend): Float32Array[] {
  const outs: Float32Array[] = [];
  for (const mode of ['up', 'down-grad'] as const) {
    const c = gatedCase(mode, [700, 33, 0, 90], 300, 260, 1, 990);
    const bufs = c.buffers.map((b) => Float32Array.from(b));
    nb.gemmGated(mode, 'silu', bufs, c.params);
    outs.push(bufs[1], bufs[2], bufs[3], bufs[4]);
  }
  return outs;
}

/** gemmGated: the fused expert-FFN steps equal their definition (gemm + gated kernels). */
export function gemmGatedTests(nb: Backend, setup: () => void): void {
  describe('gemmGated', () => {
    const shapes: Array<{ rows: number[]; k: number; n: number; pad: number }> = [
      { rows: [0, 1, 15, 33, 130], k: 40, n: 72, pad: 3 },
      { rows: [300, 7], k: 700, n: 530, pad: 0 }, // k past the longest depth block (5/4 of kc = 512), n past the up column block, one task split across threads
      { rows: [45, 2], k: 24, n: 1100, pad: 1 }, // n past the (wider) down-grad column block
      { rows: [230, 225, 220, 215, 30, 20], k: 64, n: 200, pad: 0 }, // units of more than one row block (MC) in one depth block: the down-grad reuses its G block
      { rows: [600, 610, 620, 630, 600, 610, 620, 630], k: 520, n: 40, pad: 1 }, // one depth block, units too big for the up-projection to pack their rows once (and halved ones that are not)
    ];
    for (const mode of ['up', 'down-grad'] as const)
      it(`${mode}: equals gemm then gatedAct${mode === 'up' ? '' : 'Grad'} on the same backend, and the reference`, () => {
        setup();
        let seed = mode === 'up' ? 700 : 800;
        for (const act of ['silu', 'gelu', 'relu'] as const)
          for (const sh of act === 'silu' ? shapes : shapes.slice(0, 1)) {
            const c = gatedCase(mode, sh.rows, sh.k, sh.n, sh.pad, seed++);
            const got = c.buffers.map((b) => Float32Array.from(b));
            nb.gemmGated(mode, act, got, c.params);
            const same = gatedComposed(nb, mode, act, c);
            const want = gatedComposed(ref, mode, act, c);
            const label = `${mode} ${act} rows=${sh.rows} k=${sh.k} n=${sh.n}`;
            const outs = mode === 'up' ? [1, 2, 3] : [3, 4];
            for (const i of outs) {
              // Native and wasm run the very operations of the definition (the products' depth blocks, then
              // the same element-wise kernel): bit-identical on the same backend.
              if (nb.name === 'webgpu') expectClose(got[i], same[i], 1e-6, 1e-6, `${label}: buffer ${i} vs ${nb.name} gemm + gated`);
              else expect(bitsEqual(got[i], same[i]), `${label}: buffer ${i} bit-identical to ${nb.name} gemm + gated`).toBe(true);
              expectClose(got[i], want[i], 1e-4, 1e-4, `${label}: buffer ${i} vs reference`);
            }
            // Inputs and untouched padding are left alone.
            for (const i of mode === 'up' ? [0, 4] : [0, 1, 2]) expect(bitsEqual(got[i], c.buffers[i]), `${label}: buffer ${i} unchanged`).toBe(true);
          }
      });

    it("up with c1Buf = c3Buf = -1 (inference): the same O1 as when C1 and C3 are kept, nothing else written", () => {
      setup();
      let seed = 950;
      for (const act of ['silu', 'gelu'] as const)
        for (const sh of shapes) {
          const c = gatedCase('up', sh.rows, sh.k, sh.n, sh.pad, seed++);
          const kept = c.buffers.map((b) => Float32Array.from(b));
          nb.gemmGated('up', act, kept, c.params);
          const params = c.params.slice();
          for (let t = 0; t < params.length; t += GEMM_GATED_PARAMS) params[t + 8] = params[t + 10] = -1;
          const dropped = c.buffers.map((b) => Float32Array.from(b));
          nb.gemmGated('up', act, dropped, params);
          const label = `up ${act} rows=${sh.rows} k=${sh.k} n=${sh.n}`;
          expect(bitsEqual(dropped[3], kept[3]), `${label}: O1 as with C1/C3 kept`).toBe(true);
          for (const i of [0, 1, 2, 4]) expect(bitsEqual(dropped[i], c.buffers[i]), `${label}: buffer ${i} untouched`).toBe(true);
          if (sh !== shapes[0]) continue;
          // The composed definition (reference, wasm, WebGPU) takes -1 the same way.
          const refKept = c.buffers.map((b) => Float32Array.from(b)), refDropped = c.buffers.map((b) => Float32Array.from(b));
          ref.gemmGated('up', act, refKept, c.params);
          ref.gemmGated('up', act, refDropped, params);
          expect(bitsEqual(refDropped[3], refKept[3]), `${label}: reference O1`).toBe(true);
          for (const i of [1, 2]) expect(bitsEqual(refDropped[i], c.buffers[i]), `${label}: reference buffer ${i} untouched`).toBe(true);
        }
      // k = 0: O1 = act(0)·0 = 0 either way.
      const z = gatedCase('up', [3, 2], 0, 40, 1, 990);
      const zp = z.params.slice();
      for (let t = 0; t < zp.length; t += GEMM_GATED_PARAMS) zp[t + 8] = zp[t + 10] = -1;
      const zb = z.buffers.map((b) => Float32Array.from(b));
      nb.gemmGated('up', 'silu', zb, zp);
      for (let r = 0; r < z.N; r++) expect(Array.from(zb[3].subarray(r * z.ld, r * z.ld + 40)).every((v) => v === 0)).toBe(true);
    });

    it('down-grad in place (O1 = C1, O3 = C3): the gradients of separate outputs, padding kept', () => {
      setup();
      let seed = 970;
      for (const act of ['silu', 'gelu', 'relu'] as const)
        for (const sh of act === 'silu' ? shapes : shapes.slice(0, 1)) {
          const c = gatedCase('down-grad', sh.rows, sh.k, sh.n, sh.pad, seed++);
          const separate = c.buffers.map((b) => Float32Array.from(b));
          nb.gemmGated('down-grad', act, separate, c.params);
          const params = c.params.slice();
          for (let t = 0; t < params.length; t += GEMM_GATED_PARAMS) {
            params[t + 12] = params[t + 8]; // o1Buf, o1Off <- c1Buf, c1Off
            params[t + 13] = params[t + 9];
            params[t + 14] = params[t + 10]; // o3Buf, o3Off <- c3Buf, c3Off
            params[t + 15] = params[t + 11];
          }
          // Expected: C1 / C3 with every task's [m, n] region replaced by the separate run's O1 / O3.
          const inPlaceWant = (sep: Float32Array[]): [Float32Array, Float32Array] => {
            const want1 = Float32Array.from(c.buffers[1]), want3 = Float32Array.from(c.buffers[2]);
            for (let r = 0; r < c.N; r++) {
              want1.set(sep[3].subarray(r * c.ld, r * c.ld + sh.n), r * c.ld);
              want3.set(sep[4].subarray(r * c.ld, r * c.ld + sh.n), r * c.ld);
            }
            return [want1, want3];
          };
          const inPlace = c.buffers.map((b) => Float32Array.from(b));
          nb.gemmGated('down-grad', act, inPlace, params);
          const [want1, want3] = inPlaceWant(separate);
          const label = `down-grad in place ${act} rows=${sh.rows} k=${sh.k} n=${sh.n}`;
          expect(bitsEqual(inPlace[1], want1), `${label}: dH1 in C1`).toBe(true);
          expect(bitsEqual(inPlace[2], want3), `${label}: dH3 in C3`).toBe(true);
          for (const i of [0, 3, 4]) expect(bitsEqual(inPlace[i], c.buffers[i]), `${label}: buffer ${i} untouched`).toBe(true);
          if (sh !== shapes[0]) continue;
          // The composed definition (reference, and the backends that delegate to it) takes it the same way.
          const refSeparate = c.buffers.map((b) => Float32Array.from(b)), refInPlace = c.buffers.map((b) => Float32Array.from(b));
          ref.gemmGated('down-grad', act, refSeparate, c.params);
          ref.gemmGated('down-grad', act, refInPlace, params);
          const [refWant1, refWant3] = inPlaceWant(refSeparate);
          expect(bitsEqual(refInPlace[1], refWant1) && bitsEqual(refInPlace[2], refWant3), `${label}: reference`).toBe(true);
        }
    });

    it('rejects out-of-bounds regions and bad modes naming the field', () => {
      setup();
      const c = gatedCase('up', [4, 5], 8, 16, 0, 900);
      const short = c.buffers.map((b, i) => (i === 3 ? b.subarray(0, 20) : b));
      expect(() => nb.gemmGated('up', 'silu', short, c.params)).toThrow(/o1Buf/);
      expect(() => nb.gemmGated('sideways' as GatedGemmMode, 'silu', c.buffers, c.params)).toThrow(/mode/);
      expect(() => nb.gemmGated('up', 'silu', c.buffers, c.params.subarray(0, 20))).toThrow(/multiple of 21/);
    });
  });
}

export function gemmTests(nb: Backend, setup: () => void): void {
  describe('gemm', () => {
    it('all trans / accumulate combinations over odd sizes 1, 7, 33 (with padding and offsets)', () => {
      setup();
      const sizes = [1, 7, 33];
      let seed = 100;
      for (const flags of [0, 1, 2, 3, 4, 5, 6, 7])
        for (const m of sizes)
          for (const n of sizes)
            for (const k of sizes) {
              const pad = (m + n + k) % 3, off = (m * 3 + k) % 5;
              checkGemm(nb, singleCase(m, n, k, flags, seed++, { pad, off }), `m=${m} n=${n} k=${k} flags=${flags}`);
            }
    });

    it('sizes with 257 (edge tiles in every dimension) and all flag combinations', () => {
      setup();
      let seed = 200;
      for (const [m, n, k] of [[257, 33, 257], [33, 257, 129], [257, 257, 7], [257, 257, 257], [15, 1, 300]])
        for (const flags of [0, 1, 2, 3, 4, 7]) checkGemm(nb, singleCase(m, n, k, flags, seed++, { pad: 5, off: 3 }), `m=${m} n=${n} k=${k} flags=${flags}`);
    });

    it('chains (GEMM_CHAIN) run in list order and may accumulate into their predecessor\'s C', () => {
      setup();
      // C0 = A·B0 (+)= A·B1 (+)= A·B2 as a chain, next to independent tasks; a small chain, a chain
      // whose head is big enough to be split across threads, and a k = 0 follower that zeroes C.
      const m = 150, n = 200, k = 90, mBig = 600, kBig = 700;
      const A = randArray(mBig * kBig + 8, 1201), B0 = randArray(kBig * n, 1202), B1 = randArray(kBig * n, 1203), B2 = randArray(kBig * n, 1204);
      const C0 = randArray(m * n, 1205), C1 = randArray(m * n, 1206), Cbig = randArray(mBig * n, 1207), Cz = randArray(m * n, 1208);
      const buffers = [A, B0, B1, B2, C0, C1, Cbig, Cz];
      const params = Int32Array.from([
        ...task(0, 0, k, 1, 0, n, 4, 0, n, m, n, k, 0),
        ...task(0, 0, k, 2, 0, n, 4, 0, n, m, n, k, GEMM_ACCUMULATE | GEMM_CHAIN),
        ...task(0, 5, k, 3, 0, n, 4, 0, n, m, n, k, GEMM_ACCUMULATE | GEMM_CHAIN),
        ...task(0, 7, k, 1, 0, n, 5, 0, n, m, n, k, 0),
        ...task(0, 0, kBig, 1, 0, n, 6, 0, n, mBig, n, kBig, 0),
        ...task(0, 3, kBig, 2, 0, n, 6, 0, n, mBig, n, kBig, GEMM_ACCUMULATE | GEMM_CHAIN),
        ...task(0, 0, k, 2, 0, n, 7, 0, n, m, n, k, GEMM_ACCUMULATE),
        ...task(0, 0, k, 2, 0, n, 7, 0, n, m, n, 0, GEMM_CHAIN),
      ]);
      const mine = buffers.map((b) => b.slice());
      nb.gemm(mine, params);
      const want = buffers.map((b) => b.slice());
      ref.gemm(want, params); // the reference runs tasks in list order
      for (const i of [4, 5, 6]) expectClose(mine[i], want[i], 1e-5, 1e-4, `chain output buffer ${i}`);
      expect(mine[7].every((v) => v === 0), 'a k = 0 follower zeroes what its predecessor wrote').toBe(true);
      for (const i of [0, 1, 2, 3]) expect(bitsEqual(mine[i], buffers[i]), `input ${i} unchanged`).toBe(true);
    });

    it('large problems that use the multi-threaded split (and k > the depth block)', () => {
      setup();
      checkGemm(nb, singleCase(300, 520, 700, 0, 301), 'nn');
      checkGemm(nb, singleCase(96, 1100, 400, GEMM_TRANS_B | GEMM_ACCUMULATE, 302, { pad: 9, off: 17 }), 'nt acc');
      checkGemm(nb, singleCase(700, 64, 900, GEMM_TRANS_A, 303, { pad: 1 }), 'tn');
      checkGemm(nb, singleCase(130, 300, 1500, GEMM_TRANS_A | GEMM_TRANS_B, 304), 'tt');
    });

    it('GEMM_STREAM (a hint) changes no bit: weight-gradient shapes, page-aligned C, partial tiles, one and two depth blocks', () => {
      setup();
      // C from allocFloat32: page-aligned where an aligner is installed, so streamed stores happen
      for (const [m, n, k, ldc] of [[1024, 256, 64, 256], [256, 1024, 600, 1024], [1024, 256, 700, 256], [300, 250, 90, 250], [96, 256, 40, 257]]) {
        const A = randArray(k * m, m + k), B = randArray(k * n, n + k);
        const C0 = allocFloat32(m * ldc), C1 = allocFloat32(m * ldc);
        C0.set(randArray(m * ldc, 7));
        C1.set(C0);
        for (const [C, flags] of [[C0, GEMM_TRANS_A], [C1, GEMM_TRANS_A | GEMM_STREAM]] as const) {
          // the same task twice in one call, on disjoint halves of the rows: both threads stream
          const h = m >> 1;
          nb.gemm([A, B, C], Int32Array.from([
            ...task(0, 0, m, 1, 0, n, 2, 0, ldc, h, n, k, flags),
            ...task(0, h, m, 1, 0, n, 2, h * ldc, ldc, m - h, n, k, flags),
          ]));
        }
        expect(bitsEqual(C0, C1), `[${m}x${n}] k=${k} ldc=${ldc}`).toBe(true);
        const want = new Float32Array(m * n);
        ref.gemm([A, B, want], new Int32Array(task(0, 0, m, 1, 0, n, 2, 0, n, m, n, k, GEMM_TRANS_A)));
        const got = new Float32Array(m * n);
        for (let i = 0; i < m; i++) got.set(C1.subarray(i * ldc, i * ldc + n), i * n);
        expectClose(got, want, 1e-5, 1e-3, `[${m}x${n}] k=${k} vs reference`);
      }
    });

    it('k = 0 writes zeros (or leaves C with accumulate); m = 0 / n = 0 tasks are no-ops', () => {
      setup();
      for (const flags of [0, GEMM_ACCUMULATE, GEMM_TRANS_A | GEMM_TRANS_B])
        checkGemm(nb, singleCase(7, 9, 0, flags, 400, { pad: 2, off: 1 }), `k=0 flags=${flags}`);
      checkGemm(nb, singleCase(0, 9, 5, 0, 401), 'm=0');
      checkGemm(nb, singleCase(9, 0, 5, GEMM_TRANS_B, 402), 'n=0');
      checkGemm(nb, singleCase(0, 0, 0, 0, 403), 'empty');
      const C = new Float32Array([1, 2, 3, 4]);
      nb.gemm([new Float32Array(0), new Float32Array(0), C], new Int32Array([0, 0, 0, 1, 0, 2, 2, 0, 2, 2, 2, 0, 0]));
      expect(Array.from(C)).toEqual([0, 0, 0, 0]);
    });

    it('large magnitudes (~1e4 and ~1e-4 mixed)', () => {
      setup();
      for (const flags of [0, 3, 6]) checkGemm(nb, singleCase(65, 47, 129, flags, 500 + flags, { wide: true, pad: 1 }), `wide flags=${flags}`);
      checkGemm(nb, singleCase(200, 300, 400, GEMM_TRANS_B, 510, { wide: true }), 'wide large');
    });

    it('MoE grouped calls: many tasks, uneven/empty row blocks, forward and backward products', () => {
      setup();
      checkGemm(nb, groupedCase(8, 33, 65, 20, 600), 'grouped small');
      checkGemm(nb, groupedCase(32, 64, 96, 12, 601), 'grouped 32 experts');
      checkGemm(nb, groupedCase(64, 24, 40, 5, 602), 'grouped 64 experts');
      checkGemm(nb, groupedCase(8, 128, 256, 150, 603), 'grouped large');
    });

    it('tasks that share A/B buffers and write disjoint parts of one C', () => {
      setup();
      const A = randArray(40 * 50, 700), B = randArray(50 * 60, 701), C = randArray(80 * 60, 702);
      const p = [
        ...task(0, 0, 50, 1, 0, 60, 2, 0, 60, 40, 30, 50, 0),
        ...task(0, 0, 50, 1, 30, 60, 2, 30, 60, 40, 30, 50, GEMM_ACCUMULATE),
        ...task(0, 0, 50, 1, 0, 60, 2, 40 * 60, 60, 40, 60, 25, 0),
      ];
      checkGemm(nb, { buffers: [A, B, C], params: new Int32Array(p) }, 'shared');
    });
  });
}

// ---------------------------------------------------------------------------------------------
// element-wise

const UNARY_OPS: UnaryOp[] = ['neg', 'abs', 'exp', 'log', 'sqrt', 'rsqrt', 'tanh', 'sigmoid', 'softplus', 'relu', 'gelu', 'gelu_tanh', 'silu', 'square', 'sign'];
const ACTS: Activation[] = ['relu', 'gelu', 'gelu_tanh', 'silu'];
const SPECIALS = [0, -0, 1, -1, 0.5, -0.5, 0.625, -0.625, 1e-4, -1e-4, 1e-30, -1e-30, 3, -3, 9, -9, 15, -15, 20, -20, 20.5, -20.5, 44, -44, 87, -87, 88.7, 89, -103, -104, -110, 1e4, -1e4, Infinity, -Infinity, NaN];

function unaryInput(op: UnaryOp, n: number, seed: number): Float32Array {
  const positive = op === 'log' || op === 'sqrt' || op === 'rsqrt';
  const r = rng(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    if (i < SPECIALS.length && n >= SPECIALS.length) x[i] = SPECIALS[i];
    else {
      const u = r();
      // mix of ranges: [-10, 10], tiny, huge
      const v = u < 0.7 ? (r() - 0.5) * 20 : u < 0.85 ? (r() - 0.5) * 2e-3 : (r() - 0.5) * 200;
      x[i] = positive ? Math.abs(v) * (op === 'log' && u > 0.9 ? 1e6 : 1) + (u > 0.97 ? 1e-38 : 0) : v;
    }
  }
  return x;
}

/**
 * Absolute slack: tiny, except that the reference evaluates gelu / gelu_tanh (and their
 * derivatives) as 0.5·x·(1 + erf|tanh) in double, which cancels in the negative tail: its own
 * error there is ~|x|·1e-16 (it returns 0 below x ≈ -8 where the true value is ~1e-20).
 */
function tailSlack(op: UnaryOp, scale: number): number {
  return op === 'gelu' || op === 'gelu_tanh' ? 1e-15 * Math.abs(scale) : 0;
}
/**
 * gelu', gelu_tanh' and silu' cross zero (x ≈ -0.75, -1.28) as the difference of two O(0.2) terms:
 * any float evaluation has ~1e-8 absolute error there, so allow 2e-7·|dy| absolute.
 */
function zeroCrossingSlack(op: UnaryOp, dy: number): number {
  return op === 'gelu' || op === 'gelu_tanh' || op === 'silu' ? 2e-7 * Math.abs(dy) : 0;
}
function unaryAtol(op: UnaryOp, x: Float32Array): Float64Array {
  const a = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) a[i] = 1e-37 + (Number.isFinite(x[i]) ? tailSlack(op, x[i]) : 0);
  return a;
}

export function elementwiseTests(nb: Backend, setup: () => void): void {
  describe('element-wise', () => {
    for (const op of UNARY_OPS) {
      it(`unary ${op} and unaryGrad ${op}`, () => {
        setup();
        for (const n of [1, 7, 33, 257, 70001]) {
          const x = unaryInput(op, n, n * 31 + op.length);
          const got = new Float32Array(n), want = new Float32Array(n);
          nb.unary(op, x, got);
          ref.unary(op, x, want);
          expectClose(got, want, 1e-6, unaryAtol(op, x), `${op} n=${n}`);
          // gradient, with y from the reference so both see the same y
          const dy = randArray(n, n + 5, -2, 2);
          const gd = new Float32Array(n), wd = new Float32Array(n);
          nb.unaryGrad(op, x, want, dy, gd);
          ref.unaryGrad(op, x, want, dy, wd);
          const atol = new Float64Array(n);
          for (let i = 0; i < n; i++) atol[i] = 1e-37 + tailSlack(op, dy[i]) + zeroCrossingSlack(op, dy[i]);
          expectClose(gd, wd, 1e-6, atol, `${op}' n=${n}`);
        }
        // out aliasing x
        const x = unaryInput(op, 1000, 9);
        const want = new Float32Array(1000);
        const atol = unaryAtol(op, x);
        ref.unary(op, x, want);
        nb.unary(op, x, x);
        expectClose(x, want, 1e-6, atol, `${op} in place`);
      });
    }

    it('gatedAct / gatedActGrad for every activation', () => {
      setup();
      for (const act of ACTS)
        for (const n of [1, 33, 50001]) {
          const a = unaryInput(act, n, n + 1), b = randArray(n, n + 2, -3, 3), dy = randArray(n, n + 3, -2, 2);
          const got = new Float32Array(n), want = new Float32Array(n);
          nb.gatedAct(act, a, b, got);
          ref.gatedAct(act, a, b, want);
          const fatol = new Float64Array(n);
          for (let i = 0; i < n; i++) fatol[i] = 1e-37 + (Number.isFinite(a[i]) ? tailSlack(act, a[i] * b[i]) : 0);
          expectClose(got, want, 1e-6, fatol, `gated ${act} n=${n}`);
          const gda = new Float32Array(n), gdb = new Float32Array(n), wda = new Float32Array(n), wdb = new Float32Array(n);
          nb.gatedActGrad(act, a, b, dy, gda, gdb);
          ref.gatedActGrad(act, a, b, dy, wda, wdb);
          const atol = new Float64Array(n);
          for (let i = 0; i < n; i++) atol[i] = 1e-37 + tailSlack(act, dy[i] * b[i]) + zeroCrossingSlack(act, dy[i] * b[i]);
          expectClose(gda, wda, 1e-6, atol, `gated ${act} da n=${n}`);
          const batol = new Float64Array(n);
          for (let i = 0; i < n; i++) batol[i] = 1e-37 + (Number.isFinite(a[i]) ? tailSlack(act, a[i] * dy[i]) : 0);
          expectClose(gdb, wdb, 1e-6, batol, `gated ${act} db n=${n}`);
        }
    });

    it('affine (also in place)', () => {
      setup();
      for (const n of [1, 7, 257, 100003]) {
        const x = wideArray(n, n);
        const got = new Float32Array(n), want = new Float32Array(n);
        nb.affine(x, 0.37, -2.5, got);
        ref.affine(x, 0.37, -2.5, want);
        expectClose(got, want, 1e-6, 1e-6, `affine n=${n}`);
        nb.affine(x, 0.37, -2.5, x);
        expectClose(x, want, 1e-6, 1e-6, `affine in place n=${n}`);
      }
    });

    it('binary: contiguous, row/column broadcast, scalar, transposed views, N-d, all ops', () => {
      setup();
      const ops: BinaryOp[] = ['add', 'sub', 'mul', 'div', 'max', 'min', 'pow'];
      const cases: { name: string; shape: number[]; aLen: number; as: number[]; bLen: number; bs: number[] }[] = [
        { name: 'same', shape: [7, 33], aLen: 231, as: [33, 1], bLen: 231, bs: [33, 1] },
        { name: 'row-vector b', shape: [9, 257], aLen: 9 * 257, as: [257, 1], bLen: 257, bs: [0, 1] },
        { name: 'column b', shape: [33, 17], aLen: 33 * 17, as: [17, 1], bLen: 33, bs: [1, 0] },
        { name: 'scalar b', shape: [5, 7], aLen: 35, as: [7, 1], bLen: 1, bs: [0, 0] },
        { name: 'scalar a', shape: [40], aLen: 1, as: [0], bLen: 40, bs: [1] },
        { name: 'transposed a', shape: [13, 11], aLen: 143, as: [1, 13], bLen: 143, bs: [11, 1] },
        { name: '4-d broadcast', shape: [2, 3, 1, 5], aLen: 30, as: [15, 5, 0, 1], bLen: 6, bs: [0, 1, 0, 0] },
        { name: '3-d mixed', shape: [4, 6, 9], aLen: 216, as: [1, 4, 24], bLen: 54, bs: [0, 9, 1] },
        { name: 'large', shape: [300, 700], aLen: 210000, as: [700, 1], bLen: 700, bs: [0, 1] },
        { name: '0-d', shape: [], aLen: 1, as: [], bLen: 1, bs: [] },
        { name: 'empty', shape: [3, 0, 4], aLen: 0, as: [0, 4, 1], bLen: 4, bs: [0, 0, 1] },
      ];
      let seed = 900;
      for (const op of ops)
        for (const c of cases) {
          const n = c.shape.reduce((s, v) => s * v, 1);
          let a = randArray(c.aLen, seed++, -3, 3), b = randArray(c.bLen, seed++, -3, 3);
          if (op === 'pow') {
            a = a.map((v, i) => (i % 4 === 0 ? -Math.round(Math.abs(v)) : Math.abs(v)));
            b = b.map((v, i) => (i % 3 === 0 ? Math.round(v) : v));
          }
          if (c.aLen > 8) a.set([NaN, Infinity, -Infinity, 0, -0, 1, -1, 2].slice(0, 8), 0);
          if (c.bLen > 8) b.set([1, NaN, 0, Infinity, -Infinity, 0.5, 2, -0], 0);
          const got = new Float32Array(n), want = new Float32Array(n);
          const shape = new Int32Array(c.shape);
          nb.binary(op, a, new Int32Array(c.as), b, new Int32Array(c.bs), got, shape);
          ref.binary(op, a, new Int32Array(c.as), b, new Int32Array(c.bs), want, shape);
          expectClose(got, want, 1e-6, 1e-37, `binary ${op} ${c.name}`);
        }
    });

    it('reduce sum/max/min over the middle axis', () => {
      setup();
      const ops: ReduceOp[] = ['sum', 'max', 'min'];
      let seed = 1000;
      for (const op of ops)
        for (const [outer, len, inner] of [[1, 1, 1], [3, 7, 1], [2, 33, 5], [1, 257, 300], [5, 0, 3], [40, 1000, 1], [3, 100, 2000], [1, 100000, 1]]) {
          const x = randArray(outer * len * inner, seed++, -5, 5);
          if (x.length > 20) x[17] = op === 'sum' ? 1e4 : NaN;
          const got = new Float32Array(outer * inner), want = new Float32Array(outer * inner);
          nb.reduce(op, x, outer, len, inner, got);
          ref.reduce(op, x, outer, len, inner, want);
          expectClose(got, want, 1e-6, op === 'sum' ? 1e-6 * Math.sqrt(len) : 0, `reduce ${op} [${outer},${len},${inner}]`);
        }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// row-wise

export function rowwiseTests(nb: Backend, setup: () => void): void {
  describe('row-wise', () => {
    it('rotary: bit-identical to the reference (both layouts, offsets, inverse, in place)', () => {
      setup();
      let seed = 1500;
      for (const [rows, seqLen, heads, dim, start] of [[8, 8, 1, 2, 0], [96, 12, 4, 32, 5], [70, 7, 2, 6, 0], [0, 4, 1, 8, 0]]) {
        const positions = start + seqLen, half = dim / 2;
        const cos = randArray(positions * half, seed++, -1, 1), sin = randArray(positions * half, seed++, -1, 1);
        const x = randArray(rows * dim, seed++, -4, 4);
        for (const inverse of [false, true]) {
          const want = new Float32Array(x.length), got = new Float32Array(x.length);
          ref.rotary(x, want, cos, sin, rows, seqLen, heads, dim, start, inverse);
          nb.rotary(x, got, cos, sin, rows, seqLen, heads, dim, start, inverse);
          expect(Array.from(got)).toEqual(Array.from(want));
          const inPlace = Float32Array.from(x);
          nb.rotary(inPlace, inPlace, cos, sin, rows, seqLen, heads, dim, start, inverse);
          expect(Array.from(inPlace)).toEqual(Array.from(want));
        }
      }
    });

    // [2048, 8]: an 8-expert router's rows, narrower than a vector and split across threads
    const shapes: [number, number][] = [[1, 1], [3, 7], [7, 33], [5, 257], [64, 1000], [300, 257], [2048, 8], [0, 5], [4, 0]];

    it('softmax, log-softmax, softmaxGrad, logsumexp (incl. -inf entries and large magnitudes)', () => {
      setup();
      let seed = 1100;
      for (const [rows, cols] of shapes)
        for (const wide of [false, true]) {
          const n = rows * cols;
          const x = wide ? wideArray(n, seed++) : randArray(n, seed++, -8, 8);
          if (n > 10) {
            x[3] = -Infinity;
            if (cols > 2) for (let c = 0; c < cols; c++) x[cols + c] = -Infinity; // an all -inf row
          }
          for (const log of [false, true]) {
            const got = new Float32Array(n), want = new Float32Array(n);
            nb.softmax(x, rows, cols, log, got);
            ref.softmax(x, rows, cols, log, want);
            expectClose(got, want, 2e-6, log ? 1e-6 : 1e-12, `softmax log=${log} [${rows},${cols}] wide=${wide}`);
            const dy = randArray(n, seed++, -1, 1);
            const y = want.map((v) => (Number.isNaN(v) ? 0 : v));
            const gd = new Float32Array(n), wd = new Float32Array(n);
            nb.softmaxGrad(y, dy, rows, cols, log, gd);
            ref.softmaxGrad(y, dy, rows, cols, log, wd);
            expectClose(gd, wd, 2e-6, 1e-7, `softmaxGrad log=${log} [${rows},${cols}] wide=${wide}`);
          }
          const got = new Float32Array(rows), want = new Float32Array(rows);
          nb.logsumexp(x, rows, cols, got);
          ref.logsumexp(x, rows, cols, want);
          expectClose(got, want, 1e-6, 1e-6, `logsumexp [${rows},${cols}] wide=${wide}`);
        }
    });

    it('rmsNorm and rmsNormGrad (w null / set, dw accumulates)', () => {
      setup();
      let seed = 1200;
      for (const [rows, cols] of shapes)
        for (const withW of [false, true])
          for (const wide of [false, true]) {
            const n = rows * cols;
            const x = wide ? wideArray(n, seed++) : randArray(n, seed++, -3, 3);
            const w = withW ? randArray(cols, seed++, 0.5, 1.5) : null;
            const got = new Float32Array(n), want = new Float32Array(n), rg = new Float32Array(rows), rw = new Float32Array(rows);
            nb.rmsNorm(x, w, rows, cols, 1e-5, got, rg);
            ref.rmsNorm(x, w, rows, cols, 1e-5, want, rw);
            expectClose(got, want, 1e-6, 1e-7, `rmsNorm [${rows},${cols}] w=${withW} wide=${wide}`);
            expectClose(rg, rw, 1e-6, 0, `rmsNorm rstd [${rows},${cols}]`);
            const dy = randArray(n, seed++, -1, 1);
            const gdx = new Float32Array(n), wdx = new Float32Array(n);
            const gdw = withW ? randArray(cols, 77) : null, wdw = gdw ? gdw.slice() : null;
            nb.rmsNormGrad(x, w, rw, dy, rows, cols, gdx, gdw);
            ref.rmsNormGrad(x, w, rw, dy, rows, cols, wdx, wdw);
            expectClose(gdx, wdx, 2e-6, 1e-6 * Math.max(...Array.from(rw, (v) => (Number.isFinite(v) ? v : 0)), 0), `rmsNormGrad dx [${rows},${cols}]`);
            if (gdw && wdw) expectClose(gdw, wdw, 1e-6, 1e-6, `rmsNormGrad dw [${rows},${cols}]`);
          }
    });

    it('layerNorm and layerNormGrad (w/b null or set, dw/db accumulate)', () => {
      setup();
      let seed = 1300;
      for (const [rows, cols] of shapes)
        for (const [withW, withB] of [[false, false], [true, false], [false, true], [true, true]])
          for (const wide of [false, true]) {
            const n = rows * cols;
            const x = wide ? wideArray(n, seed++) : randArray(n, seed++, -3, 3);
            const w = withW ? randArray(cols, seed++, 0.5, 1.5) : null;
            const b = withB ? randArray(cols, seed++, -1, 1) : null;
            const got = new Float32Array(n), want = new Float32Array(n);
            const gm = new Float32Array(rows), gr = new Float32Array(rows), wm = new Float32Array(rows), wr = new Float32Array(rows);
            nb.layerNorm(x, w, b, rows, cols, 1e-5, got, gm, gr);
            ref.layerNorm(x, w, b, rows, cols, 1e-5, want, wm, wr);
            expectClose(got, want, 1e-6, 1e-6, `layerNorm [${rows},${cols}] w=${withW} b=${withB} wide=${wide}`);
            expectClose(gm, wm, 1e-6, 0, 'layerNorm mean');
            expectClose(gr, wr, 1e-6, 0, 'layerNorm rstd');
            const dy = randArray(n, seed++, -1, 1);
            const gdx = new Float32Array(n), wdx = new Float32Array(n);
            const gdw = randArray(cols, 78), wdw = gdw.slice(), gdb = randArray(cols, 79), wdb = gdb.slice();
            nb.layerNormGrad(x, w, wm, wr, dy, rows, cols, gdx, withW ? gdw : null, withB ? gdb : null);
            ref.layerNormGrad(x, w, wm, wr, dy, rows, cols, wdx, withW ? wdw : null, withB ? wdb : null);
            const maxR = Math.max(0, ...Array.from(wr));
            expectClose(gdx, wdx, 2e-6, 2e-6 * maxR, `layerNormGrad dx [${rows},${cols}]`);
            expectClose(gdw, wdw, 1e-6, 1e-6, `layerNormGrad dw [${rows},${cols}]`);
            expectClose(gdb, wdb, 1e-6, 1e-6, `layerNormGrad db [${rows},${cols}]`);
          }
    });

    it('rowDot', () => {
      setup();
      for (const [rows, cols] of shapes) {
        const a = wideArray(rows * cols, rows + 1), b = randArray(rows * cols, cols + 2);
        const got = new Float32Array(rows), want = new Float32Array(rows);
        nb.rowDot(a, b, rows, cols, got);
        ref.rowDot(a, b, rows, cols, want);
        expectClose(got, want, 1e-6, 1e-6, `rowDot [${rows},${cols}]`);
      }
    });

    it('loraMixture: routes, gates, logits and the low-rank update as the reference (every mode, mixed ranks, exact ties)', () => {
      setup();
      let seed = 2600;
      // [rows, d, out, ranks, mode, k]
      const cases: [number, number, number, number[], number, number][] = [
        [1, 128, 128, [8, 8, 8, 8, 8, 8, 8, 8], LORA_MIX_TOPK, 2],
        [16, 128, 96, [8, 8, 8, 8, 8, 8, 8, 8], LORA_MIX_TOPK, 2],
        [5, 13, 7, [4, 0, 2, 9, 1], LORA_MIX_TOPK, 3],
        [3, 40, 33, [8, 8, 8], LORA_MIX_TOPK, 1],
        [4, 64, 20, [2, 6, 70, 3], LORA_MIX_TOPK_SOFTMAX, 2],
        [6, 24, 17, [3, 5, 2, 4], LORA_MIX_DENSE, 4],
        [2, 128, 128, [8], LORA_MIX_ALL, 1],
        [0, 16, 8, [4, 4], LORA_MIX_TOPK, 1],
      ];
      for (const [rows, d, out, ranks, mode, k] of cases) {
        const n = ranks.length, sumR = ranks.reduce((a, b) => a + b, 0);
        const label = `loraMixture rows=${rows} d=${d} out=${out} ranks=${ranks} mode=${mode} k=${k}`;
        const x = randArray(rows * d, seed++, -2, 2);
        const router = mode === LORA_MIX_ALL ? null : randArray(n * d, seed++, -0.5, 0.5);
        // Two identical router rows: their logits tie exactly on every backend; the lower index must win.
        if (router && n >= 3) router.copyWithin(2 * d, 0, d);
        const A = randArray(sumR * d, seed++, -0.3, 0.3), B = randArray(sumR * out, seed++, -0.3, 0.3);
        const scales = randArray(n, seed++, 0.5, 2);
        const dims = new Int32Array([rows, d, out, n, k, mode, ...ranks]);
        const y0 = randArray(rows * out, seed++);
        const run = (b: Backend) => {
          const r = { experts: new Int32Array(rows * k), gates: new Float32Array(rows * k), logits: new Float32Array(rows * n), y: y0.slice() };
          b.loraMixture(x, router, A, B, scales, dims, r.experts, r.gates, router ? r.logits : null, r.y);
          return r;
        };
        const got = run(nb), want = run(ref);
        expect(Array.from(got.experts), `${label}: experts`).toEqual(Array.from(want.experts));
        expectClose(got.gates, want.gates, 1e-5, 1e-6, `${label}: gates`);
        expectClose(got.logits, want.logits, 1e-5, 1e-5, `${label}: logits`);
        expectClose(got.y, want.y, 1e-5, 1e-5, `${label}: y`);
        if (router && n >= 3 && mode !== LORA_MIX_DENSE)
          for (let t = 0; t < rows; t++) {
            const picks = Array.from(got.experts.subarray(t * k, (t + 1) * k));
            expect(picks.includes(2) && !picks.includes(0), `${label}: row ${t} tie between adapters 0 and 2`).toBe(false);
          }
      }
      const f = (len: number): Float32Array => new Float32Array(len);
      const dims = (k: number, mode: number): Int32Array => new Int32Array([1, 4, 2, 2, k, mode, 1, 1]);
      expect(() => nb.loraMixture(f(4), f(8), f(8), f(4), f(2), dims(3, LORA_MIX_TOPK), new Int32Array(3), f(3), null, f(2))).toThrow(RangeError);
      expect(() => nb.loraMixture(f(4), f(8), f(8), f(4), f(2), dims(1, LORA_MIX_DENSE), new Int32Array(1), f(1), null, f(2))).toThrow(RangeError);
      expect(() => nb.loraMixture(f(4), f(8), f(8), f(4), f(2), dims(1, 7), new Int32Array(1), f(1), null, f(2))).toThrow(RangeError);
      expect(() => nb.loraMixture(f(4), null, f(8), f(4), f(2), dims(1, LORA_MIX_TOPK), new Int32Array(1), f(1), null, f(2))).toThrow(TypeError);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// indexing

export function indexingTests(nb: Backend, setup: () => void): void {
  describe('indexing', () => {
    it('topKRows: per row the k largest, descending, ties to the lower column, NaN first (against a full sort)', () => {
      setup();
      let seed = 1700;
      // [2048, 8] and [300, 64]: routers' shapes, split across threads
      for (const [rows, cols] of [[1, 1], [5, 7], [2048, 8], [300, 64], [3, 100], [0, 4]]) {
        const x = randArray(rows * cols, seed++, -2, 2).map((v) => Math.round(v * 4) / 4); // many ties
        if (x.length > 20) {
          x[5] = NaN;
          x[6] = NaN;
          x[17] = -Infinity;
          x[18] = Infinity;
          x[19] = -0;
        }
        for (const k of new Set([0, 1, 2, 4, cols].filter((v) => v <= cols))) {
          const vals = new Float32Array(rows * k), inds = new Int32Array(rows * k);
          nb.topKRows(x, rows, cols, k, vals, inds);
          for (let r = 0; r < rows; r++) {
            const at = (c: number) => x[r * cols + c];
            const order = Array.from({ length: cols }, (_, c) => c).sort((a, b) => {
              const u = at(a), v = at(b);
              if (Number.isNaN(u) !== Number.isNaN(v)) return Number.isNaN(u) ? -1 : 1;
              if (!Number.isNaN(u) && u !== v) return v > u ? 1 : -1;
              return a - b;
            }).slice(0, k);
            expect(Array.from(inds.subarray(r * k, r * k + k)), `row ${r} of [${rows}, ${cols}], k=${k}`).toEqual(order);
            expect(Array.from(vals.subarray(r * k, r * k + k))).toEqual(order.map(at));
          }
        }
      }
      expect(() => nb.topKRows(new Float32Array(3), 1, 3, 4, new Float32Array(4), new Int32Array(4))).toThrow(/k=4/);
      expect(() => nb.topKRows(new Float32Array(6), 2, 3, 2, new Float32Array(3), new Int32Array(4))).toThrow(/values/);
    });

    it('gatherRows', () => {
      setup();
      for (const [rows, cols, nidx] of [[5, 1, 7], [33, 7, 100], [1000, 257, 3000], [4, 0, 3], [4, 3, 0]]) {
        const src = randArray(rows * cols, rows);
        const idx = new Int32Array(nidx).map((_, i) => (i * 7 + 3) % rows);
        const got = new Float32Array(nidx * cols), want = new Float32Array(nidx * cols);
        nb.gatherRows(src, idx, cols, got);
        ref.gatherRows(src, idx, cols, want);
        expect(bitsEqual(got, want), `gatherRows [${rows},${cols}] x${nidx}`).toBe(true);
      }
    });

    it('scatterAddRows with duplicate indices (weighted and unweighted, narrow and wide rows)', () => {
      setup();
      for (const [rows, cols, nidx] of [[5, 1, 7], [33, 7, 100], [50, 3, 40000], [40, 600, 500], [12, 1100, 70], [4, 0, 3]])
        for (const weighted of [false, true]) {
          const src = wideArray(nidx * cols, nidx);
          const idx = new Int32Array(nidx).map((_, i) => (i * 13 + (i >> 3)) % rows);
          const w = weighted ? randArray(nidx, 5, -2, 2) : null;
          const base = randArray(rows * cols, 6);
          const got = base.slice(), want = base.slice();
          nb.scatterAddRows(src, idx, w, cols, got);
          ref.scatterAddRows(src, idx, w, cols, want);
          // magnitude-aware: sums of ~1e4 terms carry ~1e4·eps absolute error
          expectClose(got, want, 1e-6, 1e-3 * (weighted ? 2 : 1), `scatterAddRows [${rows},${cols}] x${nidx} w=${weighted}`);
        }
    });

    it('gatherRowsScaled: w ⊙ g[idx] and rowDot(g[idx], y), as gatherRows + rowDot + multiply give them', () => {
      setup();
      for (const [rows, cols, nidx] of [[5, 1, 7], [33, 7, 100], [2048, 256, 4096], [700, 1030, 90], [4, 0, 3], [4, 3, 0]])
        for (const withDot of [true, false]) {
          const g = randArray(rows * cols, rows + 1);
          const idx = new Int32Array(nidx).map((_, i) => (i * 7 + (i >> 1)) % rows); // repeats, like top-k
          const w = randArray(nidx, nidx + 2, -2, 2), y = randArray(nidx * cols, nidx + 3);
          const out = new Float32Array(nidx * cols).fill(Number.NaN), dot = withDot ? new Float32Array(nidx).fill(Number.NaN) : null;
          nb.gatherRowsScaled(g, idx, cols, w, out, withDot ? y : null, dot);
          // the same backend's three separate kernels: identical values
          const gathered = new Float32Array(nidx * cols), scaled = new Float32Array(nidx * cols), dots = new Float32Array(nidx);
          nb.gatherRows(g, idx, cols, gathered);
          nb.rowDot(gathered, y, nidx, cols, dots);
          if (nidx * cols > 0) nb.binary('mul', gathered, Int32Array.of(cols, 1), w, Int32Array.of(1, 0), scaled, Int32Array.of(nidx, cols));
          const label = `gatherRowsScaled [${rows},${cols}] x${nidx} dot=${withDot}`;
          expect(bitsEqual(out, scaled), label).toBe(true);
          if (dot) expect(bitsEqual(dot, dots), `${label}: dot`).toBe(true);
          // and against the reference (its rowDot sums in another order)
          const rOut = new Float32Array(nidx * cols), rDot = new Float32Array(nidx);
          ref.gatherRowsScaled(g, idx, cols, w, rOut, y, rDot);
          expect(bitsEqual(out, rOut), `${label} vs reference`).toBe(true);
          if (dot) expectClose(dot, rDot, 1e-5, 1e-5, `${label}: dot vs reference`);
        }
    });

    it('gatherRowsScaled rejects a lone dotWith or dot, short buffers and bad indices', () => {
      setup();
      const g = randArray(12, 1), w = randArray(3, 2), out = new Float32Array(12), idx = Int32Array.of(0, 2, 1);
      expect(() => nb.gatherRowsScaled(g, idx, 4, w, out, new Float32Array(12), null)).toThrow(/dotWith and dot/);
      expect(() => nb.gatherRowsScaled(g, idx, 4, w.subarray(0, 2), out, null, null)).toThrow(/w has 2 elements/);
      expect(() => nb.gatherRowsScaled(g, idx, 4, w, out.subarray(0, 11), null, null)).toThrow(/out has 11 elements/);
      expect(() => nb.gatherRowsScaled(g, idx, 4, w, out, new Float32Array(12), new Float32Array(2))).toThrow(/dot has 2 elements/);
    });

    it('permute: 2-d transpose, 3-d/4-d permutations, size-1 dims, identity', () => {
      setup();
      const cases: [number[], number[]][] = [
        [[7, 33], [1, 0]],
        [[300, 257], [1, 0]],
        [[2, 3, 4], [2, 0, 1]],
        [[5, 1, 6, 7], [3, 1, 0, 2]],
        [[8, 9, 10], [0, 2, 1]],
        [[3, 4, 5, 6], [0, 1, 2, 3]],
        [[64, 32, 48], [1, 2, 0]],
        [[1], [0]],
        [[3, 0, 2], [2, 1, 0]],
      ];
      for (const [shape, perm] of cases) {
        const n = shape.reduce((s, v) => s * v, 1);
        const x = randArray(n, n + 3);
        const got = new Float32Array(n), want = new Float32Array(n);
        nb.permute(x, new Int32Array(shape), new Int32Array(perm), got);
        ref.permute(x, new Int32Array(shape), new Int32Array(perm), want);
        expect(bitsEqual(got, want), `permute ${JSON.stringify(shape)} by ${JSON.stringify(perm)}`).toBe(true);
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// optimizer kernels

/** Bit-identical, except that any NaN matches any NaN (payloads are not specified by JS). */
export function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const ia = new Uint32Array(a.buffer, a.byteOffset, a.length), ib = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < a.length; i++) if (ia[i] !== ib[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return false;
  return true;
}

type AdamwHyper = { beta1: number; beta2: number; stepSize: number; bc2Sqrt: number; eps: number; decay: number; sign: number };

/** The scalars exactly as src/optim/adamw.ts computes them for step t. */
export function adamwHyper(lr: number, betas: [number, number], eps: number, wd: number, t: number, maximize: boolean): AdamwHyper {
  const [beta1, beta2] = betas;
  return {
    beta1,
    beta2,
    stepSize: lr / (1 - beta1 ** t),
    bc2Sqrt: Math.sqrt(1 - beta2 ** t),
    eps,
    decay: wd !== 0 ? 1 - lr * wd : 1,
    sign: maximize ? -1 : 1,
  };
}

/**
 * Parameters, gradients and moment state with mixed magnitudes (~1e-4 .. ~1e4), plus a sprinkling of
 * zeros, huge gradients (~1e19: g² overflows float32, so v becomes Inf) and tiny ones (~1e-30).
 */
export function adamwState(n: number, seed: number, amsgrad: boolean) {
  const r = rng(seed + 1000);
  const p = wideArray(n, seed), grad = wideArray(n, seed + 1), m = wideArray(n, seed + 2);
  const v = wideArray(n, seed + 3).map((x) => x * x);
  const vmax = amsgrad ? v.map((x) => x * (r() < 0.5 ? 0.5 : 2)) : null;
  for (let i = 0; i < n; i++) {
    const u = r();
    if (u < 0.02) grad[i] = 0;
    else if (u < 0.03) grad[i] = (r() - 0.5) * 6e19;
    else if (u < 0.04) grad[i] = (r() - 0.5) * 1e-30;
    else if (u < 0.05) m[i] = v[i] = 0;
    else if (u < 0.06 && vmax) vmax[i] = 0;
  }
  return { p, grad, m, v, vmax };
}

export function optimizerTests(nb: Backend, setup: () => void): void {
  describe('optimizer kernels', () => {
    const sizes = [0, 1, 7, 33, 257, 100_003];

    it('sumSquares vs the reference within 1e-12 relative (random sizes, large magnitudes)', () => {
      setup();
      const r = rng(5);
      const extra = [65535, 65536, 65537, 200_000 + Math.floor(r() * 100_000)];
      for (const n of [...sizes, ...extra])
        for (const [label, x] of [
          ['wide', wideArray(n, n + 1)],
          ['uniform', randArray(n, n + 2, -2, 2)],
          ['huge', randArray(n, n + 3, -3e19, 3e19)], // x² overflows float32, not float64
        ] as const) {
          const got = nb.sumSquares(x), want = ref.sumSquares(x);
          if (n === 0) expect(got).toBe(0);
          expect(Math.abs(got - want), `sumSquares ${label} n=${n}: got ${got}, want ${want}`).toBeLessThanOrEqual(1e-12 * want);
        }
      // non-finite values propagate as in the reference
      expect(nb.sumSquares(new Float32Array([1, Infinity, 2]))).toBe(Infinity);
      expect(nb.sumSquares(new Float32Array(70_000).fill(1).fill(NaN, 69_000, 69_001))).toBeNaN();
    });

    it('adamw bit-identical to the reference: sizes 0..100003, AMSGrad on/off, decay 1 and != 1, maximize', () => {
      setup();
      for (const n of sizes)
        for (const amsgrad of [false, true])
          for (const wd of [0, 1e-2, 0.5])
            for (const maximize of [false, true]) {
              const seed = n + (amsgrad ? 7 : 0) + (maximize ? 13 : 0) + wd * 100;
              const mine = adamwState(n, seed, amsgrad), want = adamwState(n, seed, amsgrad);
              const label = `adamw n=${n} amsgrad=${amsgrad} wd=${wd} maximize=${maximize}`;
              // three steps: bias corrections change with t, and later steps read state written by native
              for (let t = 1; t <= 3; t++) {
                const h = adamwHyper(t === 3 ? 3e-2 : 1e-3, [0.9, 0.999], 1e-8, wd, t, maximize);
                if (wd === 0) expect(h.decay).toBe(1);
                nb.adamw(mine.p, mine.grad, mine.m, mine.v, mine.vmax, h);
                ref.adamw(want.p, want.grad, want.m, want.v, want.vmax, h);
              }
              expect(sameBits(mine.p, want.p), `${label}: p`).toBe(true);
              expect(sameBits(mine.m, want.m), `${label}: m`).toBe(true);
              expect(sameBits(mine.v, want.v), `${label}: v`).toBe(true);
              if (amsgrad) expect(sameBits(mine.vmax as Float32Array, want.vmax as Float32Array), `${label}: vmax`).toBe(true);
              expect(sameBits(mine.grad, want.grad), `${label}: grad untouched`).toBe(true);
            }
    });

    it('adamw with unusual scalars (betas 0, odd sign/decay, eps 0) and NaN inputs matches the reference', () => {
      setup();
      const n = 4099;
      const hs: AdamwHyper[] = [
        { beta1: 0, beta2: 0, stepSize: 0.1, bc2Sqrt: 1, eps: 0, decay: 0.75, sign: -1 },
        { beta1: 0.5, beta2: 0.25, stepSize: 3, bc2Sqrt: 0.3, eps: 1e-3, decay: 1, sign: 0.5 },
        { beta1: 0.99, beta2: 0.9999, stepSize: 1e-5, bc2Sqrt: 0.01, eps: 1e-12, decay: -2, sign: 1 },
      ];
      for (const [k, h] of hs.entries())
        for (const amsgrad of [false, true]) {
          const mine = adamwState(n, 40 + k, amsgrad), want = adamwState(n, 40 + k, amsgrad);
          for (const st of [mine, want]) {
            st.grad[5] = NaN;
            st.p[6] = NaN;
            st.m[7] = NaN;
            if (st.vmax) st.vmax[8] = NaN;
            st.v[9] = NaN;
          }
          nb.adamw(mine.p, mine.grad, mine.m, mine.v, mine.vmax, h);
          ref.adamw(want.p, want.grad, want.m, want.v, want.vmax, h);
          const label = `adamw scalars #${k} amsgrad=${amsgrad}`;
          expect(sameBits(mine.p, want.p), `${label}: p`).toBe(true);
          expect(sameBits(mine.m, want.m), `${label}: m`).toBe(true);
          expect(sameBits(mine.v, want.v), `${label}: v`).toBe(true);
          if (amsgrad) expect(sameBits(mine.vmax as Float32Array, want.vmax as Float32Array), `${label}: vmax`).toBe(true);
        }
    });
  });
}
