import {
  GEMM_ACCUMULATE,
  GEMM_PARAMS,
  GEMM_TRANS_A,
  GEMM_TRANS_B,
  LORA_MIX_ALL,
  LORA_MIX_DENSE,
  LORA_MIX_TOPK,
  type Activation,
  type Backend,
  type BinaryOp,
  type GatedGemmMode,
  type ReduceOp,
  type UnaryOp,
} from './interface.js';
import { gemmGatedComposed } from './gemm-gated.js';
import { need } from './wasm-args.js';

/** erf by Abramowitz–Stegun 7.1.26 is too coarse (1e-7 abs); use a Chebyshev-free series/continued-fraction split. */
export function erf(x: number): number {
  // W. J. Cody's rational approximations would be ideal; this split keeps ~1e-15 relative in double.
  const ax = Math.abs(x);
  if (ax < 2.5) {
    // Maclaurin series: erf x = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1)).
    let term = ax;
    let sum = ax;
    const x2 = ax * ax;
    for (let n = 1; n < 80; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    const r = (2 / Math.sqrt(Math.PI)) * sum;
    return x < 0 ? -r : r;
  }
  if (ax > 6) return x < 0 ? -1 : 1;
  // Continued fraction for erfc (Lentz), accurate for x >= 2.5.
  const x2 = ax * ax;
  let f = ax;
  let c = ax;
  let d = 0;
  for (let n = 1; n < 200; n++) {
    const an = n / 2;
    d = ax + an * d;
    d = d === 0 ? 1e-300 : 1 / d;
    c = ax + an / c;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-x2) / (f * Math.sqrt(Math.PI));
  return x < 0 ? erfc - 1 : 1 - erfc;
}

const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);
const GELU_TANH_C = Math.sqrt(2 / Math.PI);

function softplus(x: number): number {
  return x > 20 ? x : x < -20 ? Math.exp(x) : Math.log1p(Math.exp(x));
}
function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

/** f(x) for every unary op, in double precision (the oracle). */
export function unaryScalar(op: UnaryOp, x: number): number {
  switch (op) {
    case 'neg': return -x;
    case 'abs': return Math.abs(x);
    case 'exp': return Math.exp(x);
    case 'log': return Math.log(x);
    case 'sqrt': return Math.sqrt(x);
    case 'rsqrt': return 1 / Math.sqrt(x);
    case 'tanh': return Math.tanh(x);
    case 'sigmoid': return sigmoid(x);
    case 'softplus': return softplus(x);
    case 'relu': return x > 0 ? x : 0;
    case 'gelu': return 0.5 * x * (1 + erf(x * SQRT1_2));
    case 'gelu_tanh': return 0.5 * x * (1 + Math.tanh(GELU_TANH_C * (x + 0.044715 * x * x * x)));
    case 'silu': return x * sigmoid(x);
    case 'square': return x * x;
    case 'sign': return x > 0 ? 1 : x < 0 ? -1 : 0;
  }
}

/** f'(x) for every unary op; y = f(x) is available. */
export function unaryDerivative(op: UnaryOp, x: number, y: number): number {
  switch (op) {
    case 'neg': return -1;
    case 'abs': return x > 0 ? 1 : x < 0 ? -1 : 0;
    case 'exp': return y;
    case 'log': return 1 / x;
    case 'sqrt': return 0.5 / y;
    case 'rsqrt': return -0.5 * y * y * y;
    case 'tanh': return 1 - y * y;
    case 'sigmoid': return y * (1 - y);
    case 'softplus': return sigmoid(x);
    case 'relu': return x > 0 ? 1 : 0;
    case 'gelu': return 0.5 * (1 + erf(x * SQRT1_2)) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
    case 'gelu_tanh': {
      const u = GELU_TANH_C * (x + 0.044715 * x * x * x);
      const t = Math.tanh(u);
      const du = GELU_TANH_C * (1 + 3 * 0.044715 * x * x);
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du;
    }
    case 'silu': {
      const s = sigmoid(x);
      return s * (1 + x * (1 - s));
    }
    case 'square': return 2 * x;
    case 'sign': return 0;
  }
}

function binaryScalar(op: BinaryOp, a: number, b: number): number {
  switch (op) {
    case 'add': return a + b;
    case 'sub': return a - b;
    case 'mul': return a * b;
    case 'div': return a / b;
    case 'max': return a >= b || Number.isNaN(a) ? a : b;
    case 'min': return a <= b || Number.isNaN(a) ? a : b;
    case 'pow': return Math.pow(a, b);
  }
}

