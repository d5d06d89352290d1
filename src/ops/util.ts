import { getBackend } from '../backend/index.js';
import type { Backend } from '../backend/interface.js';
import { DTypeError, RangeValueError } from '../errors.js';
import { Tensor, type IndexLike } from '../tensor/tensor.js';

/** The active backend (resolved lazily, once). */
export function be(): Backend {
  return getBackend();
}

/** Throw a DTypeError unless t is float32. */
export function requireFloat(t: Tensor, field: string): Float32Array {
  if (!(t.data instanceof Float32Array)) throw new DTypeError(field, t.dtype, 'expected a float32 tensor');
  return t.data;
}

/** Index-like → Int32Array, validating integrality and (if given) the range [0, bound). */
export function toIndexArray(idx: IndexLike, field: string, bound?: number): Int32Array {
  let out: Int32Array;
  if (idx instanceof Tensor) {
    if (!(idx.data instanceof Int32Array)) throw new DTypeError(field, idx.dtype, 'index tensors must be int32 (Tensor.indices)');
    out = idx.data;
  } else if (idx instanceof Int32Array) out = idx;
  else {
    out = new Int32Array(idx.length);
    for (let i = 0; i < idx.length; i++) {
      const v = idx[i];
      if (!Number.isInteger(v)) throw new DTypeError(field, v, 'index values must be integers');
      out[i] = v;
    }
  }
  if (bound !== undefined) {
    for (let i = 0; i < out.length; i++) {
      if (out[i] < 0 || out[i] >= bound) throw new RangeValueError(`${field}[${i}]`, out[i], `index out of range [0, ${bound})`);
    }
  }
  return out;
}

/** Shape of an index-like value (1-d for arrays). */
export function indexShape(idx: IndexLike): readonly number[] {
  return idx instanceof Tensor ? idx.shape : [idx.length];
}
