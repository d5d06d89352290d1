/** Numerically stable softmax, log-softmax and logsumexp over one axis, with backward rules. */
import { acquireScratch } from '../backend/scratch.js';
import { record } from '../tensor/autodiff.js';
import { normAxis } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { transpose } from './shape.js';
import { expandTo } from './reduce.js';
import { be, requireFloat } from './util.js';

function lastAxisPerm(rank: number, ax: number): number[] | null {
  if (ax === rank - 1) return null;
  const p = Array.from({ length: rank }, (_, i) => i);
  p.splice(ax, 1);
  p.push(ax);
  return p;
}

function inversePerm(p: number[]): number[] {
  const inv = new Array<number>(p.length);
  p.forEach((a, i) => (inv[a] = i));
  return inv;
}

function softmaxImpl(x: Tensor, axis: number, log: boolean): Tensor {
  requireFloat(x, log ? 'logSoftmax.x' : 'softmax.x');
  if (x.rank === 0) return softmaxImpl(x.reshape([1]), 0, log).reshape([]);
  const ax = normAxis(axis, x.rank, log ? 'logSoftmax.axis' : 'softmax.axis');
  const perm = lastAxisPerm(x.rank, ax);
  if (perm) return transpose(softmaxImpl(transpose(x, perm), -1, log), inversePerm(perm));
  const cols = x.shape[x.rank - 1];
  const rows = cols === 0 ? 0 : x.size / cols;
  const out = new Float32Array(x.size);
  be().softmax(x.f32, rows, cols, log, out);
  const name = log ? 'logSoftmax' : 'softmax';
  return record(name, [x], new Tensor(out, x.shape), (g) => {
    const dx = acquireScratch(x.size); // overwritten by softmaxGrad
    be().softmaxGrad(out, g.f32, rows, cols, log, dx);
    return [new Tensor(dx, x.shape)];
  });
}

/** softmax(x)_i = exp(x_i - max x) / Σ_j exp(x_j - max x) along `axis` (default last). */
export const softmax = (x: Tensor, axis = -1): Tensor => softmaxImpl(x, axis, false);
/** log softmax(x)_i = x_i - logsumexp(x) along `axis` (default last). */
export const logSoftmax = (x: Tensor, axis = -1): Tensor => softmaxImpl(x, axis, true);

/** log Σ_i exp(x_i) along `axis`, stable (max-shifted); gradient softmax(x)·g. */
export function logsumexp(x: Tensor, axis = -1, keepDims = false): Tensor {
  requireFloat(x, 'logsumexp.x');
  // A scalar is a one-element row (as softmax treats it, and torch.logsumexp(x, -1)).
  if (x.rank === 0) return logsumexp(x.reshape([1]), axis, false).reshape([]);
  const ax = normAxis(axis, x.rank, 'logsumexp.axis');
  const perm = lastAxisPerm(x.rank, ax);
  if (perm) {
    const r = logsumexp(transpose(x, perm), -1, true);
    const back = transpose(r, inversePerm(perm));
    return keepDims ? back : back.squeeze(ax);
  }
  const cols = x.shape[x.rank - 1];
  const rows = x.size / Math.max(cols, 1);
  const out = new Float32Array(rows);
  be().logsumexp(x.f32, rows, cols, out);
  const kept = [...x.shape.slice(0, -1), 1];
  const y = new Tensor(out, keepDims ? kept : x.shape.slice(0, -1));
  return record('logsumexp', [x], y, (g) => {
    const p = new Float32Array(x.size);
    be().softmax(x.f32, rows, cols, false, p);
    const gFull = expandTo(new Tensor(g.f32, kept), kept, x.shape).f32;
    for (let i = 0; i < p.length; i++) p[i] *= gFull[i];
    return [new Tensor(p, x.shape)];
  });
}