/** Whether v ranks ahead of u in a descending top-k: strictly greater (so equal values keep the
 * earlier column ahead), and NaN above every number (torch.topk). */
function beats(v: number, u: number): boolean {
  return v > u || (v !== v && u === u);
}

/**
 * The pure-TypeScript backend: simple loops, double-precision accumulation where it is free.
 * It is the oracle the native backend is tested against and the fallback when the addon is absent.
 */
export class ReferenceBackend implements Backend {
  get name(): string {
    return 'reference';
  }
  get threads(): number {
    return 1;
  }

  gemm(buffers: readonly Float32Array[], params: Int32Array): void {
    if (params.length % GEMM_PARAMS !== 0) {
      throw new RangeError(`gemm: params.length=${params.length} is not a multiple of ${GEMM_PARAMS}`);
    }
    for (let t = 0; t < params.length; t += GEMM_PARAMS) {
      const A = buffers[params[t]], aOff = params[t + 1], lda = params[t + 2];
      const B = buffers[params[t + 3]], bOff = params[t + 4], ldb = params[t + 5];
      const C = buffers[params[t + 6]], cOff = params[t + 7], ldc = params[t + 8];
      const m = params[t + 9], n = params[t + 10], k = params[t + 11], flags = params[t + 12];
      if (!A || !B || !C) throw new RangeError(`gemm: task ${t / GEMM_PARAMS} names a missing buffer`);
      const ta = (flags & GEMM_TRANS_A) !== 0, tb = (flags & GEMM_TRANS_B) !== 0;
      const acc = (flags & GEMM_ACCUMULATE) !== 0;
      // Row of C at a time: accumulate in a float64 row for accuracy (this is the oracle).
      const row = new Float64Array(n);
      for (let i = 0; i < m; i++) {
        row.fill(0);
        for (let l = 0; l < k; l++) {
          const av = ta ? A[aOff + l * lda + i] : A[aOff + i * lda + l];
          if (av === 0) continue;
          if (tb) {
            for (let j = 0; j < n; j++) row[j] += av * B[bOff + j * ldb + l];
          } else {
            const base = bOff + l * ldb;
            for (let j = 0; j < n; j++) row[j] += av * B[base + j];
          }
        }
        const cBase = cOff + i * ldc;
        if (acc) for (let j = 0; j < n; j++) C[cBase + j] += row[j];
        else for (let j = 0; j < n; j++) C[cBase + j] = row[j];
      }
    }
  }

  unary(op: UnaryOp, x: Float32Array, out: Float32Array): void {
    for (let i = 0; i < x.length; i++) out[i] = unaryScalar(op, x[i]);
  }

  unaryGrad(op: UnaryOp, x: Float32Array, y: Float32Array, dy: Float32Array, dx: Float32Array): void {
    for (let i = 0; i < x.length; i++) dx[i] = dy[i] * unaryDerivative(op, x[i], y[i]);
  }

  binary(
    op: BinaryOp,
    a: Float32Array,
    aStrides: Int32Array,
    b: Float32Array,
    bStrides: Int32Array,
    out: Float32Array,
    outShape: Int32Array,
  ): void {
    const nd = outShape.length;
    const total = out.length;
    const idx = new Int32Array(nd);
    let ai = 0, bi = 0;
    for (let o = 0; o < total; o++) {
      out[o] = binaryScalar(op, a[ai], b[bi]);
      // Odometer increment over outShape, tracking a and b offsets.
      for (let d = nd - 1; d >= 0; d--) {
        idx[d]++;
        ai += aStrides[d];
        bi += bStrides[d];
        if (idx[d] < outShape[d]) break;
        ai -= aStrides[d] * outShape[d];
        bi -= bStrides[d] * outShape[d];
        idx[d] = 0;
      }
    }
  }

  affine(x: Float32Array, scale: number, shift: number, out: Float32Array): void {
    for (let i = 0; i < x.length; i++) out[i] = x[i] * scale + shift;
  }

