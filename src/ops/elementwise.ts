/**
 * Element-wise ops with NumPy broadcasting, each with its backward rule beside it.
 * Binary backward rules reduce the output gradient back to each input's shape (sumToShape).
 */
import type { Activation, BinaryOp, UnaryOp } from '../backend/interface.js';
import { ShapeError } from '../errors.js';
import { acquireScratch } from '../backend/scratch.js';
import { record } from '../tensor/autodiff.js';
import { broadcastShapes, broadcastStrides, shapesEqual } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { sumToShape } from './reduce.js';
import { be, requireFloat } from './util.js';

function unaryOp(op: UnaryOp, x: Tensor): Tensor {
  const xd = requireFloat(x, `${op}.x`);
  const out = new Float32Array(xd.length);
  be().unary(op, xd, out);
  const y = new Tensor(out, x.shape);
  return record(op, [x], y, (g) => {
    const dx = acquireScratch(xd.length); // overwritten by unaryGrad
    be().unaryGrad(op, xd, out, g.f32, dx);
    return [new Tensor(dx, x.shape)];
  });
}

/** -x */
export const neg = (x: Tensor): Tensor => unaryOp('neg', x);
/** |x| (subgradient 0 at 0) */
export const abs = (x: Tensor): Tensor => unaryOp('abs', x);
/** eˣ */
export const exp = (x: Tensor): Tensor => unaryOp('exp', x);
/** ln x */
export const log = (x: Tensor): Tensor => unaryOp('log', x);
/** √x */
export const sqrt = (x: Tensor): Tensor => unaryOp('sqrt', x);
/** 1/√x */
export const rsqrt = (x: Tensor): Tensor => unaryOp('rsqrt', x);
/** x² */
export const square = (x: Tensor): Tensor => unaryOp('square', x);
/** tanh x */
export const tanh = (x: Tensor): Tensor => unaryOp('tanh', x);
/** σ(x) = 1/(1+e⁻ˣ) */
export const sigmoid = (x: Tensor): Tensor => unaryOp('sigmoid', x);
/** softplus(x) = ln(1+eˣ) */
export const softplus = (x: Tensor): Tensor => unaryOp('softplus', x);
/** max(x, 0) */
export const relu = (x: Tensor): Tensor => unaryOp('relu', x);
/** SiLU / swish: x·σ(x) (Elfwing et al. 2017; Ramachandran et al. 2017) */
export const silu = (x: Tensor): Tensor => unaryOp('silu', x);
/** GELU (Hendrycks & Gimpel 2016): x·Φ(x) (erf form), or the tanh approximation with approximate: 'tanh'. */
export function gelu(x: Tensor, opts?: { approximate?: 'none' | 'tanh' }): Tensor {
  return unaryOp(opts?.approximate === 'tanh' ? 'gelu_tanh' : 'gelu', x);
}
/** Apply an activation by name (relu | gelu | gelu_tanh | silu). */
export function activation(x: Tensor, act: Activation): Tensor {
  return unaryOp(act, x);
}

function binaryForward(op: BinaryOp, a: Tensor, b: Tensor): { out: Float32Array; shape: number[] } {
  const ad = requireFloat(a, `${op}.a`), bd = requireFloat(b, `${op}.b`);
  const shape = broadcastShapes(a.shape, b.shape, op);
  const n = shape.reduce((p, d) => p * d, 1);
  const out = new Float32Array(n);
  if (shape.length === 0) {
    be().binary(op, ad, new Int32Array(0), bd, new Int32Array(0), out, new Int32Array(0));
  } else {
    be().binary(op, ad, broadcastStrides(a.shape, shape), bd, broadcastStrides(b.shape, shape), out, Int32Array.from(shape));
  }
  return { out, shape };
}

/** Raw broadcasting binary op, not recorded (used inside backward rules and by the optimizer). */
export function binaryRaw(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  const { out, shape } = binaryForward(op, a, b);
  return new Tensor(out, shape);
}

function scalarAffine(x: Tensor, scale: number, shift: number, name: string): Tensor {
  const xd = requireFloat(x, `${name}.x`);
  const out = new Float32Array(xd.length);
  be().affine(xd, scale, shift, out);
  return record(name, [x], new Tensor(out, x.shape), (g) => [scale === 1 ? g : scaleRaw(g, scale)]);
}

function scaleRaw(g: Tensor, s: number): Tensor {
  const out = new Float32Array(g.size);
  be().affine(g.f32, s, 0, out);
  return new Tensor(out, g.shape);
}

function asTensor(v: Tensor | number): Tensor {
  return v instanceof Tensor ? v : Tensor.scalar(v);
}

/** a + b (broadcasting; b may be a number) */
export function add(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === 'number') return scalarAffine(a, 1, b, 'add');
  const { out, shape } = binaryForward('add', a, b);
  return record('add', [a, b], new Tensor(out, shape), (g) => [sumToShape(g, a.shape), sumToShape(g, b.shape)]);
}

