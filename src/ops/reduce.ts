/** Reductions over axes (sum, mean, max, min, argmax) and their backward rules. */
import type { ReduceOp } from '../backend/interface.js';
import { record } from '../tensor/autodiff.js';
import { broadcastStrides, normAxes, normAxis, shapesEqual, sizeOf } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { be, requireFloat } from './util.js';

/** Reduce `axes` (sorted, unique) of data with shape → keepDims-shaped result. */
function reduceRaw(op: ReduceOp, data: Float32Array, shape: readonly number[], axes: readonly number[]): { out: Float32Array; keptShape: number[] } {
  let cur = data;
  const curShape = [...shape];
  // Merge runs of adjacent axes into one [outer, len, inner] pass; go from the last run backwards.
  let i = axes.length - 1;
  while (i >= 0) {
    let j = i;
    while (j > 0 && axes[j - 1] === axes[j] - 1) j--;
    const first = axes[j], last = axes[i];
    const outer = sizeOf(curShape.slice(0, first));
    const len = sizeOf(curShape.slice(first, last + 1));
    const inner = sizeOf(curShape.slice(last + 1));
    const out = new Float32Array(outer * inner);
    if (len === 0 && op !== 'sum') out.fill(op === 'max' ? -Infinity : Infinity);
    else be().reduce(op, cur, outer, len, inner, out);
    for (let a = first; a <= last; a++) curShape[a] = 1;
    cur = out;
    i = j - 1;
  }
  return { out: cur, keptShape: curShape };
}

function squeezeAxes(keptShape: number[], axes: readonly number[], keepDims: boolean): number[] {
  return keepDims ? keptShape : keptShape.filter((_, i) => !axes.includes(i));
}

/** Broadcast g (whose shape equals `shape` with reduced axes set to 1) back to `shape`. */
export function expandTo(g: Tensor, keptShape: readonly number[], shape: readonly number[]): Tensor {
  const n = sizeOf(shape);
  const out = new Float32Array(n);
  if (shape.length === 0) {
    out[0] = g.data[0];
    return new Tensor(out, shape);
  }
  const zero = new Float32Array(1);
  be().binary('add', g.f32, broadcastStrides(keptShape, shape), zero, new Int32Array(shape.length), out, Int32Array.from(shape));
  return new Tensor(out, shape);
}

/** Sum g down to `shape` (the reverse of broadcasting): the backward of every broadcasting op. */
export function sumToShape(g: Tensor, shape: readonly number[]): Tensor {
  if (shapesEqual(g.shape, shape)) return g;
  const lead = g.shape.length - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.shape.length; i++) {
    if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
  }
  const { out } = reduceRaw('sum', g.f32, g.shape, axes);
  return new Tensor(out, shape);
}

/** Σ over axes (all axes by default). */
export function sum(x: Tensor, axis?: number | readonly number[], keepDims = false): Tensor {
  const xd = requireFloat(x, 'sum.x');
  const axes = normAxes(axis, x.rank, 'sum.axis');
  const { out, keptShape } = reduceRaw('sum', xd, x.shape, axes);
  const y = new Tensor(out, squeezeAxes(keptShape, axes, keepDims));
  return record('sum', [x], y, (g) => [expandTo(g, keptShape, x.shape)]);
}

/** Arithmetic mean over axes (all axes by default). */
export function mean(x: Tensor, axis?: number | readonly number[], keepDims = false): Tensor {
  const xd = requireFloat(x, 'mean.x');
  const axes = normAxes(axis, x.rank, 'mean.axis');
  const { out, keptShape } = reduceRaw('sum', xd, x.shape, axes);
  const count = axes.reduce((p, a) => p * x.shape[a], 1);
  const inv = 1 / count;
  for (let i = 0; i < out.length; i++) out[i] /= count;
  const y = new Tensor(out, squeezeAxes(keptShape, axes, keepDims));
  return record('mean', [x], y, (g) => {
    const e = expandTo(g, keptShape, x.shape);
    const d = e.f32;
    for (let i = 0; i < d.length; i++) d[i] *= inv;
    return [e];
  });
}

function extremum(op: 'max' | 'min', x: Tensor, axis: number | readonly number[] | undefined, keepDims: boolean): Tensor {
  const xd = requireFloat(x, `${op}.x`);
  const axes = normAxes(axis, x.rank, `${op}.axis`);
  const { out, keptShape } = reduceRaw(op, xd, x.shape, axes);
  const y = new Tensor(out, squeezeAxes(keptShape, axes, keepDims));
  return record(op, [x], y, (g) => {
    // Gradient goes to the elements equal to the extremum, split evenly among ties (torch.amax).
    const yFull = expandTo(new Tensor(out, keptShape), keptShape, x.shape).f32;
    const mask = new Float32Array(xd.length);
    for (let i = 0; i < xd.length; i++) mask[i] = xd[i] === yFull[i] ? 1 : 0;
    const counts = reduceRaw('sum', mask, x.shape, axes).out;
    const gd = g.f32;
    const scaled = new Float32Array(gd.length);
    for (let i = 0; i < gd.length; i++) scaled[i] = gd[i] / counts[i];
    const gFull = expandTo(new Tensor(scaled, keptShape), keptShape, x.shape).f32;
    for (let i = 0; i < mask.length; i++) mask[i] *= gFull[i];
    return [new Tensor(mask, x.shape)];
  });
}

/** Maximum over axes (gradient split evenly among tied maxima, like torch.amax). */
export const max = (x: Tensor, axis?: number | readonly number[], keepDims = false): Tensor => extremum('max', x, axis, keepDims);
/** Minimum over axes (gradient split evenly among tied minima, like torch.amin). */
export const min = (x: Tensor, axis?: number | readonly number[], keepDims = false): Tensor => extremum('min', x, axis, keepDims);

/** Index of the maximum along one axis (first index on ties); int32, not differentiable. */
export function argmax(x: Tensor, axis = -1): Tensor {
  const xd = requireFloat(x, 'argmax.x');
  const ax = normAxis(axis, x.rank, 'argmax.axis');
  const outer = sizeOf(x.shape.slice(0, ax)), len = x.shape[ax], inner = sizeOf(x.shape.slice(ax + 1));
  const out = new Int32Array(outer * inner);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let best = -Infinity, bi = 0;
      for (let l = 0; l < len; l++) {
        const v = xd[(o * len + l) * inner + i];
        if (v > best || (Number.isNaN(v) && !Number.isNaN(best))) {
          best = v;
          bi = l;
        }
      }
      out[o * inner + i] = bi;
    }
  }
  return new Tensor(out, x.shape.filter((_, i) => i !== ax));
}
