/**
 * The kernel interface every Switchyard backend implements.
 *
 * Kernels work on contiguous row-major fp32 (and int32 index) buffers that the caller
 * allocates; a kernel never allocates its outputs. That keeps the interface small and lets
 * a backend (reference TypeScript, native C, later wasm/WebGPU) override only the kernels
 * it accelerates: `NativeBackend` extends `ReferenceBackend`.
 *
 * Determinism contract: for a fixed thread count, every kernel gives bit-identical results
 * across runs. Kernels that reduce (gemm, scatterAddRows, norms' weight gradients) partition
 * work so that each output element is owned by exactly one thread and summed in a fixed order.
 */

/** Element-wise unary functions. `gelu` is the erf form, `gelu_tanh` the tanh approximation. */
export type UnaryOp =
  | 'neg'
  | 'abs'
  | 'exp'
  | 'log'
  | 'sqrt'
  | 'rsqrt'
  | 'tanh'
  | 'sigmoid'
  | 'softplus'
  | 'relu'
  | 'gelu'
  | 'gelu_tanh'
  | 'silu'
  | 'square'
  | 'sign';

/** Element-wise binary functions (with broadcasting through strides). */
export type BinaryOp = 'add' | 'sub' | 'mul' | 'div' | 'max' | 'min' | 'pow';

/** Activations that the fused gated kernel supports: out = act(a) * b. */
export type Activation = 'relu' | 'gelu' | 'gelu_tanh' | 'silu';

/** Reductions over the middle axis of an [outer, axis, inner] view. */
export type ReduceOp = 'sum' | 'max' | 'min';

/** Number of int32 entries describing one task in `gemm`'s `params` array. */
export const GEMM_PARAMS = 13;
/** Flags bit: A is stored transposed ([k, m] with leading dimension lda). */
export const GEMM_TRANS_A = 1;
/** Flags bit: B is stored transposed ([n, k] with leading dimension ldb). */
export const GEMM_TRANS_B = 2;
/** Flags bit: C += op(A)·op(B) instead of C = op(A)·op(B). */
export const GEMM_ACCUMULATE = 4;
/**
 * Flags bit: run this task after the previous task of the list has finished (on the same thread,
 * where that matters), so it may read or accumulate into what that task wrote: dX = dH1·W1 + dH3·W3
 * as one task pair instead of two calls.
 */
export const GEMM_CHAIN = 8;
/**
 * Flags bit, a hint: C is written once and not read again soon (an expert's weight gradient, read
 * next by the optimizer after the whole backward), so a backend may write it with stores that
 * bypass the cache instead of first reading every line of C in. Results are the same either way.
 */
export const GEMM_STREAM = 16;

/** Number of int32 entries describing one task in `gemmGated`'s `params` array. */
export const GEMM_GATED_PARAMS = 21;
/**
 * gemmGated modes: 'up' is a gated expert's up-projection with its activation, 'down-grad' the
 * backward of its down-projection through the activation (see Backend.gemmGated).
 */
export type GatedGemmMode = 'up' | 'down-grad';

/** loraMixture modes: top-k, gates renormalised over the k picked (MoLoRA). */
export const LORA_MIX_TOPK = 0;
/** loraMixture modes: top-k, gates the full softmax's probabilities. */
export const LORA_MIX_TOPK_SOFTMAX = 1;
/** loraMixture modes: every adapter, softmax gates (X-LoRA-like, one pass). */
export const LORA_MIX_DENSE = 2;
/** loraMixture modes: every adapter with gate 1, no router (a plain single adapter). */
export const LORA_MIX_ALL = 3;

/** The kernels a backend provides. All buffers are caller-allocated. */
export interface Backend {
  /** 'reference', 'native', ... */
  readonly name: string;
  /** Worker threads used by parallel kernels (1 for the reference backend). */
  readonly threads: number;

  /**
   * Batched/grouped GEMM over a task list: for task t, with params p = params[t*13 .. t*13+12] =
   * [aBuf, aOff, lda, bBuf, bOff, ldb, cBuf, cOff, ldc, m, n, k, flags]:
   *   C[i, j] (+)= Σ_l opA[i, l] · opB[l, j]  for i < m, j < n, l < k
   * where opA[i, l] = A[aOff + i*lda + l] (or A[aOff + l*lda + i] with GEMM_TRANS_A),
   *       opB[l, j] = B[bOff + l*ldb + j] (or B[bOff + j*ldb + l] with GEMM_TRANS_B),
   *       C[i, j] is at C[cOff + i*ldc + j]; A = buffers[aBuf], B = buffers[bBuf], C = buffers[cBuf].
   * Without GEMM_ACCUMULATE, C is overwritten (k = 0 writes zeros). m or n may be 0 (empty row
   * blocks: the MoE case of an expert that got no tokens). Tasks must not write overlapping C
   * regions, except that a chain (a task and the GEMM_CHAIN-flagged tasks right after it) runs in
   * list order and its tasks may share C. This one kernel serves plain matmul, batched matmul, the MoE grouped GEMM (one task
   * per expert, each on its own contiguous token block) and all their backward products.
   */
  gemm(buffers: readonly Float32Array[], params: Int32Array): void;

