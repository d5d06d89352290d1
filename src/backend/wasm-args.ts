/**
 * Argument checks for the browser backends (wasm, WebGPU), with the same errors and messages as
 * the native addon's checks (native/addon.c): a kernel that copies its arguments into linear memory
 * or GPU buffers must know every extent before it touches anything, and a rejected call writes
 * nothing. TypeError for a wrong argument type, RangeError (naming the argument) for a bad size.
 */
import { GEMM_PARAMS } from './interface.js';

/** x must be a Float32Array (or null when nullable). */
export function f32(x: unknown, name: string, nullable = false): Float32Array | null {
  if (x === null || x === undefined) {
    if (nullable) return null;
    throw new TypeError(`${name} must be a Float32Array`);
  }
  if (!(x instanceof Float32Array)) throw new TypeError(`${name} must be a Float32Array${nullable ? ' or null' : ''}`);
  return x;
}

/** x must be an Int32Array. */
export function i32(x: unknown, name: string): Int32Array {
  if (!(x instanceof Int32Array)) throw new TypeError(`${name} must be an Int32Array`);
  return x;
}

/** A non-negative integer count (< 2^53). */
export function count(x: unknown, name: string): number {
  if (typeof x !== 'number') throw new TypeError(`${name} must be a number`);
  if (!(x >= 0) || x !== Math.floor(x) || x > Number.MAX_SAFE_INTEGER) {
    throw new RangeError(`${name} must be a non-negative integer (got ${x})`);
  }
  return x;
}

/** A finite-or-not number (scalars such as eps, scale). */
export function num(x: unknown, name: string): number {
  if (typeof x !== 'number') throw new TypeError(`${name} must be a number`);
  return x;
}

/** len >= want, else RangeError naming the argument. */
export function need(name: string, len: number, want: number): void {
  if (len < want) throw new RangeError(`${name} has ${len} elements, needs at least ${want}`);
}

/** The largest element count a single browser-backend call accepts (wasm32 linear memory). */
export const MAX_ELEMENTS = 2 ** 29;

/** a·b, rejecting sizes no browser backend can hold. */
export function mul(a: number, b: number): number {
  const p = a * b;
  if (p > MAX_ELEMENTS) throw new RangeError(`size ${a} x ${b} is too large`);
  return p;
}

/** Every task of a gemm task list within its buffers (the checks of addon.c's js_gemm). */
export function checkGemm(buffers: readonly Float32Array[], params: Int32Array): number {
  if (!Array.isArray(buffers)) throw new TypeError('buffers must be an array of Float32Array');
  i32(params, 'params');
  if (params.length % GEMM_PARAMS !== 0) {
    throw new RangeError(`params.length=${params.length} is not a multiple of ${GEMM_PARAMS}`);
  }
  const ntasks = params.length / GEMM_PARAMS;
  const which = ['aBuf', 'bBuf', 'cBuf'];
  for (let t = 0; t < ntasks; t++) {
    const p = params.subarray(t * GEMM_PARAMS, (t + 1) * GEMM_PARAMS);
    const [ab, ao, lda, bb, bo, ldb, cb, co, ldc, m, n, k, flags] = p;
    const bi = [ab, bb, cb];
    for (let q = 0; q < 3; q++) {
      if (bi[q] < 0 || bi[q] >= buffers.length) {
        throw new RangeError(`task ${t}: ${which[q]}=${bi[q]} names a missing buffer (${buffers.length} buffers)`);
      }
      if (!(buffers[bi[q]] instanceof Float32Array)) {
        throw new TypeError(`task ${t}: buffers[${bi[q]}] (${which[q]}) is not a Float32Array`);
      }
    }
    if (m < 0 || n < 0 || k < 0) throw new RangeError(`task ${t}: negative size (m=${m}, n=${n}, k=${k})`);
    if (ao < 0 || bo < 0 || co < 0 || lda < 0 || ldb < 0 || ldc < 0) {
      throw new RangeError(`task ${t}: negative offset or leading dimension`);
    }
    const ta = (flags & 1) !== 0, tb = (flags & 2) !== 0;
    if (m > 0 && n > 0) {
      if (m > 1 && ldc < n) throw new RangeError(`task ${t}: ldc=${ldc} < n=${n} would make C rows overlap`);
      const cend = co + (m - 1) * ldc + n;
      if (cend > buffers[cb].length) {
        throw new RangeError(
          `task ${t}: C (buffers[${cb}]) needs ${cend} elements (cOff=${co}, ldc=${ldc}, m=${m}, n=${n}), has ${buffers[cb].length}`,
        );
      }
      if (k > 0) {
        const aend = ta ? ao + (k - 1) * lda + m : ao + (m - 1) * lda + k;
        if (aend > buffers[ab].length) {
          throw new RangeError(
            `task ${t}: A (buffers[${ab}]) needs ${aend} elements (aOff=${ao}, lda=${lda}, ${ta ? 'transposed' : 'row-major'}), has ${buffers[ab].length}`,
          );
        }
        const bend = tb ? bo + (n - 1) * ldb + k : bo + (k - 1) * ldb + n;
        if (bend > buffers[bb].length) {
          throw new RangeError(
            `task ${t}: B (buffers[${bb}]) needs ${bend} elements (bOff=${bo}, ldb=${ldb}, ${tb ? 'transposed' : 'row-major'}), has ${buffers[bb].length}`,
          );
        }
      }
    }
  }
  return ntasks;
}

