/**
 * Backend.gemmGated as its two halves, a grouped GEMM and the element-wise gated kernel on each
 * task's rows: the definition every backend must match, and the implementation of backends that
 * do not fuse them (reference, wasm, WebGPU).
 */
import type { Activation, Backend, GatedGemmMode } from './interface.js';
import { GEMM_GATED_PARAMS, GEMM_TRANS_B } from './interface.js';

/** A [rows, cols] region at buffers[bi] + off with leading dimension ld, checked against the buffer. */
function region(buffers: readonly Float32Array[], t: number, name: string, bi: number, off: number, rows: number, cols: number, ld: number): Float32Array {
  const buf = buffers[bi];
  if (!(buf instanceof Float32Array)) throw new TypeError(`gemmGated: task ${t}: ${name}=${bi} is not a Float32Array in buffers`);
  if (off < 0 || ld < 0) throw new RangeError(`gemmGated: task ${t}: ${name} has a negative offset or leading dimension`);
  if (rows > 1 && ld < cols) throw new RangeError(`gemmGated: task ${t}: ld=${ld} < n=${cols} would make rows overlap`);
  const end = rows > 0 && cols > 0 ? off + (rows - 1) * ld + cols : off;
  if (end > buf.length) throw new RangeError(`gemmGated: task ${t}: ${name} (buffers[${bi}]) needs ${end} elements, has ${buf.length}`);
  return buf;
}

/** Rows of an [m, n] region as element ranges: one range when the rows are contiguous. */
function rowRanges(off: number, m: number, n: number, ld: number): Array<[number, number]> {
  if (ld === n || m <= 1) return [[off, off + m * n]];
  return Array.from({ length: m }, (_, r) => [off + r * ld, off + r * ld + n] as [number, number]);
}

/** gemmGated by composition: be.gemm for the products, then be.gatedAct / be.gatedActGrad. */
export function gemmGatedComposed(be: Backend, mode: GatedGemmMode, act: Activation, buffers: readonly Float32Array[], params: Int32Array): void {
  if (mode !== 'up' && mode !== 'down-grad') throw new RangeError(`gemmGated: mode=${String(mode)} must be 'up' or 'down-grad'`);
  if (params.length % GEMM_GATED_PARAMS !== 0) throw new RangeError(`gemmGated: params.length=${params.length} is not a multiple of ${GEMM_GATED_PARAMS}`);
  const ntasks = params.length / GEMM_GATED_PARAMS;
  const up = mode === 'up';
  const bufs = [...buffers];
  const gemm: number[] = [];
  const temps: Float32Array[] = [];
  for (let t = 0; t < ntasks; t++) {
    const p = params.subarray(t * GEMM_GATED_PARAMS, (t + 1) * GEMM_GATED_PARAMS);
    const [aBuf, aOff, lda, b1Buf, b1Off, b3Buf, b3Off, ldb, c1Buf, c1Off, c3Buf, c3Off, o1Buf, o1Off, o3Buf, o3Off, ld, m, n, k, transB] = p;
    if (m < 0 || n < 0 || k < 0) throw new RangeError(`gemmGated: task ${t}: negative size (m=${m}, n=${n}, k=${k})`);
    const dropped = up && c1Buf === -1 && c3Buf === -1; // products not kept: computed into temporaries
    if (!dropped) for (const [name, bi, off] of [['c1Buf', c1Buf, c1Off], ['c3Buf', c3Buf, c3Off]] as const) region(buffers, t, name, bi, off, m, n, ld);
    region(buffers, t, 'o1Buf', o1Buf, o1Off, m, n, ld);
    if (!up) region(buffers, t, 'o3Buf', o3Buf, o3Off, m, n, ld);
    const flags = transB ? GEMM_TRANS_B : 0;
    if (dropped) {
      const t1 = new Float32Array(m * n), t3 = new Float32Array(m * n);
      temps.push(t1, t3);
      bufs.push(t1, t3);
      gemm.push(aBuf, aOff, lda, b1Buf, b1Off, ldb, bufs.length - 2, 0, n, m, n, k, flags);
      gemm.push(aBuf, aOff, lda, b3Buf, b3Off, ldb, bufs.length - 1, 0, n, m, n, k, flags);
    } else if (up) {
      gemm.push(aBuf, aOff, lda, b1Buf, b1Off, ldb, c1Buf, c1Off, ld, m, n, k, flags);
      gemm.push(aBuf, aOff, lda, b3Buf, b3Off, ldb, c3Buf, c3Off, ld, m, n, k, flags);
    } else {
      const g = new Float32Array(m * n);
      temps.push(g);
      bufs.push(g);
      gemm.push(aBuf, aOff, lda, b1Buf, b1Off, ldb, bufs.length - 1, 0, n, m, n, k, flags);
    }
  }
  if (gemm.length > 0) be.gemm(bufs, Int32Array.from(gemm));
  let temp = 0;
  for (let t = 0; t < ntasks; t++) {
    const p = params.subarray(t * GEMM_GATED_PARAMS, (t + 1) * GEMM_GATED_PARAMS);
    const [c1Buf, c1Off, c3Buf, c3Off, o1Buf, o1Off, o3Buf, o3Off, ld, m, n] = [p[8], p[9], p[10], p[11], p[12], p[13], p[14], p[15], p[16], p[17], p[18]];
    const dropped = up && c1Buf === -1 && c3Buf === -1;
    if (m === 0 || n === 0) {
      temp += dropped ? 2 : up ? 0 : 1;
      continue;
    }
    const o1 = buffers[o1Buf];
    if (dropped) {
      const t1 = temps[temp++], t3 = temps[temp++];
      const ro = rowRanges(o1Off, m, n, ld);
      ro.forEach(([s, e], i) => {
        const rows = ro.length === 1 ? [0, m * n] : [i * n, (i + 1) * n];
        be.gatedAct(act, t1.subarray(rows[0], rows[1]), t3.subarray(rows[0], rows[1]), o1.subarray(s, e));
      });
    } else if (up) {
      const c1 = buffers[c1Buf], c3 = buffers[c3Buf];
      const r1 = rowRanges(c1Off, m, n, ld), r3 = rowRanges(c3Off, m, n, ld), ro = rowRanges(o1Off, m, n, ld);
      r1.forEach(([s, e], i) => be.gatedAct(act, c1.subarray(s, e), c3.subarray(r3[i][0], r3[i][1]), o1.subarray(ro[i][0], ro[i][1])));
    } else {
      const c1 = buffers[c1Buf], c3 = buffers[c3Buf];
      const g = temps[temp++], o3 = buffers[o3Buf];
      const r1 = rowRanges(c1Off, m, n, ld), r3 = rowRanges(c3Off, m, n, ld), ro1 = rowRanges(o1Off, m, n, ld), ro3 = rowRanges(o3Off, m, n, ld);
      r1.forEach(([s, e], i) => {
        const gs = r1.length === 1 ? g : g.subarray(i * n, (i + 1) * n);
        be.gatedActGrad(act, c1.subarray(s, e), c3.subarray(r3[i][0], r3[i][1]), gs, o1.subarray(ro1[i][0], ro1[i][1]), o3.subarray(ro3[i][0], ro3[i][1]));
      });
    }
  }
}
