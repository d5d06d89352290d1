/** Shape ops: reshape, transpose/permute, slice, concat, stack, squeeze/unsqueeze, expand. */
import { DTypeError, RangeValueError, ShapeError } from '../errors.js';
import { record } from '../tensor/autodiff.js';
import { broadcastShapes, checkShape, normAxis, shapesEqual, sizeOf } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { expandTo, sumToShape } from './reduce.js';
import { be } from './util.js';

/** Same data, new shape (one dimension may be -1). Shares the buffer (tensors are immutable). */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const s = [...shape];
  const neg = s.indexOf(-1);
  if (neg >= 0) {
    const rest = sizeOf(s.filter((_, i) => i !== neg));
    if (rest === 0 || x.size % rest !== 0) throw new ShapeError('reshape.shape', shape, `cannot infer -1 for ${x.size} elements`);
    s[neg] = x.size / rest;
  }
  checkShape(s, 'reshape.shape');
  if (sizeOf(s) !== x.size) throw new ShapeError('reshape.shape', shape, `has ${sizeOf(s)} elements but the tensor [${x.shape}] has ${x.size}`);
  const y = new Tensor(x.data, s);
  return record('reshape', [x], y, (g) => [new Tensor(g.data, x.shape)]);
}

/** Permute dimensions (default: swap the last two, like .mT). Copies into a contiguous buffer. */
export function transpose(x: Tensor, perm?: readonly number[]): Tensor {
  const r = x.rank;
  let p: number[];
  if (perm === undefined) {
    if (r < 2) return x;
    p = Array.from({ length: r }, (_, i) => i);
    [p[r - 2], p[r - 1]] = [p[r - 1], p[r - 2]];
  } else {
    if (perm.length !== r) throw new ShapeError('transpose.perm', perm, `needs ${r} entries for a tensor of rank ${r}`);
    p = perm.map((a) => normAxis(a, r, 'transpose.perm'));
    if (new Set(p).size !== r) throw new RangeValueError('transpose.perm', perm, 'must be a permutation');
  }
  const outShape = p.map((a) => x.shape[a]);
  const out = x.dtype === 'int32' ? null : new Float32Array(x.size);
  if (!out) throw new DTypeError('transpose.x', x.dtype, 'transpose of int32 tensors is not supported');
  be().permute(x.data as Float32Array, Int32Array.from(x.shape), Int32Array.from(p), out);
  const inv = new Array<number>(r);
  p.forEach((a, i) => (inv[a] = i));
  return record('transpose', [x], new Tensor(out, outShape), (g) => [transpose(g, inv)]);
}

/** Elements start..end-1 along one axis (negative indices count from the end, bounds clamp like Python). */
export function slice(x: Tensor, axis: number, start: number, end?: number): Tensor {
  const ax = normAxis(axis, x.rank, 'slice.axis');
  const len = x.shape[ax];
  const norm = (v: number): number => Math.min(len, Math.max(0, v < 0 ? v + len : v));
  if (!Number.isInteger(start)) throw new RangeValueError('slice.start', start, 'must be an integer');
  if (end !== undefined && !Number.isInteger(end)) throw new RangeValueError('slice.end', end, 'must be an integer');
  const s = norm(start), e = Math.max(s, end === undefined ? len : norm(end));
  const outer = sizeOf(x.shape.slice(0, ax)), inner = sizeOf(x.shape.slice(ax + 1));
  const outShape = [...x.shape];
  outShape[ax] = e - s;
  const src = x.data;
  const out = src instanceof Int32Array ? new Int32Array(outer * (e - s) * inner) : new Float32Array(outer * (e - s) * inner);
  for (let o = 0; o < outer; o++) {
    out.set(src.subarray((o * len + s) * inner, (o * len + e) * inner), o * (e - s) * inner);
  }
  return record('slice', [x], new Tensor(out, outShape), (g) => {
    const dx = new Float32Array(x.size);
    const gd = g.f32;
    for (let o = 0; o < outer; o++) dx.set(gd.subarray(o * (e - s) * inner, (o + 1) * (e - s) * inner), (o * len + s) * inner);
    return [new Tensor(dx, x.shape)];
  });
}

/** Join tensors along an existing axis. */
export function concat(tensors: readonly Tensor[], axis = 0): Tensor {
  if (tensors.length === 0) throw new ShapeError('concat.tensors', [], 'needs at least one tensor');
  const first = tensors[0];
  const ax = normAxis(axis, first.rank, 'concat.axis');
  tensors.forEach((t, i) => {
    if (t.rank !== first.rank || t.shape.some((d, j) => j !== ax && d !== first.shape[j])) {
      throw new ShapeError(`concat.tensors[${i}].shape`, t.shape, `does not match [${first.shape}] outside axis ${ax}`);
    }
    if (t.dtype !== first.dtype) throw new DTypeError(`concat.tensors[${i}].dtype`, t.dtype, `differs from ${first.dtype}`);
  });
  const outer = sizeOf(first.shape.slice(0, ax)), inner = sizeOf(first.shape.slice(ax + 1));
  const total = tensors.reduce((p, t) => p + t.shape[ax], 0);
  const outShape = [...first.shape];
  outShape[ax] = total;
  const out = first.dtype === 'int32' ? new Int32Array(outer * total * inner) : new Float32Array(outer * total * inner);
  let off = 0;
  for (const t of tensors) {
    const l = t.shape[ax];
    for (let o = 0; o < outer; o++) out.set(t.data.subarray(o * l * inner, (o + 1) * l * inner), (o * total + off) * inner);
    off += l;
  }
  return record('concat', tensors, new Tensor(out, outShape), (g) => {
    let start = 0;
    return tensors.map((t) => {
      const s = start;
      start += t.shape[ax];
      return t.requiresGrad ? slice(g, ax, s, s + t.shape[ax]) : null;
    });
  });
}

/** Join tensors along a new axis. */
export function stack(tensors: readonly Tensor[], axis = 0): Tensor {
  if (tensors.length === 0) throw new ShapeError('stack.tensors', [], 'needs at least one tensor');
  const ax = normAxis(axis, tensors[0].rank + 1, 'stack.axis');
  return concat(tensors.map((t) => unsqueeze(t, ax)), ax);
}

/** Remove a size-1 axis. */
export function squeeze(x: Tensor, axis: number): Tensor {
  const ax = normAxis(axis, x.rank, 'squeeze.axis');
  if (x.shape[ax] !== 1) throw new ShapeError('squeeze.axis', axis, `dimension ${ax} has size ${x.shape[ax]}, not 1`);
  return reshape(x, x.shape.filter((_, i) => i !== ax));
}

/** Insert a size-1 axis. */
export function unsqueeze(x: Tensor, axis: number): Tensor {
  const ax = normAxis(axis, x.rank + 1, 'unsqueeze.axis');
  const s = [...x.shape];
  s.splice(ax, 0, 1);
  return reshape(x, s);
}

/** Materialised broadcast to a larger shape (NumPy rules). */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  const target = broadcastShapes(x.shape, shape, 'expand');
  if (!shapesEqual(target, shape)) throw new ShapeError('expand.shape', shape, `[${x.shape}] cannot be expanded to it`);
  const kept = [...new Array(shape.length - x.rank).fill(1), ...x.shape];
  const y = expandTo(new Tensor(x.f32, kept), kept, shape);
  return record('expand', [x], y, (g) => [sumToShape(g, x.shape)]);
}