  /** out[i] = op(x[i]) for i < n. out may alias x. */
  unary(op: UnaryOp, x: Float32Array, out: Float32Array): void;
  /**
   * dx[i] = dy[i] · op'(x[i]) (accumulate=false overwrites dx, true adds). y = op(x) is passed
   * because some derivatives are cheapest from it (exp, sigmoid, tanh, sqrt).
   */
  unaryGrad(op: UnaryOp, x: Float32Array, y: Float32Array, dy: Float32Array, dx: Float32Array): void;

  /**
   * out[idx] = a[idx·aStrides] op b[idx·bStrides] over the N-d index space outShape (strides are
   * element strides, 0 on broadcast dimensions). outShape.length === aStrides.length === bStrides.length.
   */
  binary(
    op: BinaryOp,
    a: Float32Array,
    aStrides: Int32Array,
    b: Float32Array,
    bStrides: Int32Array,
    out: Float32Array,
    outShape: Int32Array,
  ): void;

  /** out[i] = x[i] · scale + shift (the scalar-op workhorse). out may alias x. */
  affine(x: Float32Array, scale: number, shift: number, out: Float32Array): void;

  /** Reduce the middle axis of x viewed as [outer, len, inner] into out [outer, inner]. */
  reduce(op: ReduceOp, x: Float32Array, outer: number, len: number, inner: number, out: Float32Array): void;

  /** Row-wise stable softmax (or log-softmax) of x [rows, cols] into out. */
  softmax(x: Float32Array, rows: number, cols: number, log: boolean, out: Float32Array): void;
  /**
   * Backward of row-wise softmax given y = softmax(x) (or log-softmax): softmax:
   * dx = y ⊙ (dy - Σ dy⊙y); log-softmax: dx = dy - exp(y) · Σ dy.
   */
  softmaxGrad(y: Float32Array, dy: Float32Array, rows: number, cols: number, log: boolean, dx: Float32Array): void;
  /** out[r] = log Σ_c exp(x[r, c]) (stable). */
  logsumexp(x: Float32Array, rows: number, cols: number, out: Float32Array): void;

