/**
 * Scaled dot-product attention (Vaswani et al. 2017) as one fused op: both products run on the
 * backend GEMM over B·H tasks, the row softmax on the backend kernel, and the backward is
 * written out by hand so only the attention probabilities are saved.
 */
import { RangeValueError, ShapeError } from '../errors.js';
import { record } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';
import { GEMM_ACCUMULATE, GEMM_PARAMS, GEMM_TRANS_A, GEMM_TRANS_B } from '../backend/interface.js';
import { acquireScratch, releaseScratch } from '../backend/scratch.js';
import { be, requireFloat } from './util.js';

export interface AttentionOptions {
  /**
   * Causal mask aligned to the bottom-right: query i attends to keys j ≤ i + (Tk - Tq), so with
   * a KV cache the last query sees every key. This is PyTorch's `causal_lower_right` bias; it
   * equals `is_causal=True` when Tq = Tk. Query rows that see no key at all (only possible when
   * Tq > Tk) output zeros and pass no gradient, rather than softmax-of-nothing NaN.
   */
  causal?: boolean;
  /** Multiplier of q·kᵀ. Default 1/√D. */
  scale?: number;
  /**
   * Memory layout of q, k, v and the output: 'bhtd' = [B, H, T, D] (default, PyTorch's SDPA) or
   * 'bthd' = [B, T, H, D], the layout a linear projection produces, so a transformer needs no
   * transposes: the GEMMs read each head with a row stride of H·D.
   */
  layout?: 'bhtd' | 'bthd';
}

function offsets(count: number, stride: number): number[] {
  return Array.from({ length: count }, (_, t) => t * stride);
}

/** Element offset of head (b, h) and the row stride of its [T, D] matrix, for either layout. */
function headView(layout: 'bhtd' | 'bthd', B: number, H: number, T: number, D: number): { offs: number[]; ld: number } {
  const offs = new Array<number>(B * H);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) offs[b * H + h] = layout === 'bhtd' ? (b * H + h) * T * D : (b * T * H + h) * D;
  }
  return { offs, ld: layout === 'bhtd' ? D : H * D };
}

/** One GEMM task per (batch, head): C_i = op(A_i)·op(B_i) with explicit leading dimensions. */
function headGemm(
  a: Float32Array, aOffs: readonly number[], lda: number, ta: boolean,
  b: Float32Array, bOffs: readonly number[], ldb: number, tb: boolean,
  c: Float32Array, cOffs: readonly number[], ldc: number,
  m: number, n: number, k: number,
): void {
  headGemmAcc(a, aOffs, lda, ta, b, bOffs, ldb, tb, c, cOffs, ldc, m, n, k, false);
}