  reduce(op: ReduceOp, x: Float32Array, outer: number, len: number, inner: number, out: Float32Array): void {
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const base = o * len * inner + i;
        let acc = op === 'sum' ? 0 : op === 'max' ? -Infinity : Infinity;
        for (let l = 0; l < len; l++) {
          const v = x[base + l * inner];
          if (op === 'sum') acc += v;
          else if (op === 'max') acc = v > acc || Number.isNaN(v) ? v : acc;
          else acc = v < acc || Number.isNaN(v) ? v : acc;
        }
        out[o * inner + i] = acc;
      }
    }
  }

  softmax(x: Float32Array, rows: number, cols: number, log: boolean, out: Float32Array): void {
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      let mx = -Infinity;
      for (let c = 0; c < cols; c++) mx = Math.max(mx, x[base + c]);
      if (mx === -Infinity) mx = 0; // a row of -inf: keep NaN-free arithmetic, result is NaN/uniform per torch
      let s = 0;
      for (let c = 0; c < cols; c++) s += Math.exp(x[base + c] - mx);
      if (log) {
        const lse = Math.log(s);
        for (let c = 0; c < cols; c++) out[base + c] = x[base + c] - mx - lse;
      } else {
        for (let c = 0; c < cols; c++) out[base + c] = Math.exp(x[base + c] - mx) / s;
      }
    }
  }

  softmaxGrad(y: Float32Array, dy: Float32Array, rows: number, cols: number, log: boolean, dx: Float32Array): void {
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      let s = 0;
      if (log) {
        for (let c = 0; c < cols; c++) s += dy[base + c];
        for (let c = 0; c < cols; c++) dx[base + c] = dy[base + c] - Math.exp(y[base + c]) * s;
      } else {
        for (let c = 0; c < cols; c++) s += dy[base + c] * y[base + c];
        for (let c = 0; c < cols; c++) dx[base + c] = y[base + c] * (dy[base + c] - s);
      }
    }
  }

  logsumexp(x: Float32Array, rows: number, cols: number, out: Float32Array): void {
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      let mx = -Infinity;
      for (let c = 0; c < cols; c++) mx = Math.max(mx, x[base + c]);
      if (mx === -Infinity || mx === Infinity) {
        out[r] = mx;
        continue;
      }
      let s = 0;
      for (let c = 0; c < cols; c++) s += Math.exp(x[base + c] - mx);
      out[r] = mx + Math.log(s);
    }
  }

  rmsNorm(x: Float32Array, w: Float32Array | null, rows: number, cols: number, eps: number, out: Float32Array, rstd: Float32Array): void {
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      let ss = 0;
      for (let c = 0; c < cols; c++) ss += x[base + c] * x[base + c];
      const rs = 1 / Math.sqrt(ss / cols + eps);
      rstd[r] = rs;
      for (let c = 0; c < cols; c++) out[base + c] = x[base + c] * rs * (w ? w[c] : 1);
    }
  }

  rmsNormGrad(
    x: Float32Array,
    w: Float32Array | null,
    rstd: Float32Array,
    dy: Float32Array,
    rows: number,
    cols: number,
    dx: Float32Array,
    dw: Float32Array | null,
  ): void {
    // y = x·r·w, r = (mean x² + eps)^(-1/2): dx = r·(g - x·r²·mean(g⊙x)), g = dy⊙w.
    const dwAcc = dw && w ? new Float64Array(cols) : null;
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      const rs = rstd[r];
      let dot = 0;
      for (let c = 0; c < cols; c++) dot += dy[base + c] * (w ? w[c] : 1) * x[base + c];
      const coef = (rs * rs * dot) / cols;
      for (let c = 0; c < cols; c++) {
        const g = dy[base + c] * (w ? w[c] : 1);
        dx[base + c] = rs * (g - x[base + c] * coef);
      }
      if (dwAcc) for (let c = 0; c < cols; c++) dwAcc[c] += dy[base + c] * x[base + c] * rs;
    }
    if (dw && dwAcc) for (let c = 0; c < cols; c++) dw[c] += dwAcc[c];
  }

  layerNorm(
    x: Float32Array,
    w: Float32Array | null,
    b: Float32Array | null,
    rows: number,
    cols: number,
    eps: number,
    out: Float32Array,
    mean: Float32Array,
    rstd: Float32Array,
  ): void {
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      let s = 0;
      for (let c = 0; c < cols; c++) s += x[base + c];
      const mu = s / cols;
      let v = 0;
      for (let c = 0; c < cols; c++) v += (x[base + c] - mu) ** 2;
      const rs = 1 / Math.sqrt(v / cols + eps);
      mean[r] = mu;
      rstd[r] = rs;
      for (let c = 0; c < cols; c++) out[base + c] = (x[base + c] - mu) * rs * (w ? w[c] : 1) + (b ? b[c] : 0);
    }
  }

  layerNormGrad(
    x: Float32Array,
    w: Float32Array | null,
    mean: Float32Array,
    rstd: Float32Array,
    dy: Float32Array,
    rows: number,
    cols: number,
    dx: Float32Array,
    dw: Float32Array | null,
    db: Float32Array | null,
  ): void {
    // xhat = (x-μ)·r; dx = r·(g - mean(g) - xhat·mean(g⊙xhat)), g = dy⊙w.
    const dwAcc = dw && w ? new Float64Array(cols) : null;
    const dbAcc = db ? new Float64Array(cols) : null;
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      // Recompute the row mean in double: the saved fp32 mean is off by ~1 ulp of |mean|, which
      // matters when |mean| ≫ std (xhat then loses digits). rstd is insensitive to that.
      let mu = 0;
      for (let c = 0; c < cols; c++) mu += x[base + c];
      mu /= cols;
      void mean;
      const rs = rstd[r];
      let sg = 0, sgx = 0;
      for (let c = 0; c < cols; c++) {
        const g = dy[base + c] * (w ? w[c] : 1);
        const xh = (x[base + c] - mu) * rs;
        sg += g;
        sgx += g * xh;
      }
      sg /= cols;
      sgx /= cols;
      for (let c = 0; c < cols; c++) {
        const g = dy[base + c] * (w ? w[c] : 1);
        const xh = (x[base + c] - mu) * rs;
        dx[base + c] = rs * (g - sg - xh * sgx);
        if (dwAcc) dwAcc[c] += dy[base + c] * xh;
        if (dbAcc) dbAcc[c] += dy[base + c];
      }
    }
    if (dw && dwAcc) for (let c = 0; c < cols; c++) dw[c] += dwAcc[c];
    if (db && dbAcc) for (let c = 0; c < cols; c++) db[c] += dbAcc[c];
  }

  permute(x: Float32Array, shape: Int32Array, perm: Int32Array, out: Float32Array): void {
    const nd = shape.length;
    const inStrides = new Int32Array(nd);
    let s = 1;
    for (let d = nd - 1; d >= 0; d--) {
      inStrides[d] = s;
      s *= shape[d];
    }
    const outShape = new Int32Array(nd);
    const strides = new Int32Array(nd);
    for (let d = 0; d < nd; d++) {
      outShape[d] = shape[perm[d]];
      strides[d] = inStrides[perm[d]];
    }
    const idx = new Int32Array(nd);
    let xi = 0;
    for (let o = 0; o < out.length; o++) {
      out[o] = x[xi];
      for (let d = nd - 1; d >= 0; d--) {
        idx[d]++;
        xi += strides[d];
        if (idx[d] < outShape[d]) break;
        xi -= strides[d] * outShape[d];
        idx[d] = 0;
      }
    }
  }

  gatherRows(src: Float32Array, idx: Int32Array, cols: number, out: Float32Array): void {
    for (let i = 0; i < idx.length; i++) {
      const s = idx[i] * cols;
      out.set(src.subarray(s, s + cols), i * cols);
    }
  }

  scatterAddRows(src: Float32Array, idx: Int32Array, w: Float32Array | null, cols: number, out: Float32Array): void {
    for (let i = 0; i < idx.length; i++) {
      const o = idx[i] * cols, s = i * cols;
      const wi = w ? w[i] : 1;
      for (let c = 0; c < cols; c++) out[o + c] += wi * src[s + c];
    }
  }

  rowDot(a: Float32Array, b: Float32Array, rows: number, cols: number, out: Float32Array): void {
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let c = 0; c < cols; c++) s += a[r * cols + c] * b[r * cols + c];
      out[r] = s;
    }
  }

  /** Composed from this backend's gatherRows and rowDot (so a subclass's kernels serve it), then the scale. */
  gatherRowsScaled(
    g: Float32Array, idx: Int32Array, cols: number, w: Float32Array, out: Float32Array,
    dotWith: Float32Array | null, dot: Float32Array | null,
  ): void {
    const n = idx.length;
    if ((dotWith === null) !== (dot === null)) throw new TypeError('dotWith and dot must both be Float32Arrays or both null');
    need('w', w.length, n);
    need('out', out.length, n * cols);
    if (dotWith && dot) {
      need('dotWith', dotWith.length, n * cols);
      need('dot', dot.length, n);
    }
    this.gatherRows(g, idx, cols, out);
    if (dotWith && dot) this.rowDot(out, dotWith, n, cols, dot);
    for (let i = 0; i < n; i++) {
      const wi = w[i];
      for (let c = i * cols, e = c + cols; c < e; c++) out[c] *= wi; // f32·f32 is exact in f64: one rounding
    }
  }

  topKRows(x: Float32Array, rows: number, cols: number, k: number, values: Float32Array, indices: Int32Array): void {
    if (!Number.isInteger(k) || k < 0 || k > cols) throw new RangeError(`k=${k} must be an integer in [0, ${cols}]`);
    need('x', x.length, rows * cols);
    need('values', values.length, rows * k);
    need('indices', indices.length, rows * k);
    const order = new Int32Array(k);
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      // Insertion into the sorted k best so far: O(cols·k), for the small k of routers. `worst`
      // is the k-th value so far: most entries lose to it in one comparison.
      let filled = 0;
      let worst = 0;
      for (let c = 0; c < cols; c++) {
        const v = x[base + c];
        let j: number;
        if (filled < k) j = filled++;
        else if (k > 0 && beats(v, worst)) j = k - 1;
        else continue;
        while (j > 0 && beats(v, x[base + order[j - 1]])) {
          order[j] = order[j - 1];
          j--;
        }
        order[j] = c;
        if (filled === k) worst = x[base + order[k - 1]];
      }
      for (let j = 0; j < k; j++) {
        indices[r * k + j] = order[j];
        values[r * k + j] = x[base + order[j]];
      }
    }
  }

  loraMixture(
    x: Float32Array, router: Float32Array | null, A: Float32Array, B: Float32Array, scales: Float32Array,
    dims: Int32Array, experts: Int32Array, gates: Float32Array, logits: Float32Array | null, y: Float32Array,
  ): void {
    loraMixtureReference(x, router, A, B, scales, dims, experts, gates, logits, y);
  }

  rotary(
    x: Float32Array, out: Float32Array, cos: Float32Array, sin: Float32Array,
    rows: number, seqLen: number, heads: number, dim: number, startPos: number, inverse: boolean,
  ): void {
    const half = dim / 2;
    const sgn = inverse ? -1 : 1;
    for (let r = 0; r < rows; r++) {
      const pos = startPos + (Math.floor(r / heads) % seqLen);
      const o = r * dim, c = pos * half;
      for (let i = 0; i < half; i++) {
        const x1 = x[o + i], x2 = x[o + half + i];
        const cs = cos[c + i], sn = sgn * sin[c + i];
        out[o + i] = x1 * cs - x2 * sn;
        out[o + half + i] = x2 * cs + x1 * sn;
      }
    }
  }

  sumSquares(x: Float32Array): number {
    let acc = 0;
    for (let i = 0; i < x.length; i++) acc += x[i] * x[i];
    return acc;
  }

  adamw(
    p: Float32Array,
    grad: Float32Array,
    m: Float32Array,
    v: Float32Array,
    vmax: Float32Array | null,
    h: { beta1: number; beta2: number; stepSize: number; bc2Sqrt: number; eps: number; decay: number; sign: number },
  ): void {
    const { beta1, beta2, stepSize, bc2Sqrt, eps, decay, sign } = h;
    for (let i = 0; i < p.length; i++) {
      const g = sign * grad[i];
      // Decoupled decay first, from the pre-update parameter (torch order).
      if (decay !== 1) p[i] *= decay;
      m[i] = beta1 * m[i] + (1 - beta1) * g;
      v[i] = beta2 * v[i] + (1 - beta2) * g * g;
      let second = v[i];
      if (vmax) {
        if (!(second <= vmax[i])) vmax[i] = second; // NaN propagates, as torch.maximum
        second = vmax[i];
      }
      p[i] -= (stepSize * m[i]) / (Math.sqrt(second) / bc2Sqrt + eps);
    }
  }

  gatedAct(act: Activation, a: Float32Array, b: Float32Array, out: Float32Array): void {
    for (let i = 0; i < a.length; i++) out[i] = unaryScalar(act, a[i]) * b[i];
  }

  gatedActGrad(act: Activation, a: Float32Array, b: Float32Array, dy: Float32Array, da: Float32Array, db: Float32Array): void {
    for (let i = 0; i < a.length; i++) {
      const f = unaryScalar(act, a[i]);
      da[i] = dy[i] * b[i] * unaryDerivative(act, a[i], f);
      db[i] = dy[i] * f;
    }
  }

  gemmGated(mode: GatedGemmMode, act: Activation, buffers: readonly Float32Array[], params: Int32Array): void {
    gemmGatedComposed(this, mode, act, buffers, params);
  }
}