  /**
   * RMSNorm (Zhang & Sennrich 2019): y = x / sqrt(mean(x²) + eps) ⊙ w (w may be null: no scale).
   * Writes rstd[r] = 1/sqrt(mean(x_r²)+eps) for the backward.
   */
  rmsNorm(x: Float32Array, w: Float32Array | null, rows: number, cols: number, eps: number, out: Float32Array, rstd: Float32Array): void;
  /** Backward of rmsNorm: writes dx, and adds into dw (if both w and dw are non-null). */
  rmsNormGrad(
    x: Float32Array,
    w: Float32Array | null,
    rstd: Float32Array,
    dy: Float32Array,
    rows: number,
    cols: number,
    dx: Float32Array,
    dw: Float32Array | null,
  ): void;
  /**
   * LayerNorm (Ba et al. 2016): y = (x - mean) / sqrt(var + eps) ⊙ w + b (w, b may be null).
   * Writes mean[r] and rstd[r] for the backward.
   */
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
  ): void;
  /** Backward of layerNorm: writes dx, adds into dw and db when non-null. */
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
  ): void;

  /** out = x permuted: out shape[i] = shape[perm[i]] (general N-d transpose). */
  permute(x: Float32Array, shape: Int32Array, perm: Int32Array, out: Float32Array): void;

  /** out[i, :] = src[idx[i], :] for i < idx.length (rows of `cols` floats). */
  gatherRows(src: Float32Array, idx: Int32Array, cols: number, out: Float32Array): void;
  /**
   * out[idx[i], :] += w[i] · src[i, :] for i < idx.length (w null means 1). Deterministic:
   * rows are added in increasing i for every output element.
   */
  scatterAddRows(src: Float32Array, idx: Int32Array, w: Float32Array | null, cols: number, out: Float32Array): void;
  /** out[i] = Σ_c a[i, c] · b[i, c]: row-wise dot products (the combine-weight gradient). */
  rowDot(a: Float32Array, b: Float32Array, rows: number, cols: number, out: Float32Array): void;
  /**
   * The backward of a weighted combine y[idx[i]] += w[i] · src_i in one pass over the upstream
   * gradient g: out[i, :] = w[i] · g[idx[i], :] (the gradient of src_i) and, when dotWith and dot
   * are given, dot[i] = Σ_c g[idx[i], c] · dotWith[i, c] (the gradient of w[i]). Each value is
   * exactly what gatherRows, then rowDot, then a broadcast multiply would give.
   */
  gatherRowsScaled(
    g: Float32Array, idx: Int32Array, cols: number, w: Float32Array, out: Float32Array,
    dotWith: Float32Array | null, dot: Float32Array | null,
  ): void;

  /**
   * Per row r of x [rows, cols]: its k largest entries in descending order into values[r·k ..],
   * their columns into indices[r·k ..] (0 ≤ k ≤ cols). Ties go to the lower column and NaN ranks
   * above every number, the order of torch.topk: a top-k router's choice (Shazeer et al. 2017).
   */
  topKRows(x: Float32Array, rows: number, cols: number, k: number, values: Float32Array, indices: Int32Array): void;

  /**
   * A mixture of LoRA experts at one Linear for a few rows (decoding), router fused in. dims =
   * [rows, d, out, n, k, mode, r_0 .. r_{n-1}]. Per row x_t of x [rows, d]: logits l = R x_t
   * (R = router [n, d], written to logits [rows, n] when non-null); picks experts[t, 0..k) and
   * gates[t, 0..k) by mode (LORA_MIX_*: top-k of l with ties to the lower index, gates the softmax
   * renormalised over the k picked (1 when k = 1) or not; dense: all n, softmax; all: all n, gate
   * 1, no router); then y[t] += Σ_j gates[t, j] · scales[e] · B_e (A_e x_t) with e = experts[t, j],
   * where A packs every A_e [r_e, d] in adapter order and B every B_e [out, r_e].
   */
  loraMixture(
    x: Float32Array, router: Float32Array | null, A: Float32Array, B: Float32Array, scales: Float32Array,
    dims: Int32Array, experts: Int32Array, gates: Float32Array, logits: Float32Array | null, y: Float32Array,
  ): void;

  /**
   * Rotary position embedding (Su et al. 2021), "rotate half" layout: row r (of `dim` floats) is at
   * position p = startPos + ⌊r / heads⌋ mod seqLen; with c = cos[p, i], s = ±sin[p, i] (minus when
   * inverse, the backward), out[i] = x[i]·c − x[i+dim/2]·s and out[i+dim/2] = x[i+dim/2]·c + x[i]·s,
   * computed in float64 and rounded once. cos/sin are [positions, dim/2] tables. out may alias x.
   */
  rotary(
    x: Float32Array, out: Float32Array, cos: Float32Array, sin: Float32Array,
    rows: number, seqLen: number, heads: number, dim: number, startPos: number, inverse: boolean,
  ): void;

  /** Σ x[i]² accumulated in float64 (gradient-norm clipping). */
  sumSquares(x: Float32Array): number;

  /**
   * One fused AdamW update (Loshchilov & Hutter 2019, torch.optim.AdamW order), per element with
   * g = sign·grad[i]: p ← p·decay; m ← β₁m + (1-β₁)g; v ← β₂v + (1-β₂)g²; (AMSGrad: vmax ← max(vmax, v));
   * p ← p − stepSize·m / (√(vmax or v)/bc2Sqrt + eps). Scalars come precomputed in float64:
   * stepSize = lr/(1-β₁ᵗ), bc2Sqrt = √(1-β₂ᵗ), decay = 1 - lr·weightDecay.
   */
  adamw(
    p: Float32Array,
    grad: Float32Array,
    m: Float32Array,
    v: Float32Array,
    vmax: Float32Array | null,
    h: { beta1: number; beta2: number; stepSize: number; bc2Sqrt: number; eps: number; decay: number; sign: number },
  ): void;

  /** Fused gated activation (GLU family, Shazeer 2020): out = act(a) ⊙ b. */
  gatedAct(act: Activation, a: Float32Array, b: Float32Array, out: Float32Array): void;
  /** Backward of gatedAct: da = dy ⊙ b ⊙ act'(a), db = dy ⊙ act(a) (both overwritten; da may alias a, db may alias b). */
  gatedActGrad(act: Activation, a: Float32Array, b: Float32Array, dy: Float32Array, da: Float32Array, db: Float32Array): void;

  /**
   * Grouped GEMM with a gated epilogue, the GLU expert FFN's fused steps (Shazeer 2020). Task t is
   * p = params[t*21 .. t*21+20] = [aBuf, aOff, lda, b1Buf, b1Off, b3Buf, b3Off, ldb, c1Buf, c1Off,
   * c3Buf, c3Off, o1Buf, o1Off, o3Buf, o3Off, ld, m, n, k, transB]; A is [m, k] row-major, B1/B3
   * are op(B) = [k, n] (stored [n, k] when transB), and C1, C3, O1, O3 are [m, n] with leading
   * dimension ld:
   *   'up':        C1 = A·op(B1), C3 = A·op(B3) (both written), O1 = act(C1) ⊙ C3
   *   'down-grad': G = A·op(B1) (not stored), O1 = G ⊙ C3 ⊙ act'(C1), O3 = G ⊙ act(C1)
   * i.e. gemm followed by gatedAct / gatedActGrad on each task's rows, with the same results; a
   * backend may fuse them so the product never leaves cache. Unused buffers (b3 for
   * 'down-grad', o3 for 'up') may be -1. In 'up', c1Buf and c3Buf may both be -1: the products
   * are then not kept (inference, where no backward reads them) and only O1 is written. In
   * 'down-grad', O1 and O3 may be C1 and C3 themselves (same buffer and offset): the gradients then
   * overwrite the saved H1, H3 in place. Tasks must not write overlapping regions.
   */
  gemmGated(mode: GatedGemmMode, act: Activation, buffers: readonly Float32Array[], params: Int32Array): void;
}
