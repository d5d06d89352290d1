/** Index ops: row gather (embedding, index select), row scatter-add (index add), topK, oneHot. */
import { RangeValueError, ShapeError } from '../errors.js';
import { acquireScratch, acquireZeroed, releaseScratch } from '../backend/scratch.js';
import { leafGradSink, record } from '../tensor/autodiff.js';
import { normAxis, sizeOf } from '../tensor/shape.js';
import { Tensor, type IndexLike } from '../tensor/tensor.js';
import { be, indexShape, requireFloat, toIndexArray } from './util.js';

/**
 * out[i, ...] = src[idx[i], ...]: rows of src (first axis) picked by idx; idx of any shape gives
 * output shape [...idx.shape, ...src.shape.slice(1)] (embedding lookup, torch.index_select(0)).
 * Backward: scatter-add of the output gradient into the picked rows.
 */
export function gatherRows(src: Tensor, idx: IndexLike): Tensor {
  const sd = requireFloat(src, 'gatherRows.src');
  if (src.rank < 1) throw new ShapeError('gatherRows.src', src.shape, 'needs rank >= 1');
  const rows = src.shape[0];
  const ids = toIndexArray(idx, 'gatherRows.indices', rows);
  const cols = rows === 0 ? 0 : src.size / rows;
  const out = new Float32Array(ids.length * cols);
  be().gatherRows(sd, ids, cols, out);
  const y = new Tensor(out, [...indexShape(idx), ...src.shape.slice(1)]);
  return record('gatherRows', [src], y, (g) => {
    // An embedding table (a leaf) takes its rows' gradients straight into its own .grad.
    const sink = leafGradSink(src);
    if (sink) {
      if (!sink.accumulate) sink.data.fill(0);
      be().scatterAddRows(g.f32, ids, null, cols, sink.data);
      return [null];
    }
    const dsrc = acquireZeroed(src.size);
    be().scatterAddRows(g.f32, ids, null, cols, dsrc);
    return [new Tensor(dsrc, src.shape)];
  });
}

/** Alias of gatherRows (torch.index_select along axis 0). */
export const indexSelect = gatherRows;
/** Embedding lookup: weight [vocab, d] rows for token ids (any shape). */
export const embedding = (weight: Tensor, ids: IndexLike): Tensor => gatherRows(weight, ids);

/**
 * out = zeros([numRows, ...]); out[idx[i]] += w[i] · src[i] (torch.index_add_ with optional
 * per-row weights: the MoE combine step). Differentiable in src and in weights.
 */
export function scatterAddRows(src: Tensor, idx: IndexLike, numRows: number, weights?: Tensor | null): Tensor {
  const sd = requireFloat(src, 'scatterAddRows.src');
  if (src.rank < 1) throw new ShapeError('scatterAddRows.src', src.shape, 'needs rank >= 1');
  if (!Number.isInteger(numRows) || numRows < 0) throw new RangeValueError('scatterAddRows.numRows', numRows, 'must be a non-negative integer');
  const n = src.shape[0];
  const ids = toIndexArray(idx, 'scatterAddRows.indices', numRows);
  if (ids.length !== n) throw new ShapeError('scatterAddRows.indices', indexShape(idx), `needs ${n} entries, one per row of src`);
  let wd: Float32Array | null = null;
  if (weights) {
    wd = requireFloat(weights, 'scatterAddRows.weights');
    if (weights.size !== n) throw new ShapeError('scatterAddRows.weights', weights.shape, `needs ${n} entries, one per row of src`);
  }
  const cols = n === 0 ? sizeOf(src.shape.slice(1)) : src.size / n;
  const out = new Float32Array(numRows * cols);
  be().scatterAddRows(sd, ids, wd, cols, out);
  const inputs = weights ? [src, weights] : [src];
  return record('scatterAddRows', inputs, new Tensor(out, [numRows, ...src.shape.slice(1)]), (g) => {
    const gathered = acquireScratch(n * cols); // every row written by the gather
    be().gatherRows(g.f32, ids, cols, gathered);
    let dw: Tensor | null = null;
    if (weights && weights.requiresGrad) {
      const d = new Float32Array(n);
      be().rowDot(gathered, sd, n, cols, d);
      dw = new Tensor(d, weights.shape);
    }
    if (!wd) return [new Tensor(gathered, src.shape), dw];
    // dsrc[i, :] = w[i] · dOut[idx[i], :]: a row-broadcast multiply on the backend.
    const dsrc = acquireScratch(n * cols);
    be().binary('mul', gathered, Int32Array.of(cols, 1), wd, Int32Array.of(1, 0), dsrc, Int32Array.of(n, cols));
    releaseScratch(gathered);
    return [new Tensor(dsrc, src.shape), dw];
  });
}