/**
 * softmax(q·kᵀ·scale + mask)·v for q [B, H, Tq, D], k [B, Hkv, Tk, D], v [B, Hkv, Tk, Dv]
 * → [B, H, Tq, Dv] (or all four in [B, T, H, ·] with layout 'bthd'); mask is 0 or -∞ (see
 * AttentionOptions.causal). Grouped-query attention (Ainslie et al. 2023) when Hkv < H: query
 * head h reads key/value head ⌊h·Hkv/H⌋, with no copies.
 * Backward (P the probabilities, dO the output gradient): dV = Pᵀ·dO, dP = dO·vᵀ,
 * dS = P ⊙ (dP - rowsum(dP ⊙ P))·scale, dQ = dS·k, dK = dSᵀ·q (summed over a group's query heads).
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts?: AttentionOptions): Tensor {
  const qd = requireFloat(q, 'attention.q'), kd = requireFloat(k, 'attention.k'), vd = requireFloat(v, 'attention.v');
  const layout = opts?.layout ?? 'bhtd';
  if (layout !== 'bhtd' && layout !== 'bthd') throw new RangeValueError('attention.layout', layout, "must be 'bhtd' or 'bthd'");
  const names = layout === 'bhtd' ? '[B, H, T, D]' : '[B, T, H, D]';
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) {
    if (t.rank !== 4) throw new ShapeError(`attention.${name}.shape`, t.shape, `must be ${names}`);
  }
  const dims = (t: Tensor): { B: number; H: number; T: number; D: number } =>
    layout === 'bhtd' ? { B: t.shape[0], H: t.shape[1], T: t.shape[2], D: t.shape[3] } : { B: t.shape[0], T: t.shape[1], H: t.shape[2], D: t.shape[3] };
  const { B, H, T: Tq, D } = dims(q);
  const kk = dims(k), vv = dims(v);
  const Tk = kk.T, Hkv = kk.H, Dv = vv.D;
  if (kk.B !== B || kk.D !== D || Hkv < 1 || H % Hkv !== 0) {
    throw new ShapeError('attention.k.shape', k.shape, `must match q [${q.shape}] in batch and head size, with a head count dividing ${H}`);
  }
  if (vv.B !== B || vv.H !== Hkv || vv.T !== Tk) {
    throw new ShapeError('attention.v.shape', v.shape, `must match k [${k.shape}] in batch, heads and length`);
  }
  const scale = opts?.scale ?? 1 / Math.sqrt(D);
  if (!Number.isFinite(scale)) throw new RangeValueError('attention.scale', scale, 'must be a finite number');
  const causal = opts?.causal ?? false;

  const BH = B * H;
  const group = H / Hkv;
  const qv = headView(layout, B, H, Tq, D);
  const kvK = headView(layout, B, Hkv, Tk, D), kvV = headView(layout, B, Hkv, Tk, Dv);
  // Per query head, the offsets of its key/value head.
  const kOffs = qv.offs.map((_, i) => kvK.offs[Math.floor(i / H) * Hkv + Math.floor((i % H) / group)]);
  const vOffs = qv.offs.map((_, i) => kvV.offs[Math.floor(i / H) * Hkv + Math.floor((i % H) / group)]);
  const ov = headView(layout, B, H, Tq, Dv);
  const sOffs = offsets(BH, Tq * Tk);

  // S = q·kᵀ, scaled in place (affine may alias) and masked; P = softmax(S) into its own buffer
  // (the softmax kernel does not promise in-place safety). Only P is kept for the backward.
  const S = acquireScratch(BH * Tq * Tk);
  headGemm(qd, qv.offs, qv.ld, false, kd, kOffs, kvK.ld, true, S, sOffs, Tk, Tq, Tk, D);
  be().affine(S, scale, 0, S);
  const shift = Tk - Tq; // bottom-right alignment: query i sees keys j <= i + shift
  if (causal) {
    for (let bh = 0; bh < BH; bh++) {
      for (let i = 0; i < Tq; i++) {
        const row = sOffs[bh] + i * Tk;
        const first = Math.max(0, i + shift + 1);
        if (first < Tk) S.fill(-Infinity, row + first, row + Tk);
      }
    }
  }
  // softmax writes every element of P, so a pooled buffer is safe; it returns to the pool once
  // the backward (or, without a graph, the output product) no longer needs it.
  const P = acquireScratch(S.length);
  be().softmax(S, BH * Tq, Tk, false, P);
  releaseScratch(S);
  if (causal && shift < 0) {
    // Rows with every key masked came out of softmax as 0/0; make them empty instead.
    for (let bh = 0; bh < BH; bh++) {
      for (let i = 0; i < Math.min(Tq, -shift); i++) P.fill(0, sOffs[bh] + i * Tk, sOffs[bh] + (i + 1) * Tk);
    }
  }

  const O = new Float32Array(BH * Tq * Dv);
  headGemm(P, sOffs, Tk, false, vd, vOffs, kvV.ld, false, O, ov.offs, ov.ld, Tq, Dv, Tk);
  const outShape = layout === 'bhtd' ? [B, H, Tq, Dv] : [B, Tq, H, Dv];

  const out = record('scaledDotProductAttention', [q, k, v], new Tensor(O, outShape), (g) => {
    const dO = g.f32;
    let dq: Tensor | null = null, dk: Tensor | null = null, dv: Tensor | null = null;
    // With grouped heads several query heads write the same dK/dV head: run one GEMM call per
    // member of the group, accumulating, so no call has two tasks writing the same region.
    const perGroupMember = (fn: (member: number, tasks: number[]) => void): void => {
      for (let member = 0; member < group; member++) {
        const tasks: number[] = [];
        for (let i = 0; i < BH; i++) if ((i % H) % group === member) tasks.push(i);
        fn(member, tasks);
      }
    };
    const pick = (arr: readonly number[], idx: number[]): number[] => idx.map((i) => arr[i]);
    if (v.requiresGrad) {
      const d = acquireScratch(v.size); // fully written (the first group member overwrites)
      perGroupMember((member, idx) =>
        headGemmAcc(P, pick(sOffs, idx), Tk, true, dO, pick(ov.offs, idx), ov.ld, false, d, pick(vOffs, idx), kvV.ld, Tk, Dv, Tq, member > 0),
      );
      dv = new Tensor(d, v.shape);
    }
    if (q.requiresGrad || k.requiresGrad) {
      const dP = acquireScratch(P.length);
      headGemm(dO, ov.offs, ov.ld, false, vd, vOffs, kvV.ld, true, dP, sOffs, Tk, Tq, Tk, Dv);
      // Masked entries have P = 0, so the softmax backward already gives them zero gradient.
      const dS = acquireScratch(P.length);
      be().softmaxGrad(P, dP, BH * Tq, Tk, false, dS);
      be().affine(dS, scale, 0, dS);
      if (q.requiresGrad) {
        const d = acquireScratch(q.size); // fully written (the first group member overwrites)
        headGemm(dS, sOffs, Tk, false, kd, kOffs, kvK.ld, false, d, qv.offs, qv.ld, Tq, D, Tk);
        dq = new Tensor(d, q.shape);
      }
      if (k.requiresGrad) {
        const d = acquireScratch(k.size); // fully written (the first group member overwrites)
        perGroupMember((member, idx) =>
          headGemmAcc(dS, pick(sOffs, idx), Tk, true, qd, pick(qv.offs, idx), qv.ld, false, d, pick(kOffs, idx), kvK.ld, Tk, D, Tq, member > 0),
        );
        dk = new Tensor(d, k.shape);
      }
      releaseScratch(dP, dS);
    }
    releaseScratch(P);
    return [dq, dk, dv];
  });
  if (!out.gradNode) releaseScratch(P);
  return out;
}

/** headGemm with optional accumulation into C (C_i += op(A_i)·op(B_i)). */
function headGemmAcc(
  a: Float32Array, aOffs: readonly number[], lda: number, ta: boolean,
  b: Float32Array, bOffs: readonly number[], ldb: number, tb: boolean,
  c: Float32Array, cOffs: readonly number[], ldc: number,
  m: number, n: number, k: number, accumulate: boolean,
): void {
  const tasks = cOffs.length;
  const params = new Int32Array(tasks * GEMM_PARAMS);
  const flags = (ta ? GEMM_TRANS_A : 0) | (tb ? GEMM_TRANS_B : 0) | (accumulate ? GEMM_ACCUMULATE : 0);
  for (let t = 0; t < tasks; t++) params.set([0, aOffs[t], lda, 1, bOffs[t], ldb, 2, cOffs[t], ldc, m, n, k, flags], t * GEMM_PARAMS);
  be().gemm([a, b, c], params);
}