/** The loraMixture kernel in plain TypeScript (float64 sums; see Backend.loraMixture). */
function loraMixtureReference(
  x: Float32Array, router: Float32Array | null, A: Float32Array, B: Float32Array, scales: Float32Array,
  dims: Int32Array, experts: Int32Array, gates: Float32Array, logits: Float32Array | null, y: Float32Array,
): void {
  const [rows, d, out, n, k, mode] = dims;
  if (!(n >= 1) || dims.length < 6 + n) throw new RangeError('loraMixture: dims must be [rows, d, out, n, k, mode, ranks[n]] with n >= 1');
  if (!(mode >= 0 && mode <= 3)) throw new RangeError(`loraMixture: dims: mode ${mode} is not 0-3`);
  if (!(k >= 1 && k <= n) || ((mode === LORA_MIX_DENSE || mode === LORA_MIX_ALL) && k !== n)) throw new RangeError(`loraMixture: dims: k=${k} must be in [1, n=${n}] (and equal n for modes 2, 3)`);
  if (mode !== LORA_MIX_ALL && !router) throw new TypeError('loraMixture: router must be a Float32Array unless mode is 3');
  const offs = new Int32Array(n + 1);
  for (let e = 0; e < n; e++) offs[e + 1] = offs[e] + dims[6 + e];
  const l = new Float32Array(n), h = new Float64Array(Math.max(1, ...Array.from(dims.subarray(6, 6 + n))));
  for (let t = 0; t < rows; t++) {
    const xo = t * d, o = t * k;
    if (mode === LORA_MIX_ALL) {
      for (let e = 0; e < n; e++) {
        experts[o + e] = e;
        gates[o + e] = 1;
      }
    } else {
      const R = router as Float32Array;
      let m = -Infinity;
      for (let e = 0; e < n; e++) {
        let s = 0;
        for (let c = 0; c < d; c++) s += R[e * d + c] * x[xo + c];
        l[e] = s;
        if (l[e] > m) m = l[e];
      }
      if (logits) logits.set(l, t * n);
      if (mode === LORA_MIX_DENSE) {
        let z = 0;
        for (let e = 0; e < n; e++) z += Math.exp(l[e] - m);
        for (let e = 0; e < n; e++) {
          experts[o + e] = e;
          gates[o + e] = Math.exp(l[e] - m) / z;
        }
      } else {
        // The k largest by selection: the first maximum among those not yet picked (ties to the lower index).
        for (let j = 0; j < k; j++) {
          let best = -1;
          for (let e = 0; e < n; e++) {
            let taken = false;
            for (let i = 0; i < j; i++) if (experts[o + i] === e) taken = true;
            if (!taken && (best < 0 || l[e] > l[best])) best = e;
          }
          experts[o + j] = best;
        }
        let s = 0, z = 0;
        for (let j = 0; j < k; j++) s += Math.exp(l[experts[o + j]] - m);
        for (let e = 0; e < n; e++) z += Math.exp(l[e] - m);
        for (let j = 0; j < k; j++) gates[o + j] = mode === LORA_MIX_TOPK ? (k === 1 ? 1 : Math.exp(l[experts[o + j]] - m) / s) : Math.exp(l[experts[o + j]] - m) / z;
      }
    }
    for (let j = 0; j < k; j++) {
      const e = experts[o + j], r = dims[6 + e];
      const w = gates[o + j] * scales[e];
      for (let i = 0; i < r; i++) {
        let s = 0;
        for (let c = 0, a = (offs[e] + i) * d; c < d; c++) s += A[a + c] * x[xo + c];
        h[i] = s * w;
      }
      for (let q = 0; q < out; q++) {
        let s = 0;
        for (let i = 0, b = offs[e] * out + q * r; i < r; i++) s += B[b + i] * h[i];
        y[t * out + q] += s;
      }
    }
  }
}
