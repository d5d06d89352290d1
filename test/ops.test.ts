/**
 * Forward values of every op against naive plain-loop implementations written here, typed errors
 * (class, field and value in the message), and autodiff engine behaviour.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  AnomalyError,
  DTypeError,
  GradError,
  Generator,
  RangeValueError,
  ShapeError,
  SwitchyardError,
  Tensor,
  ValueError,
  add,
  argmax,
  concat,
  crossEntropy,
  div,
  dropout,
  enableGrad,
  expand,
  gatherAlong,
  gatherRows,
  gelu,
  isGradEnabled,
  layerNorm,
  linear,
  logSoftmax,
  logsumexp,
  matmul,
  max,
  maximum,
  mean,
  min,
  minimum,
  mseLoss,
  mul,
  noGrad,
  oneHot,
  rmsNorm,
  scaledDotProductAttention,
  scatterAddRows,
  setAnomalyDetection,
  slice,
  softmax,
  stack,
  sub,
  sum,
  topK,
  transpose,
} from '../src/index.js';
import { expectAllClose, forEachBackend } from './helpers.js';

// ---------------------------------------------------------------- naive helpers

type Shape = readonly number[];
const sizeOfShape = (s: Shape): number => s.reduce((p, d) => p * d, 1);
function unravel(i: number, shape: Shape): number[] {
  const idx = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
  return idx;
}
function ravel(idx: readonly number[], shape: Shape): number {
  let o = 0;
  for (let d = 0; d < shape.length; d++) o = o * shape[d] + idx[d];
  return o;
}
const rn = (shape: number[], seed: number): Tensor => Tensor.randn(shape, { seed });

/** NumPy broadcasting, written independently of src/tensor/shape.ts. */
function naiveBroadcastShape(a: Shape, b: Shape): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const da = i < n - a.length ? 1 : a[i - (n - a.length)];
    const db = i < n - b.length ? 1 : b[i - (n - b.length)];
    if (da !== db && da !== 1 && db !== 1) throw new Error('no broadcast');
    out.push(da === 1 ? db : da);
  }
  return out;
}
/** Index of a broadcast operand of shape s for output index idx. */
function bIndex(idx: readonly number[], s: Shape): number {
  const off = idx.length - s.length;
  return ravel(s.map((d, i) => (d === 1 ? 0 : idx[i + off])), s);
}
function naiveBinary(a: Tensor, b: Tensor, f: (x: number, y: number) => number): { data: number[]; shape: number[] } {
  const shape = naiveBroadcastShape(a.shape, b.shape);
  const data: number[] = [];
  for (let i = 0; i < sizeOfShape(shape); i++) {
    const idx = unravel(i, shape);
    data.push(f(a.data[bIndex(idx, a.shape)], b.data[bIndex(idx, b.shape)]));
  }
  return { data, shape };
}

/** Reduce along axes (sorted unique) with f over the collected values. */
function naiveReduce(x: Tensor, axes: number[], keep: boolean, f: (vals: number[]) => number): { data: number[]; shape: number[] } {
  const kept = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const groups: number[][] = Array.from({ length: sizeOfShape(kept) }, () => []);
  for (let i = 0; i < x.size; i++) {
    const idx = unravel(i, x.shape).map((v, d) => (axes.includes(d) ? 0 : v));
    groups[ravel(idx, kept)].push(x.data[i]);
  }
  return { data: groups.map(f), shape: keep ? kept : x.shape.filter((_, i) => !axes.includes(i)) };
}

/** matmul semantics (1-d promotion, batch broadcasting, transposes) by definition. */
function naiveMatmul(a: Tensor, b: Tensor, transA = false, transB = false): { data: number[]; shape: number[] } {
  const aS = a.rank === 1 ? [1, a.shape[0]] : [...a.shape];
  const bS = b.rank === 1 ? [b.shape[0], 1] : [...b.shape];
  const ta = transA && a.rank >= 2, tb = transB && b.rank >= 2;
  const [ar, ac] = aS.slice(-2), [br, bc] = bS.slice(-2);
  const m = ta ? ac : ar, k = ta ? ar : ac, n = tb ? br : bc;
  const batch = naiveBroadcastShape(aS.slice(0, -2), bS.slice(0, -2));
  const data: number[] = [];
  for (let t = 0; t < sizeOfShape(batch); t++) {
    const bi = unravel(t, batch);
    const aBase = bIndex(bi, aS.slice(0, -2)) * ar * ac, bBase = bIndex(bi, bS.slice(0, -2)) * br * bc;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let l = 0; l < k; l++) {
          const av = a.data[aBase + (ta ? l * ac + i : i * ac + l)];
          const bv = b.data[bBase + (tb ? j * bc + l : l * bc + j)];
          s += av * bv;
        }
        data.push(s);
      }
    }
  }
  let shape = [...batch, m, n];
  if (a.rank === 1) shape = [...batch, n];
  if (b.rank === 1) shape = a.rank === 1 ? [...batch] : [...batch, m];
  return { data, shape };
}

function naiveSoftmaxRow(row: number[], log = false): number[] {
  const mx = Math.max(...row);
  const e = row.map((v) => Math.exp(v - mx));
  const s = e.reduce((p, v) => p + v, 0);
  return log ? row.map((v) => v - mx - Math.log(s)) : e.map((v) => v / s);
}
/** Apply a row function along `axis` of x. */
function alongAxis(x: Tensor, axis: number, f: (row: number[]) => number[]): number[] {
  const out = new Array<number>(x.size);
  const len = x.shape[axis];
  const inner = sizeOfShape(x.shape.slice(axis + 1)), outer = sizeOfShape(x.shape.slice(0, axis));
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const pos = Array.from({ length: len }, (_, l) => (o * len + l) * inner + i);
      const r = f(pos.map((p) => x.data[p]));
      pos.forEach((p, l) => (out[p] = r[l]));
    }
  }
  return out;
}

