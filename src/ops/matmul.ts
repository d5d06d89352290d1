/**
 * Matrix products on the backend's task-list GEMM: plain, batched (with batch broadcasting),
 * transposed operands, and `linear` (x·Wᵀ + b, PyTorch layout). Backward rules reuse the same
 * GEMM with transpose flags, so no transposed copy is ever materialised.
 */
import { GEMM_ACCUMULATE, GEMM_PARAMS, GEMM_TRANS_A, GEMM_TRANS_B } from '../backend/interface.js';
import { allocFloat32 } from '../backend/alloc.js';
import { acquireScratch } from '../backend/scratch.js';
import { ShapeError } from '../errors.js';
import { leafGradSink, pendingGradSink, record } from '../tensor/autodiff.js';
import { broadcastShapes, sizeOf } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { add } from './elementwise.js';
import { sumToShape } from './reduce.js';
import { be, requireFloat } from './util.js';

export interface MatmulOptions {
  /** Use the transpose of a's last two dimensions. */
  transA?: boolean;
  /** Use the transpose of b's last two dimensions. */
  transB?: boolean;
}

/**
 * C[batch] = op(A[batch]) · op(B[batch]) on 2-d-per-batch row-major buffers, batch offsets
 * precomputed. aRows/aCols are A's stored matrix dims; likewise for B.
 */
export function gemmBatched(
  a: Float32Array, aOffsets: readonly number[], aCols: number, transA: boolean,
  b: Float32Array, bOffsets: readonly number[], bCols: number, transB: boolean,
  c: Float32Array, cOffsets: readonly number[],
  m: number, n: number, k: number, accumulate: boolean,
): void {
  const tasks = cOffsets.length;
  const params = new Int32Array(tasks * GEMM_PARAMS);
  const flags = (transA ? GEMM_TRANS_A : 0) | (transB ? GEMM_TRANS_B : 0) | (accumulate ? GEMM_ACCUMULATE : 0);
  for (let t = 0; t < tasks; t++) {
    const p = t * GEMM_PARAMS;
    params[p] = 0; params[p + 1] = aOffsets[t]; params[p + 2] = aCols;
    params[p + 3] = 1; params[p + 4] = bOffsets[t]; params[p + 5] = bCols;
    params[p + 6] = 2; params[p + 7] = cOffsets[t]; params[p + 8] = n;
    params[p + 9] = m; params[p + 10] = n; params[p + 11] = k; params[p + 12] = flags;
  }
  be().gemm([a, b, c], params);
}

function batchOffsets(batchShape: readonly number[], ownBatch: readonly number[], matSize: number): number[] {
  // Offsets of each broadcast batch element into an operand whose batch dims are ownBatch.
  const total = sizeOf(batchShape);
  const offs = new Array<number>(total);
  const lead = batchShape.length - ownBatch.length;
  const strides: number[] = new Array(batchShape.length).fill(0);
  let acc = matSize;
  for (let i = ownBatch.length - 1; i >= 0; i--) {
    strides[lead + i] = ownBatch[i] === 1 ? 0 : acc;
    acc *= ownBatch[i];
  }
  for (let t = 0; t < total; t++) {
    let rem = t, off = 0;
    for (let d = batchShape.length - 1; d >= 0; d--) {
      const i = rem % batchShape[d];
      rem = Math.floor(rem / batchShape[d]);
      off += i * strides[d];
    }
    offs[t] = off;
  }
  return offs;
}

/**
 * Matrix product with NumPy/PyTorch semantics: a [..., M, K] · b [..., K, N] → [..., M, N], batch
 * dimensions broadcast; 1-d operands are promoted and the added dimension removed.
 * transA / transB use the transposes of the last two dimensions.
 */
