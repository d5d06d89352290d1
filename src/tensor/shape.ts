import { RangeValueError, ShapeError } from '../errors.js';

/** Number of elements of a shape (1 for a scalar []). */
export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Row-major element strides of a contiguous shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** Throw unless every dimension is a non-negative integer. */
export function checkShape(shape: readonly number[], field = 'shape'): void {
  if (!Array.isArray(shape)) throw new ShapeError(field, shape, 'a shape must be an array of non-negative integers');
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new ShapeError(field, shape, 'a shape must be an array of non-negative integers');
  }
}

/** NumPy broadcasting of two shapes; throws a ShapeError naming both. */
export function broadcastShapes(a: readonly number[], b: readonly number[], op = 'broadcast'): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new ShapeError(`${op} shapes`, [a, b], `shapes [${a}] and [${b}] do not broadcast (dimension ${i}: ${da} vs ${db})`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Element strides of `shape` viewed as broadcast to `outShape` (0 on broadcast dimensions). */
export function broadcastStrides(shape: readonly number[], outShape: readonly number[]): Int32Array {
  const s = stridesOf(shape);
  const out = new Int32Array(outShape.length);
  const off = outShape.length - shape.length;
  for (let i = 0; i < outShape.length; i++) {
    const j = i - off;
    out[i] = j < 0 || shape[j] === 1 ? 0 : s[j];
  }
  return out;
}

/** Normalise a possibly negative axis against a rank, throwing a RangeValueError that names the field. */
export function normAxis(axis: number, rank: number, field = 'axis'): number {
  if (!Number.isInteger(axis) || axis < -rank || axis >= Math.max(rank, 1)) {
    throw new RangeValueError(field, axis, `axis out of range for a tensor of rank ${rank}`);
  }
  return axis < 0 ? axis + rank : axis;
}

/** Normalise a list of axes (undefined = all), sorted, unique. */
export function normAxes(axes: number | readonly number[] | undefined, rank: number, field = 'axis'): number[] {
  if (axes === undefined) return Array.from({ length: rank }, (_, i) => i);
  const list = typeof axes === 'number' ? [axes] : [...axes];
  const out = [...new Set(list.map((a) => normAxis(a, rank, field)))].sort((x, y) => x - y);
  if (out.length !== list.length) throw new RangeValueError(field, axes, 'repeated axis');
  return out;
}

export function shapesEqual(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