function expectTensor(t: Tensor, ref: { data: ArrayLike<number>; shape: readonly number[] }, label: string, tol = { rtol: 1e-5, atol: 1e-6 }): void {
  expect([...t.shape], `${label} shape`).toEqual([...ref.shape]);
  expectAllClose(t.data, ref.data, { ...tol, label });
}

/** Assert fn throws an instance of cls whose field is `field`, with the field named in the message. */
function expectTypedError(fn: () => unknown, cls: new (...a: never[]) => SwitchyardError, field: string, valueText?: string): SwitchyardError {
  let caught: unknown = null;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, `expected ${cls.name} for ${field}`).toBeInstanceOf(cls);
  const err = caught as SwitchyardError;
  expect(err.field).toBe(field);
  expect(err.message).toContain(field);
  if (valueText !== undefined) expect(err.message).toContain(valueText);
  return err;
}

afterEach(() => setAnomalyDetection(false));

// ---------------------------------------------------------------- tests

forEachBackend((backend, run) => {
  const test = (name: string, fn: () => void): void => {
    it(name, () => run(fn));
  };

  describe(`ops forward [${backend.name}]`, () => {
    describe('elementwise', () => {
      test('unary ops match Math', () => {
        const x = Tensor.from([-2.5, -1, -0.3, 0, 0.4, 1, 3], [7]);
        const p = Tensor.from([0.1, 0.5, 1, 2, 4, 9, 30], [7]);
        const sig = (v: number): number => 1 / (1 + Math.exp(-v));
        const cases: Array<[string, Tensor, Tensor, (v: number) => number]> = [
          ['neg', x.neg(), x, (v) => -v],
          ['abs', x.abs(), x, Math.abs],
          ['exp', x.exp(), x, Math.exp],
          ['log', p.log(), p, Math.log],
          ['sqrt', p.sqrt(), p, Math.sqrt],
          ['rsqrt', p.rsqrt(), p, (v) => 1 / Math.sqrt(v)],
          ['square', x.square(), x, (v) => v * v],
          ['tanh', x.tanh(), x, Math.tanh],
          ['sigmoid', x.sigmoid(), x, sig],
          ['softplus', x.softplus(), x, (v) => Math.log(1 + Math.exp(v))],
          ['relu', x.relu(), x, (v) => Math.max(v, 0)],
          ['silu', x.silu(), x, (v) => v * sig(v)],
          ['gelu_tanh', x.gelu({ approximate: 'tanh' }), x, (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)))],
          ['pow 1.5', p.pow(1.5), p, (v) => v ** 1.5],
          ['pow -1', p.pow(-1), p, (v) => 1 / v],
        ];
        for (const [name, y, src, f] of cases) expectTensor(y, { data: src.toArray().map(f), shape: [7] }, name);
        // x·Φ(x) at known points (Φ from tables, 16 digits).
        const g = gelu(Tensor.from([-1, 0, 0.5, 1, 2], [5]));
        expectAllClose(g, Tensor.from([-0.15865525393145707, 0, 0.34573123063700656, 0.8413447460685429, 1.9544997361036416], [5]), { label: 'gelu erf' });
      });

      test('broadcasting binary ops match the naive NumPy rule', () => {
        const pairs: Array<[number[], number[]]> = [
          [[2, 3], [2, 3]], [[2, 3], [3]], [[3], [2, 3]], [[2, 3, 1], [3, 4]], [[4, 1, 3], [2, 1]],
          [[], [2, 2]], [[2, 2], []], [[1], [3]], [[1, 1], [2, 1, 3]], [[2, 0], [1]],
        ];
        pairs.forEach(([sa, sb], i) => {
          const a = rn(sa, i), b = rn(sb, 100 + i);
          const tag = `[${sa}]∘[${sb}]`;
          expectTensor(add(a, b), naiveBinary(a, b, (x, y) => x + y), `add ${tag}`);
          expectTensor(sub(a, b), naiveBinary(a, b, (x, y) => x - y), `sub ${tag}`);
          expectTensor(mul(a, b), naiveBinary(a, b, (x, y) => x * y), `mul ${tag}`);
          expectTensor(div(a, b), naiveBinary(a, b, (x, y) => x / y), `div ${tag}`);
          expectTensor(maximum(a, b), naiveBinary(a, b, Math.max), `maximum ${tag}`);
          expectTensor(minimum(a, b), naiveBinary(a, b, Math.min), `minimum ${tag}`);
        });
        const a = rn([2, 3], 9);
        expectTensor(a.add(2), { data: a.toArray().map((v) => v + 2), shape: [2, 3] }, 'add scalar');
        expectTensor(a.sub(2), { data: a.toArray().map((v) => v - 2), shape: [2, 3] }, 'sub scalar');
        expectTensor(a.mul(-3), { data: a.toArray().map((v) => v * -3), shape: [2, 3] }, 'mul scalar');
        expectTensor(a.div(4), { data: a.toArray().map((v) => v / 4), shape: [2, 3] }, 'div scalar');
      });

      test('non-broadcastable shapes throw ShapeError naming the op', () => {
        const e = expectTypedError(() => add(rn([2, 3], 1), rn([4], 2)), ShapeError, 'add shapes');
        expect(e.message).toContain('[2,3]');
        expectTypedError(() => mul(rn([2, 3], 1), rn([3, 2], 2)), ShapeError, 'mul shapes');
        expectTypedError(() => rn([2], 1).gatedAct(rn([3], 2), 'silu'), ShapeError, 'gatedAct.b');
        expectTypedError(() => add(Tensor.indices([1, 2]), rn([2], 1)), DTypeError, 'add.a');
      });
    });

    describe('matmul', () => {
      test('matches the naive definition for every shape family and transpose', () => {
        const cases: Array<[number[], number[], boolean, boolean]> = [
          [[3, 4], [4, 2], false, false],
          [[4, 3], [4, 2], true, false],
          [[3, 4], [2, 4], false, true],
          [[4, 3], [2, 4], true, true],
          [[2, 3, 4], [4, 5], false, false],
          [[2, 3, 4], [5, 4], false, true],
          [[2, 4, 3], [4, 5], true, false],
          [[2, 1, 3, 4], [3, 4, 2], false, false],
          [[2, 1, 4, 3], [3, 2, 4], true, true],
          [[3, 4], [2, 4, 5], false, false],
          [[4], [4, 2], false, false],
          [[3, 4], [4], false, false],
          [[4], [4], false, false],
          [[2, 3, 4], [4], false, false],
          [[4], [2, 4, 3], false, false],
          [[3, 0], [0, 2], false, false],
        ];
        cases.forEach(([sa, sb, ta, tb], i) => {
          const a = rn(sa, 200 + i), b = rn(sb, 300 + i);
          expectTensor(matmul(a, b, { transA: ta, transB: tb }), naiveMatmul(a, b, ta, tb), `matmul [${sa}]${ta ? 'ᵀ' : ''}·[${sb}]${tb ? 'ᵀ' : ''}`, { rtol: 1e-5, atol: 1e-5 });
        });
      });

      test('linear = x·Wᵀ + b', () => {
        const x = rn([2, 3, 4], 1), w = rn([5, 4], 2), b = rn([5], 3);
        const ref = naiveMatmul(x, w, false, true);
        ref.data = ref.data.map((v, i) => v + b.data[i % 5]);
        expectTensor(linear(x, w, b), ref, 'linear', { rtol: 1e-5, atol: 1e-5 });
        expectTypedError(() => linear(x, rn([5, 3], 4)), ShapeError, 'linear.x');
        expectTypedError(() => linear(x, rn([4], 4)), ShapeError, 'linear.weight');
      });

      test('inner-dimension mismatch throws ShapeError', () => {
        const e = expectTypedError(() => matmul(rn([2, 3], 1), rn([4, 2], 2)), ShapeError, 'matmul shapes');
        expect(e.message).toContain('3');
        expectTypedError(() => matmul(rn([2, 2, 3], 1), rn([3, 3, 2], 2)), ShapeError, 'matmul batch shapes');
      });
    });

    describe('reductions and softmax', () => {
      test('sum/mean/max/min over axes match naive', () => {
        const x = rn([2, 3, 4], 5);
        const axesList: Array<number[] | undefined> = [undefined, [0], [1], [2], [0, 2], [1, 2], [0, 1, 2]];
        const fs = {
          sum: (v: number[]) => v.reduce((p, q) => p + q, 0),
          mean: (v: number[]) => v.reduce((p, q) => p + q, 0) / v.length,
          max: (v: number[]) => Math.max(...v),
          min: (v: number[]) => Math.min(...v),
        };
        const ops = { sum, mean, max, min };
        for (const axes of axesList) {
          for (const keep of [false, true]) {
            for (const name of ['sum', 'mean', 'max', 'min'] as const) {
              const ax = axes ?? [0, 1, 2];
              expectTensor(ops[name](x, axes, keep), naiveReduce(x, ax, keep, fs[name]), `${name} ${JSON.stringify(axes)} keep=${keep}`);
            }
          }
        }
        // Negative axes mean the same as their positive counterparts.
        expectTensor(sum(x, [-1, 0]), naiveReduce(x, [0, 2], false, fs.sum), 'sum negative axes');
      });

      test('argmax takes the first index on ties', () => {
        const x = Tensor.from([1, 5, 5, 2, 7, 7, 7, 0], [2, 4]);
        expect(argmax(x).toArray()).toEqual([1, 0]);
        expect(argmax(x, 0).toArray()).toEqual([1, 1, 1, 0]);
      });

      test('softmax / logSoftmax / logsumexp along any axis', () => {
        const x = rn([2, 3, 4], 6);
        for (const axis of [0, 1, 2]) {
          expectTensor(softmax(x, axis), { data: alongAxis(x, axis, (r) => naiveSoftmaxRow(r)), shape: x.shape }, `softmax ${axis}`);
          expectTensor(logSoftmax(x, axis), { data: alongAxis(x, axis, (r) => naiveSoftmaxRow(r, true)), shape: x.shape }, `logSoftmax ${axis}`);
          const lse = (v: number[]): number => Math.log(v.reduce((p, q) => p + Math.exp(q), 0));
          for (const keep of [false, true]) expectTensor(logsumexp(x, axis, keep), naiveReduce(x, [axis], keep, lse), `logsumexp ${axis} ${keep}`);
        }
        // Stability: huge logits do not overflow.
        const big = Tensor.from([1000, 1001, 1002], [3]);
        expectAllClose(softmax(big), naiveSoftmaxRow([0, 1, 2]), { label: 'stable softmax' });
        expectAllClose(logsumexp(big), [1002 + Math.log(1 + Math.exp(-1) + Math.exp(-2))], { label: 'stable lse' });
      });

      test('axis errors throw RangeValueError naming the field', () => {
        const x = rn([2, 3], 1);
        expectTypedError(() => sum(x, 2), RangeValueError, 'sum.axis', '2');
        expectTypedError(() => mean(x, -3), RangeValueError, 'mean.axis', '-3');
        expectTypedError(() => max(x, [0, 0]), RangeValueError, 'max.axis');
        expectTypedError(() => softmax(x, 5), RangeValueError, 'softmax.axis', '5');
        expectTypedError(() => logSoftmax(x, -4), RangeValueError, 'logSoftmax.axis');
        expectTypedError(() => logsumexp(x, 2), RangeValueError, 'logsumexp.axis');
        expectTypedError(() => argmax(x, 2), RangeValueError, 'argmax.axis');
        expectTypedError(() => slice(x, 3, 0), RangeValueError, 'slice.axis');
        expectTypedError(() => concat([x, x], 2), RangeValueError, 'concat.axis');
        expectTypedError(() => x.squeeze(0), ShapeError, 'squeeze.axis');
        expectTypedError(() => x.unsqueeze(4), RangeValueError, 'unsqueeze.axis');
        expectTypedError(() => transpose(x, [0, 0]), RangeValueError, 'transpose.perm');
        expectTypedError(() => transpose(x, [0]), ShapeError, 'transpose.perm');
      });
    });

    describe('shape ops', () => {
      test('reshape, transpose, slice, concat, stack, expand match naive', () => {
        const x = rn([2, 3, 4], 7);
        expectTensor(x.reshape([4, -1]), { data: x.data, shape: [4, 6] }, 'reshape');
        expectTypedError(() => x.reshape([5, -1]), ShapeError, 'reshape.shape');
        expectTypedError(() => x.reshape([2, 2]), ShapeError, 'reshape.shape');

        const perm = [2, 0, 1];
        const tShape = perm.map((p) => x.shape[p]);
        const tData = Array.from({ length: x.size }, (_, o) => {
          const oi = unravel(o, tShape);
          const xi = new Array<number>(3);
          perm.forEach((p, d) => (xi[p] = oi[d]));
          return x.data[ravel(xi, x.shape)];
        });
        expectTensor(transpose(x, perm), { data: tData, shape: tShape }, 'transpose perm');
        const t2 = transpose(x);
        expect([...t2.shape]).toEqual([2, 4, 3]);
        expect(t2.data[ravel([1, 3, 2], [2, 4, 3])]).toBe(x.data[ravel([1, 2, 3], [2, 3, 4])]);

        const sl = (s: number, e?: number): number[] => {
          const out: number[] = [];
          for (let i = 0; i < x.size; i++) {
            const [, , c] = unravel(i, x.shape);
            const n = 4, ss = s < 0 ? Math.max(0, s + n) : Math.min(s, n), ee = e === undefined ? n : e < 0 ? Math.max(0, e + n) : Math.min(e, n);
            if (c >= ss && c < ee) out.push(x.data[i]);
          }
          return out;
        };
        expect(slice(x, -1, -3, -1).toArray()).toEqual(sl(-3, -1));
        expect([...slice(x, -1, -3, -1).shape]).toEqual([2, 3, 2]);
        expect(slice(x, 2, 1).toArray()).toEqual(sl(1));
        expect([...slice(x, 2, -100, 100).shape]).toEqual([2, 3, 4]);
        expect([...slice(x, 2, 3, 1).shape]).toEqual([2, 3, 0]);

        const a = rn([2, 1], 8), b = rn([2, 3], 9);
        expect(concat([a, b], 1).toArray()).toEqual([a.data[0], ...b.toArray().slice(0, 3), a.data[1], ...b.toArray().slice(3)]);
        expectTypedError(() => concat([a, rn([3, 3], 1)], 1), ShapeError, 'concat.tensors[1].shape');
        const s = stack([b, b.neg()], 1);
        expect([...s.shape]).toEqual([2, 2, 3]);
        expect(s.toArray()).toEqual([...b.toArray().slice(0, 3), ...b.neg().toArray().slice(0, 3), ...b.toArray().slice(3), ...b.neg().toArray().slice(3)]);

        const e = expand(Tensor.from([1, 2, 3], [3, 1]), [2, 3, 2]);
        expect(e.toArray()).toEqual([1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3]);
        expectTypedError(() => expand(rn([3], 1), [2, 2]), ShapeError, 'expand shapes');
        expectTypedError(() => expand(rn([2, 3], 1), [1, 3]), ShapeError, 'expand.shape');
      });
    });

    describe('index ops', () => {
      test('gatherRows and scatterAddRows match naive (repeated indices, weights)', () => {
        const src = rn([3, 2], 10);
        const idx = [2, 0, 2, 1];
        expect(gatherRows(src, idx).toArray()).toEqual(idx.flatMap((r) => [src.data[2 * r], src.data[2 * r + 1]]));
        expect([...gatherRows(src, Tensor.indices([0, 1, 2, 0], [2, 2])).shape]).toEqual([2, 2, 2]);
        const rows = rn([4, 2], 11), w = rn([4], 12);
        const ref = new Array<number>(6).fill(0);
        idx.forEach((r, i) => {
          for (let c = 0; c < 2; c++) ref[r * 2 + c] += w.data[i] * rows.data[i * 2 + c];
        });
        expectAllClose(scatterAddRows(rows, idx, 3, w), ref, { label: 'scatterAddRows weighted' });
        const ref1 = new Array<number>(6).fill(0);
        idx.forEach((r, i) => {
          for (let c = 0; c < 2; c++) ref1[r * 2 + c] += rows.data[i * 2 + c];
        });
        expectAllClose(scatterAddRows(rows, idx, 3), ref1, { label: 'scatterAddRows' });
        expectTypedError(() => gatherRows(src, [0, 3]), RangeValueError, 'gatherRows.indices[1]', '3');
        expectTypedError(() => gatherRows(src, [0, 1.5]), DTypeError, 'gatherRows.indices', '1.5');
        expectTypedError(() => gatherRows(src, Tensor.from([0, 1], [2])), DTypeError, 'gatherRows.indices');
        expectTypedError(() => scatterAddRows(rows, [0, 1], 3), ShapeError, 'scatterAddRows.indices');
        expectTypedError(() => scatterAddRows(rows, idx, 3, rn([3], 1)), ShapeError, 'scatterAddRows.weights');
      });

      test('topK: sorted descending, ties go to the lower index', () => {
        const x = Tensor.from([1, 3, 3, 2, 3, /**/ 0, -1, 0, 0, 5], [2, 5]);
        const { values, indices } = topK(x, 3);
        expect(indices.dtype).toBe('int32');
        expect(indices.toArray()).toEqual([1, 2, 4, 4, 0, 2]);
        expect(values.toArray()).toEqual([3, 3, 3, 5, 0, 0]);
        const r = rn([4, 7], 13);
        const { values: v2, indices: i2 } = r.topK(3);
        for (let row = 0; row < 4; row++) {
          const vals = r.toArray().slice(row * 7, row * 7 + 7).map((v, i) => [v, i]);
          vals.sort((p, q) => q[0] - p[0] || p[1] - q[1]);
          expect(i2.toArray().slice(row * 3, row * 3 + 3)).toEqual(vals.slice(0, 3).map((p) => p[1]));
          expect(v2.toArray().slice(row * 3, row * 3 + 3)).toEqual(vals.slice(0, 3).map((p) => p[0]));
        }
        expectTypedError(() => topK(x, 6), RangeValueError, 'topK.k', '6');
        // NaN counts as the largest value (torch.topk); two NaNs keep their index order.
        const withNaN = topK(Tensor.from([2, NaN, 7, NaN, 1], [1, 5]), 3);
        expect(withNaN.indices.toArray()).toEqual([1, 3, 2]);
        expect(withNaN.values.toArray()).toEqual([NaN, NaN, 7]);
        // Many rows of few distinct values (ties everywhere), some NaN, against a stable sort.
        let seed = 7;
        const next = (): number => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
        const cols = 9, rowsN = 200;
        const data = Array.from({ length: rowsN * cols }, () => (next() < 0.05 ? NaN : Math.floor(next() * 4) - 2));
        const key = (v: number): number => (Number.isNaN(v) ? Infinity : v);
        for (const k of [1, 2, 4, cols]) {
          const got = topK(Tensor.from(data, [rowsN, cols]), k).indices.toArray();
          for (let row = 0; row < rowsN; row++) {
            const ref = data.slice(row * cols, row * cols + cols).map((v, i) => [key(v), i]);
            ref.sort((p, q) => q[0] - p[0] || p[1] - q[1]);
            expect(got.slice(row * k, row * k + k)).toEqual(ref.slice(0, k).map((p) => p[1]));
          }
        }
      });

      test('oneHot', () => {
        const o = oneHot(Tensor.indices([2, 0, 1, 2], [2, 2]), 3);
        expect([...o.shape]).toEqual([2, 2, 3]);
        expect(o.toArray()).toEqual([0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1]);
        expectTypedError(() => oneHot([0, 3], 3), RangeValueError, 'oneHot.indices[1]', '3');
        expectTypedError(() => oneHot([0], 0), RangeValueError, 'oneHot.numClasses');
      });

      test('gatherAlong matches torch.gather', () => {
        const x = rn([2, 4], 14);
        const idx = Tensor.indices([3, 0, 0, 1, 2, 2], [2, 3]);
        const ref = [x.data[3], x.data[0], x.data[0], x.data[4 + 1], x.data[4 + 2], x.data[4 + 2]];
        expect(gatherAlong(x, 1, idx).toArray()).toEqual(ref);
        const idx0 = Tensor.indices([1, 0, 0, 1], [1, 4]);
        expect(gatherAlong(x, 0, idx0).toArray()).toEqual([x.data[4], x.data[1], x.data[2], x.data[7]]);
        expectTypedError(() => gatherAlong(x, 1, Tensor.indices([4, 0], [2, 1])), RangeValueError, 'gatherAlong.indices[0]', '4');
      });
    });

    describe('norms', () => {
      test('layerNorm and rmsNorm match naive', () => {
        const x = rn([2, 3, 5], 15), w = rn([5], 16), b = rn([5], 17);
        const ln = (eps: number, ww: Tensor | null, bb: Tensor | null): number[] =>
          alongAxis(x, 2, (r) => {
            const mu = r.reduce((p, q) => p + q, 0) / r.length;
            const v = r.reduce((p, q) => p + (q - mu) ** 2, 0) / r.length;
            return r.map((q, c) => ((q - mu) / Math.sqrt(v + eps)) * (ww ? ww.data[c] : 1) + (bb ? bb.data[c] : 0));
          });
        const rms = (eps: number, ww: Tensor | null): number[] =>
          alongAxis(x, 2, (r) => {
            const ms = r.reduce((p, q) => p + q * q, 0) / r.length;
            return r.map((q, c) => (q / Math.sqrt(ms + eps)) * (ww ? ww.data[c] : 1));
          });
        const tol = { rtol: 1e-5, atol: 1e-5 };
        expectTensor(layerNorm(x, w, b), { data: ln(1e-5, w, b), shape: x.shape }, 'layerNorm', tol);
        expectTensor(layerNorm(x), { data: ln(1e-5, null, null), shape: x.shape }, 'layerNorm plain', tol);
        expectTensor(layerNorm(x, null, b, 0.1), { data: ln(0.1, null, b), shape: x.shape }, 'layerNorm eps', tol);
        expectTensor(rmsNorm(x, w), { data: rms(1e-6, w), shape: x.shape }, 'rmsNorm', tol);
        expectTensor(rmsNorm(x, null, 0.5), { data: rms(0.5, null), shape: x.shape }, 'rmsNorm eps', tol);
        expectTypedError(() => layerNorm(x, rn([4], 1)), ShapeError, 'layerNorm.weight.shape');
        expectTypedError(() => layerNorm(x, null, rn([5, 1], 1)), ShapeError, 'layerNorm.bias.shape');
        expectTypedError(() => rmsNorm(x, rn([3], 1)), ShapeError, 'rmsNorm.weight.shape');
        expectTypedError(() => rmsNorm(Tensor.scalar(1)), ShapeError, 'rmsNorm.x');
        expectTypedError(() => layerNorm(x, null, null, -1), RangeValueError, 'layerNorm.eps', '-1');
      });
    });

    describe('losses', () => {
      const naiveCE = (z: Tensor, t: number[], C: number, ign: number, eps: number): number[] =>
        t.map((c, i) => {
          if (c === ign) return 0;
          const lp = naiveSoftmaxRow(z.toArray().slice(i * C, (i + 1) * C), true);
          return -(1 - eps) * lp[c] - (eps / C) * lp.reduce((p, q) => p + q, 0);
        });

      test('crossEntropy matches naive, with ignored targets and label smoothing', () => {
        const z = rn([5, 4], 18);
        const t = [1, -100, 3, 0, -100];
        for (const eps of [0, 0.1, 1]) {
          const per = naiveCE(z, t, 4, -100, eps);
          const tag = `ε=${eps}`;
          expectAllClose(crossEntropy(z, t, { labelSmoothing: eps, reduction: 'none' }), per, { label: `none ${tag}`, atol: 1e-5 });
          expectAllClose(crossEntropy(z, t, { labelSmoothing: eps, reduction: 'sum' }), [per.reduce((p, q) => p + q)], { label: `sum ${tag}` });
          // Mean divides by the 3 non-ignored targets, not by 5.
          expectAllClose(crossEntropy(z, Tensor.indices(t), { labelSmoothing: eps }), [per.reduce((p, q) => p + q) / 3], { label: `mean ${tag}` });
        }
        // A custom ignoreIndex may be a valid class.
        const per2 = naiveCE(z, [1, 2, 3, 2, 0], 4, 2, 0);
        expectAllClose(crossEntropy(z, [1, 2, 3, 2, 0], { ignoreIndex: 2 }), [per2.reduce((p, q) => p + q) / 3], { label: 'custom ignoreIndex' });
        // Leading dims: logits [2, 3, 4], targets [2, 3]; 'none' keeps the leading shape.
        const z3 = rn([2, 3, 4], 19), t3 = [0, 3, 1, 2, -100, 3];
        const none3 = crossEntropy(z3, Tensor.indices(t3, [2, 3]), { reduction: 'none' });
        expect([...none3.shape]).toEqual([2, 3]);
        expectAllClose(none3, naiveCE(z3, t3, 4, -100, 0), { label: '3-d', atol: 1e-5 });
        // A single sample: logits [C] with a scalar target.
        expectAllClose(crossEntropy(rn([4], 20), Tensor.indices([2], [])), naiveCE(rn([4], 20), [2], 4, -100, 0), { label: '1-d' });
      });

      test('crossEntropy: all targets ignored gives NaN for mean (PyTorch) and 0 for sum, zero gradient', () => {
        const z = Tensor.randn([2, 3], { seed: 21, requiresGrad: true });
        const m = crossEntropy(z, [-100, -100]);
        expect(Number.isNaN(m.item())).toBe(true);
        m.backward();
        expect(z.grad!.toArray()).toEqual([0, 0, 0, 0, 0, 0]);
        expect(crossEntropy(z, [-100, -100], { reduction: 'sum' }).item()).toBe(0);
      });

      test('crossEntropy gradient is softmax - q', () => {
        const z = Tensor.randn([2, 3], { seed: 22, requiresGrad: true });
        crossEntropy(z, [2, -100], { reduction: 'sum', labelSmoothing: 0.3 }).backward();
        const p = naiveSoftmaxRow(z.toArray().slice(0, 3));
        const q = [0.1, 0.1, 0.8];
        expectAllClose(z.grad!, [...p.map((v, i) => v - q[i]), 0, 0, 0], { label: 'dCE', atol: 1e-6 });
      });

      test('crossEntropy validation names index and value', () => {
        const z = rn([3, 4], 23);
        expectTypedError(() => crossEntropy(z, [0, 4, 1]), RangeValueError, 'crossEntropy.targets[1]', '4');
        expectTypedError(() => crossEntropy(z, [0, 1, -1]), RangeValueError, 'crossEntropy.targets[2]', '-1');
        expectTypedError(() => crossEntropy(z, [0, 1]), ShapeError, 'crossEntropy.targets.shape');
        expectTypedError(() => crossEntropy(z, Tensor.indices([0, 1, 2], [3, 1])), ShapeError, 'crossEntropy.targets.shape');
        expectTypedError(() => crossEntropy(z, Tensor.from([0, 1, 2], [3])), DTypeError, 'crossEntropy.targets');
        expectTypedError(() => crossEntropy(z, [0, 1, 2], { reduction: 'avg' as 'mean' }), ValueError, 'crossEntropy.reduction', 'avg');
        expectTypedError(() => crossEntropy(z, [0, 1, 2], { labelSmoothing: 1.5 }), RangeValueError, 'crossEntropy.labelSmoothing', '1.5');
        expectTypedError(() => crossEntropy(z, [0, 1, 2], { ignoreIndex: 0.5 }), ValueError, 'crossEntropy.ignoreIndex');
        expectTypedError(() => crossEntropy(Tensor.scalar(1), []), ShapeError, 'crossEntropy.logits');
      });

      test('mseLoss', () => {
        const a = rn([2, 3], 24), b = rn([2, 3], 25);
        const sq = a.toArray().map((v, i) => (v - b.data[i]) ** 2);
        expectAllClose(mseLoss(a, b), [sq.reduce((p, q) => p + q) / 6], { label: 'mse mean' });
        expectAllClose(mseLoss(a, b, { reduction: 'sum' }), [sq.reduce((p, q) => p + q)], { label: 'mse sum' });
        expectAllClose(mseLoss(a, b, { reduction: 'none' }), sq, { label: 'mse none' });
        expectTypedError(() => mseLoss(a, rn([3], 1)), ShapeError, 'mseLoss.b.shape');
      });
    });

    describe('dropout', () => {
      test('inverted scaling, seeded masks, identity cases, validation', () => {
        const x = Tensor.ones([100, 50]);
        const y = dropout(x, 0.3, { seed: 5 });
        const vals = y.toArray();
        const kept = vals.filter((v) => v !== 0);
        for (const v of kept) expect(v).toBeCloseTo(1 / 0.7, 6);
        expect(kept.length / vals.length).toBeGreaterThan(0.67);
        expect(kept.length / vals.length).toBeLessThan(0.73);
        // Same seed ⇒ same mask; a different seed ⇒ a different one.
        expect(dropout(x, 0.3, { seed: 5 }).toArray()).toEqual(vals);
        expect(dropout(x, 0.3, { seed: 6 }).toArray()).not.toEqual(vals);
        // A generator is advanced: two draws differ, and replaying its seed replays them.
        const g1 = new Generator(9), g2 = new Generator(9);
        const d1 = dropout(x, 0.5, { generator: g1 }).toArray(), d2 = dropout(x, 0.5, { generator: g1 }).toArray();
        expect(d1).not.toEqual(d2);
        expect(dropout(x, 0.5, { generator: g2 }).toArray()).toEqual(d1);
        // Identity: p = 0 or evaluation mode returns x itself.
        expect(dropout(x, 0)).toBe(x);
        expect(dropout(x, 0.9, { training: false })).toBe(x);
        // Backward uses the same mask.
        const p = Tensor.randn([4, 6], { seed: 3, requiresGrad: true });
        const out = dropout(p, 0.5, { seed: 11 });
        out.sum().backward();
        const od = out.toArray();
        p.grad!.toArray().forEach((gv, i) => expect(gv).toBeCloseTo(od[i] === 0 ? 0 : 2, 6));
        expectTypedError(() => dropout(x, 1), RangeValueError, 'dropout.p', '1');
        expectTypedError(() => dropout(x, -0.1), RangeValueError, 'dropout.p', '-0.1');
        expectTypedError(() => dropout(x, Number.NaN), RangeValueError, 'dropout.p', 'NaN');
      });
    });

    describe('attention', () => {
      /** softmax(q kᵀ·scale + bottom-right causal mask) v, per (b, h), by definition. */
      function naiveAttention(q: Tensor, k: Tensor, v: Tensor, causal: boolean, scale?: number): number[] {
        const [B, H, Tq, D] = q.shape, Tk = k.shape[2], Dv = v.shape[3];
        const sc = scale ?? 1 / Math.sqrt(D);
        const out: number[] = [];
        for (let bh = 0; bh < B * H; bh++) {
          for (let i = 0; i < Tq; i++) {
            const allowed: number[] = [];
            const scores: number[] = [];
            for (let j = 0; j < Tk; j++) {
              if (causal && j > i + (Tk - Tq)) continue;
              let s = 0;
              for (let d = 0; d < D; d++) s += q.data[(bh * Tq + i) * D + d] * k.data[(bh * Tk + j) * D + d];
              allowed.push(j);
              scores.push(s * sc);
            }
            const p = allowed.length ? naiveSoftmaxRow(scores) : [];
            for (let e = 0; e < Dv; e++) {
              let o = 0;
              allowed.forEach((j, a) => (o += p[a] * v.data[(bh * Tk + j) * Dv + e]));
              out.push(o);
            }
          }
        }
        return out;
      }

      test('matches naive attention (causal bottom-right, Tq ≠ Tk, custom scale, Dv ≠ D)', () => {
        const cases: Array<[number, number, boolean, number | undefined, number]> = [
          [4, 4, false, undefined, 3], [4, 4, true, undefined, 3], [2, 5, true, undefined, 3],
          [1, 6, true, undefined, 2], [3, 5, false, 0.25, 2], [5, 3, true, undefined, 3], [2, 0, false, undefined, 3],
        ];
        cases.forEach(([tq, tk, causal, scale, dv], i) => {
          const q = rn([2, 3, tq, 4], 400 + i), k = rn([2, 3, tk, 4], 500 + i), v = rn([2, 3, tk, dv], 600 + i);
          const y = scaledDotProductAttention(q, k, v, { causal, scale });
          expectTensor(y, { data: naiveAttention(q, k, v, causal, scale), shape: [2, 3, tq, dv] }, `attention ${tq}/${tk}/${causal}`, { rtol: 1e-4, atol: 1e-5 });
        });
      });

      test('causal with Tq = Tk equals an explicit lower-triangular mask; fully masked rows are zeros', () => {
        const q = rn([1, 1, 3, 2], 30), k = rn([1, 1, 3, 2], 31), v = rn([1, 1, 3, 2], 32);
        const y = scaledDotProductAttention(q, k, v, { causal: true });
        // Row 0 sees only key 0: output is exactly v[0].
        expectAllClose(y.toArray().slice(0, 2), v.toArray().slice(0, 2), { label: 'row 0' });
        // Tq = 4 > Tk = 2: query i sees keys ≤ i - 2, so rows 0 and 1 see nothing.
        const y2 = scaledDotProductAttention(rn([1, 1, 4, 2], 33), k.slice(2, 0, 2), v.slice(2, 0, 2), { causal: true });
        expect(y2.toArray().slice(0, 4)).toEqual([0, 0, 0, 0]);
        expect(y2.toArray().every(Number.isFinite)).toBe(true);
      });

      test('shape validation', () => {
        const q = rn([1, 2, 3, 4], 1);
        expectTypedError(() => scaledDotProductAttention(rn([2, 3, 4], 1), q, q), ShapeError, 'attention.q.shape');
        expectTypedError(() => scaledDotProductAttention(q, rn([1, 2, 3, 5], 2), q), ShapeError, 'attention.k.shape');
        expectTypedError(() => scaledDotProductAttention(q, q, rn([1, 2, 2, 4], 3)), ShapeError, 'attention.v.shape');
        expectTypedError(() => scaledDotProductAttention(q, q, q, { scale: Number.NaN }), RangeValueError, 'attention.scale');
      });
    });
  });

  describe(`autodiff [${backend.name}]`, () => {
    test('edge cases: pow 0 gradient, scalar logsumexp, dtype errors, exact grad shapes', () => {
      const x = Tensor.from([0, 2], [2], { requiresGrad: true });
      x.pow(0).sum().backward();
      expect(x.grad!.toArray()).toEqual([0, 0]); // not NaN at 0 (torch)
      const s = Tensor.scalar(3, { requiresGrad: true });
      const l = logsumexp(s);
      expect([...l.shape]).toEqual([]);
      expect(l.item()).toBeCloseTo(3, 6);
      l.backward();
      expect(s.grad!.item()).toBeCloseTo(1, 6);
      expectTypedError(() => transpose(Tensor.indices([1, 2, 3, 4], [2, 2])), DTypeError, 'transpose.x', 'int32');
      expectTypedError(() => concat([Tensor.indices([1]), Tensor.from([1], [1])]), DTypeError, 'concat.tensors[1].dtype');
      // A same-size gradient of another shape is given the leaf's exact shape.
      const z = Tensor.from([1, 2, 3], [3, 1], { requiresGrad: true });
      z.reshape([1, 3]).sum().backward();
      expect([...z.grad!.shape]).toEqual([3, 1]);
      const v = Tensor.from([1, 2], [2], { requiresGrad: true });
      matmul(v, Tensor.ones([2, 3])).sum().backward();
      expect([...v.grad!.shape]).toEqual([2]);
    });

    test('backward on a non-scalar throws GradError', () => {
      const x = Tensor.randn([2, 3], { seed: 1, requiresGrad: true });
      const y = x.mul(2);
      expectTypedError(() => y.backward(), GradError, 'backward');
      expect(() => y.backward()).toThrow(/scalar/);
      // With an explicit gradOutput it works.
      y.backward(Tensor.ones([2, 3]));
      expect(x.grad!.toArray()).toEqual([2, 2, 2, 2, 2, 2]);
    });

    test('backward on a tensor without grad, and a second backward through a freed graph, throw GradError', () => {
      expectTypedError(() => Tensor.scalar(1).backward(), GradError, 'backward');
      const x = Tensor.randn([3], { seed: 2, requiresGrad: true });
      const l = x.exp().sum();
      l.backward();
      expectTypedError(() => l.backward(), GradError, 'backward');
      expectTypedError(() => x.sum().backward(Tensor.ones([2])), ShapeError, 'gradOutput.shape');
    });

    test('gradients accumulate across backward() calls; p.grad = null resets', () => {
      const p = Tensor.from([1, 2, 3], [3], { requiresGrad: true });
      const f = (): Tensor => p.mul(p).sum(); // d/dp = 2p
      f().backward();
      expect(p.grad!.toArray()).toEqual([2, 4, 6]);
      f().backward();
      expect(p.grad!.toArray()).toEqual([4, 8, 12]);
      p.grad = null;
      f().backward();
      expect(p.grad!.toArray()).toEqual([2, 4, 6]);
    });

    test('a shared gradient is never aliased between inputs (add of a doubly used sum)', () => {
      // t = a + b is used twice, so its gradient is an engine-made sum that add hands to both a and b.
      const a = Tensor.from([1, 2], [2], { requiresGrad: true });
      const b = Tensor.from([3, 4], [2], { requiresGrad: true });
      let t = add(a, b);
      add(a.sum(), add(t.sum(), t.sum())).backward();
      expect(a.grad!.toArray()).toEqual([3, 3]);
      expect(b.grad!.toArray()).toEqual([2, 2]);
      expect(a.grad).not.toBe(b.grad);
      a.grad = null;
      b.grad = null;
      t = add(a, b);
      add(t.sum(), t.sum()).backward();
      t = add(a, b);
      t.sum().backward();
      expect(a.grad!.toArray()).toEqual([3, 3]);
      expect(b.grad!.toArray()).toEqual([3, 3]);
    });

    test('noGrad records nothing; enableGrad re-enables inside it', () => {
      const x = Tensor.randn([2], { seed: 3, requiresGrad: true });
      const y = noGrad(() => {
        expect(isGradEnabled()).toBe(false);
        const inner = enableGrad(() => x.mul(3));
        expect(inner.requiresGrad).toBe(true);
        return x.mul(2).exp();
      });
      expect(isGradEnabled()).toBe(true);
      expect(y.requiresGrad).toBe(false);
      expect(y.gradNode).toBeNull();
      expectTypedError(() => y.sum().backward(), GradError, 'backward');
      // noGrad restores the flag even when fn throws.
      expect(() => noGrad(() => { throw new Error('boom'); })).toThrow('boom');
      expect(isGradEnabled()).toBe(true);
    });

    test('anomaly mode names the op that produced NaN/Inf (forward and backward)', () => {
      // Off: log(-1) is just NaN.
      expect(Number.isNaN(Tensor.from([-1], [1]).log().item())).toBe(true);
      setAnomalyDetection(true);
      const err = expectTypedError(() => Tensor.from([-1], [1]).log(), AnomalyError, 'log');
      expect(err.message).toContain("op 'log'");
      expect(err.message).toContain('forward');
      // Backward: sqrt'(0) = +Inf.
      const x = Tensor.from([0, 1], [2], { requiresGrad: true });
      const y = x.sqrt().sum();
      const e2 = expectTypedError(() => y.backward(), AnomalyError, 'sqrt');
      expect(e2.message).toContain('backward');
      setAnomalyDetection(false);
      expect(Number.isNaN(Tensor.from([-1], [1]).log().item())).toBe(true);
    });
  });
});