/** Alias of scatterAddRows (torch.index_add_ into zeros). */
export const indexAdd = scatterAddRows;

/**
 * The k largest entries along the last axis, sorted descending; ties go to the lower index and NaN
 * ranks above every number (torch.topk). values is differentiable (gradient scattered back to the
 * picked positions); indices is int32.
 */
export function topK(x: Tensor, k: number): { values: Tensor; indices: Tensor } {
  const xd = requireFloat(x, 'topK.x');
  if (x.rank < 1) throw new ShapeError('topK.x', x.shape, 'needs rank >= 1');
  const cols = x.shape[x.rank - 1];
  if (!Number.isInteger(k) || k < 0 || k > cols) throw new RangeValueError('topK.k', k, `must be an integer in [0, ${cols}]`);
  const rows = cols === 0 ? 0 : x.size / cols;
  const vals = new Float32Array(rows * k);
  const inds = new Int32Array(rows * k);
  be().topKRows(xd, rows, cols, k, vals, inds);
  const outShape = [...x.shape.slice(0, -1), k];
  const indices = new Tensor(inds, outShape);
  const values = record('topK', [x], new Tensor(vals, outShape), (g) => {
    const dx = new Float32Array(x.size);
    const gd = g.f32;
    for (let r = 0; r < rows; r++) for (let j = 0; j < k; j++) dx[r * cols + inds[r * k + j]] += gd[r * k + j];
    return [new Tensor(dx, x.shape)];
  });
  return { values, indices };
}

/** One-hot float32 encoding: out[..., c] = 1 if idx == c (not differentiable). */
export function oneHot(idx: IndexLike, numClasses: number): Tensor {
  if (!Number.isInteger(numClasses) || numClasses < 1) throw new RangeValueError('oneHot.numClasses', numClasses, 'must be a positive integer');
  const ids = toIndexArray(idx, 'oneHot.indices', numClasses);
  const out = new Float32Array(ids.length * numClasses);
  for (let i = 0; i < ids.length; i++) out[i * numClasses + ids[i]] = 1;
  return new Tensor(out, [...indexShape(idx), numClasses]);
}

/** Gather along an axis: out[..., j, ...] = x[..., idx[..., j, ...], ...] with idx the same rank as x (torch.gather). */
export function gatherAlong(x: Tensor, axis: number, idx: Tensor): Tensor {
  const xd = requireFloat(x, 'gatherAlong.x');
  const ax = normAxis(axis, x.rank, 'gatherAlong.axis');
  if (idx.rank !== x.rank) throw new ShapeError('gatherAlong.indices', idx.shape, `needs rank ${x.rank}`);
  const outer = sizeOf(idx.shape.slice(0, ax)), len = idx.shape[ax], inner = sizeOf(idx.shape.slice(ax + 1));
  const xl = x.shape[ax], xInner = sizeOf(x.shape.slice(ax + 1));
  for (let d = 0; d < x.rank; d++) {
    if (d !== ax && idx.shape[d] !== x.shape[d]) throw new ShapeError('gatherAlong.indices', idx.shape, `must match x [${x.shape}] outside axis ${ax}`);
  }
  const ids = toIndexArray(idx, 'gatherAlong.indices', xl);
  const out = new Float32Array(idx.size);
  const src = new Int32Array(idx.size);
  for (let o = 0; o < outer; o++)
    for (let l = 0; l < len; l++)
      for (let i = 0; i < inner; i++) {
        const p = (o * len + l) * inner + i;
        const s = (o * xl + ids[p]) * xInner + i;
        src[p] = s;
        out[p] = xd[s];
      }
  return record('gatherAlong', [x], new Tensor(out, idx.shape), (g) => {
    const dx = new Float32Array(x.size);
    const gd = g.f32;
    for (let p = 0; p < src.length; p++) dx[src[p]] += gd[p];
    return [new Tensor(dx, x.shape)];
  });
}