/** a - b (broadcasting; b may be a number) */
export function sub(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === 'number') return scalarAffine(a, 1, -b, 'sub');
  const { out, shape } = binaryForward('sub', a, b);
  return record('sub', [a, b], new Tensor(out, shape), (g) => [sumToShape(g, a.shape), b.requiresGrad ? scaleRaw(sumToShape(g, b.shape), -1) : null]);
}

/** a · b element-wise (broadcasting; b may be a number) */
export function mul(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === 'number') return scalarAffine(a, b, 0, 'mul');
  const { out, shape } = binaryForward('mul', a, b);
  return record('mul', [a, b], new Tensor(out, shape), (g) => [
    a.requiresGrad ? sumToShape(binaryRaw('mul', g, b), a.shape) : null,
    b.requiresGrad ? sumToShape(binaryRaw('mul', g, a), b.shape) : null,
  ]);
}

/** a / b element-wise (broadcasting; b may be a number) */
export function div(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === 'number') {
    const bt = asTensor(b);
    const { out, shape } = binaryForward('div', a, bt);
    return record('div', [a], new Tensor(out, shape), (g) => [binaryRaw('div', g, bt)]);
  }
  const { out, shape } = binaryForward('div', a, b);
  const y = new Tensor(out, shape);
  return record('div', [a, b], y, (g) => [
    a.requiresGrad ? sumToShape(binaryRaw('div', g, b), a.shape) : null,
    // d(a/b)/db = -(a/b)/b
    b.requiresGrad ? sumToShape(scaleRaw(binaryRaw('div', binaryRaw('mul', g, y), b), -1), b.shape) : null,
  ]);
}

/** xᵖ for a scalar exponent p. */
export function pow(x: Tensor, p: number): Tensor {
  if (p === 2) return square(x);
  const pt = Tensor.scalar(p);
  const { out, shape } = binaryForward('pow', x, pt);
  return record('pow', [x], new Tensor(out, shape), (g) => {
    // x⁰ is constant: p·x⁻¹ would be 0·∞ = NaN at x = 0 (torch gives 0).
    if (p === 0) return [Tensor.zeros(x.shape)];
    const d = binaryRaw('pow', x, Tensor.scalar(p - 1));
    return [binaryRaw('mul', g, scaleRaw(d, p))];
  });
}

function minMax(op: 'max' | 'min', a: Tensor, b: Tensor): Tensor {
  const { out, shape } = binaryForward(op, a, b);
  return record(op === 'max' ? 'maximum' : 'minimum', [a, b], new Tensor(out, shape), (g) => {
    // PyTorch convention: ties split the gradient equally.
    const ad = a.f32, bd = b.f32;
    const as = broadcastStrides(a.shape, shape), bs = broadcastStrides(b.shape, shape);
    const wa = new Float32Array(out.length), wb = new Float32Array(out.length);
    const idx = new Int32Array(shape.length);
    let ai = 0, bi = 0;
    for (let o = 0; o < out.length; o++) {
      const va = ad[ai], vb = bd[bi];
      const aWins = op === 'max' ? va > vb : va < vb;
      const w = va === vb ? 0.5 : aWins ? 1 : 0;
      wa[o] = g.data[o] * w;
      wb[o] = g.data[o] * (va === vb ? 0.5 : 1 - w);
      for (let d = shape.length - 1; d >= 0; d--) {
        idx[d]++;
        ai += as[d];
        bi += bs[d];
        if (idx[d] < shape[d]) break;
        ai -= as[d] * shape[d];
        bi -= bs[d] * shape[d];
        idx[d] = 0;
      }
    }
    return [sumToShape(new Tensor(wa, shape), a.shape), sumToShape(new Tensor(wb, shape), b.shape)];
  });
}

/** Element-wise maximum (broadcasting; ties split the gradient). */
export const maximum = (a: Tensor, b: Tensor): Tensor => minMax('max', a, b);
/** Element-wise minimum (broadcasting; ties split the gradient). */
export const minimum = (a: Tensor, b: Tensor): Tensor => minMax('min', a, b);

/** Fused gated activation, GLU family (Shazeer 2020, "GLU Variants Improve Transformer"): act(a) ⊙ b. */
export function gatedAct(a: Tensor, b: Tensor, act: Activation): Tensor {
  if (!shapesEqual(a.shape, b.shape)) throw new ShapeError('gatedAct.b', b.shape, `must equal a's shape [${a.shape}]`);
  const ad = requireFloat(a, 'gatedAct.a'), bd = requireFloat(b, 'gatedAct.b');
  const out = new Float32Array(ad.length);
  be().gatedAct(act, ad, bd, out);
  return record(`gatedAct(${act})`, [a, b], new Tensor(out, a.shape), (g) => {
    const da = acquireScratch(ad.length), db = acquireScratch(ad.length); // both overwritten
    be().gatedActGrad(act, ad, bd, g.f32, da, db);
    return [new Tensor(da, a.shape), new Tensor(db, a.shape)];
  });
}