export function matmul(a: Tensor, b: Tensor, opts?: MatmulOptions): Tensor {
  requireFloat(a, 'matmul.a');
  requireFloat(b, 'matmul.b');
  if (a.rank === 0 || b.rank === 0) throw new ShapeError('matmul shapes', [a.shape, b.shape], 'matmul needs operands of rank >= 1');
  const ta = !!opts?.transA && a.rank >= 2, tb = !!opts?.transB && b.rank >= 2;
  const a2 = a.rank === 1 ? [1, a.shape[0]] : a.shape.slice(-2);
  const b2 = b.rank === 1 ? [b.shape[0], 1] : b.shape.slice(-2);
  const m = ta ? a2[1] : a2[0], ka = ta ? a2[0] : a2[1];
  const kb = tb ? b2[1] : b2[0], n = tb ? b2[0] : b2[1];
  if (ka !== kb) {
    throw new ShapeError('matmul shapes', [a.shape, b.shape], `inner dimensions differ: ${ka} (a${ta ? 'ᵀ' : ''}) vs ${kb} (b${tb ? 'ᵀ' : ''})`);
  }
  const k = ka;
  const aBatch = a.shape.slice(0, -2), bBatch = b.rank >= 2 ? b.shape.slice(0, -2) : [];
  const aB = a.rank >= 2 ? aBatch : [];
  // Fast path: b is a plain matrix (or vector), a not transposed: fold a's batch (if any) into M.
  if (a.rank >= 2 && bBatch.length === 0 && !ta) {
    const rows = sizeOf(aB) * m;
    const out2 = matmul2d(a, a.f32, rows, k, b, n, tb);
    const outShape = b.rank === 1 ? [...aB, m] : [...aB, m, n];
    return record('matmul', [a, b], new Tensor(out2.out, outShape), (g) => out2.backward(g));
  }
  const batchShape = broadcastShapes(aB, bBatch, 'matmul batch');
  const batches = sizeOf(batchShape);
  const out = allocFloat32(batches * m * n);
  const aOffs = batchOffsets(batchShape, aB, a2[0] * a2[1]);
  const bOffs = batchOffsets(batchShape, bBatch, b2[0] * b2[1]);
  const cOffs = Array.from({ length: batches }, (_, t) => t * m * n);
  gemmBatched(a.f32, aOffs, a2[1], ta, b.f32, bOffs, b2[1], tb, out, cOffs, m, n, k, false);
  let outShape = [...batchShape, m, n];
  if (a.rank === 1) outShape = [...batchShape, n];
  if (b.rank === 1) outShape = a.rank === 1 ? [...batchShape] : [...batchShape, m];
  const y = new Tensor(out, outShape);
  return record('matmul', [a, b], y, (g) => {
    const gd = g.f32;
    let da: Tensor | null = null, db: Tensor | null = null;
    if (a.requiresGrad) {
      // Full-batch dA (per broadcast batch), then reduce over broadcast batch dims.
      const full = allocFloat32(batches * a2[0] * a2[1]);
      const fullOffs = Array.from({ length: batches }, (_, t) => t * a2[0] * a2[1]);
      if (!ta) gemmBatched(gd, cOffs, n, false, b.f32, bOffs, b2[1], !tb, full, fullOffs, m, k, n, false); // dA = G·opBᵀ
      else gemmBatched(b.f32, bOffs, b2[1], tb, gd, cOffs, n, true, full, fullOffs, k, m, n, false); // dAᵀ stored: opB·Gᵀ
      da = sumToShape(new Tensor(full, [...batchShape, a2[0], a2[1]]), a.rank >= 2 ? a.shape : [1, a.shape[0]]);
    }
    if (b.requiresGrad) {
      const full = allocFloat32(batches * b2[0] * b2[1]);
      const fullOffs = Array.from({ length: batches }, (_, t) => t * b2[0] * b2[1]);
      if (!tb) gemmBatched(a.f32, aOffs, a2[1], !ta, gd, cOffs, n, false, full, fullOffs, k, n, m, false); // dB = opAᵀ·G
      else gemmBatched(gd, cOffs, n, true, a.f32, aOffs, a2[1], ta, full, fullOffs, n, k, m, false); // dBᵀ stored: Gᵀ·opA
      db = sumToShape(new Tensor(full, [...batchShape, b2[0], b2[1]]), b.rank >= 2 ? b.shape : [b.shape[0], 1]);
    }
    return [da, db];
  });
}

/** 2-d product of a flattened [rows, k] A with a plain matrix b; returns output and a backward closure. */
function matmul2d(
  a: Tensor, ad: Float32Array, rows: number, k: number, b: Tensor, n: number, tb: boolean,
): { out: Float32Array; backward: (g: Tensor) => [Tensor | null, Tensor | null] } {
  const bd = b.f32;
  const bCols = b.rank === 1 ? 1 : b.shape[1];
  const out = allocFloat32(rows * n);
  gemmBatched(ad, [0], k, false, bd, [0], bCols, tb, out, [0], rows, n, k, false);
  return {
    out,
    backward: (g) => {
      const gd = g.f32;
      let da: Tensor | null = null, db: Tensor | null = null;
      if (a.requiresGrad) {
        // Added straight into a's pending gradient when the engine allows it (see pendingGradSink).
        const sink = pendingGradSink(a);
        const full = sink ?? acquireScratch(rows * k); // else overwritten by the gemm
        gemmBatched(gd, [0], n, false, bd, [0], bCols, !tb, full, [0], rows, k, n, sink !== null);
        da = sink ? null : new Tensor(full, a.shape);
      }
      if (b.requiresGrad) {
        // A weight (leaf) gets its gradient written into its own .grad buffer (see leafGradSink).
        const sink = leafGradSink(b);
        const full = sink ? sink.data : allocFloat32(b.size);
        const acc = sink ? sink.accumulate : false;
        if (!tb) gemmBatched(ad, [0], k, true, gd, [0], n, false, full, [0], k, n, rows, acc);
        else gemmBatched(gd, [0], n, true, ad, [0], k, false, full, [0], n, k, rows, acc);
        db = sink ? null : new Tensor(full, b.shape);
      }
      return [da, db];
    },
  };
}

/** PyTorch `Linear`: y = x·Wᵀ (+ b), W [out, in], x [..., in]. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  if (weight.rank !== 2) throw new ShapeError('linear.weight', weight.shape, 'weight must be [out, in]');
  if (x.shape[x.rank - 1] !== weight.shape[1]) {
    throw new ShapeError('linear.x', x.shape, `last dimension must equal weight's in-features ${weight.shape[1]}`);
  }
  const y = matmul(x, weight, { transB: true });
  return bias ? add(y, bias) : y;
}