/** Every a[Σ idx_d·s_d] of a strided view within [0, len). */
export function checkStrided(name: string, len: number, shape: Int32Array, strides: Int32Array): void {
  let lo = 0, hi = 0;
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 0) return;
    const span = (shape[d] - 1) * strides[d];
    if (span > 0) hi += span;
    else lo += span;
  }
  if (lo < 0 || hi >= len) {
    throw new RangeError(`${name} has ${len} elements, but its strides reach index ${lo < 0 ? lo : hi}`);
  }
}

/** binary(): strides and shape agree and stay inside a and b; returns the element count. */
export function checkBinary(a: Float32Array, aStrides: Int32Array, b: Float32Array, bStrides: Int32Array, out: Float32Array, outShape: Int32Array): number {
  f32(a, 'a');
  i32(aStrides, 'aStrides');
  f32(b, 'b');
  i32(bStrides, 'bStrides');
  f32(out, 'out');
  i32(outShape, 'outShape');
  const nd = outShape.length;
  if (aStrides.length !== nd || bStrides.length !== nd) {
    throw new RangeError(`aStrides.length=${aStrides.length} and bStrides.length=${bStrides.length} must equal outShape.length=${nd}`);
  }
  if (nd > 32) throw new RangeError(`outShape has ${nd} dimensions (max 32)`);
  let total = 1;
  for (let d = 0; d < nd; d++) {
    if (outShape[d] < 0) throw new RangeError(`outShape[${d}]=${outShape[d]} is negative`);
    total = mul(total, outShape[d]);
  }
  if (out.length !== total) throw new RangeError(`out has ${out.length} elements, outShape describes ${total}`);
  if (total > 0) {
    checkStrided('a', a.length, outShape, aStrides);
    checkStrided('b', b.length, outShape, bStrides);
  }
  return total;
}

/** permute(): perm is a permutation of 0..nd-1, x and out sized by shape; returns the count. */
export function checkPermute(x: Float32Array, shape: Int32Array, perm: Int32Array, out: Float32Array): number {
  f32(x, 'x');
  i32(shape, 'shape');
  i32(perm, 'perm');
  f32(out, 'out');
  const nd = shape.length;
  if (perm.length !== nd) throw new RangeError(`perm.length=${perm.length} must equal shape.length=${nd}`);
  if (nd > 32) throw new RangeError(`shape has ${nd} dimensions (max 32)`);
  const seen = new Uint8Array(nd);
  let total = 1;
  for (let d = 0; d < nd; d++) {
    if (shape[d] < 0) throw new RangeError(`shape[${d}]=${shape[d]} is negative`);
    if (perm[d] < 0 || perm[d] >= nd || seen[perm[d]]) throw new RangeError(`perm is not a permutation of 0..${nd - 1}`);
    seen[perm[d]] = 1;
    total = mul(total, shape[d]);
  }
  need('x', x.length, total);
  if (out.length !== total) throw new RangeError(`out has ${out.length} elements, the permuted shape has ${total}`);
  return total;
}

/** Every idx[i] in [0, rows) (only checked when rows of the table are non-empty, as in addon.c). */
export function checkIndices(idx: Int32Array, rows: number): void {
  for (let i = 0; i < idx.length; i++) {
    if (idx[i] < 0 || idx[i] >= rows) throw new RangeError(`idx[${i}]=${idx[i]} is out of range [0, ${rows})`);
  }
}

/** Two views share memory. */
export function overlaps(a: Float32Array, b: Float32Array): boolean {
  if (a.buffer !== b.buffer || a.length === 0 || b.length === 0) return false;
  return a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

/** The AdamW state buffers: typed, long enough, pairwise distinct; hyper-parameters numbers. */
export function checkAdamw(
  p: Float32Array,
  grad: Float32Array,
  m: Float32Array,
  v: Float32Array,
  vmax: Float32Array | null,
  h: Record<string, unknown>,
): void {
  f32(p, 'p');
  f32(grad, 'grad');
  f32(m, 'm');
  f32(v, 'v');
  f32(vmax, 'vmax', true);
  for (const key of ['beta1', 'beta2', 'stepSize', 'bc2Sqrt', 'eps', 'decay', 'sign']) num(h[key], key);
  const named: [string, Float32Array][] = [['p', p], ['grad', grad], ['m', m], ['v', v]];
  if (vmax) named.push(['vmax', vmax]);
  for (let i = 0; i < named.length; i++)
    for (let j = i + 1; j < named.length; j++)
      if (overlaps(named[i][1], named[j][1])) {
        throw new RangeError(`${named[i][0]} and ${named[j][0]} overlap (they must be distinct buffers)`);
      }
  need('grad', grad.length, p.length);
  need('m', m.length, p.length);
  need('v', v.length, p.length);
  if (vmax) need('vmax', vmax.length, p.length);
}
