/**
 * Scaled dot-product attention (Vaswani et al. 2017) as one fused op: both products run on the
 * backend GEMM over B·H tasks, the row softmax on the backend kernel, and the backward is
 * written out by hand so only the attention probabilities are saved.
 */
import { RangeValueError, ShapeError } from '../errors.js';
import { record } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';
import { gemmBatched } from './matmul.js';
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
}

function offsets(count: number, stride: number): number[] {
  return Array.from({ length: count }, (_, t) => t * stride);
}

/**
 * softmax(q·kᵀ·scale + mask)·v for q [B, H, Tq, D], k [B, H, Tk, D], v [B, H, Tk, Dv]
 * → [B, H, Tq, Dv]; mask is 0 or -∞ (see AttentionOptions.causal).
 * Backward (P the probabilities, dO the output gradient): dV = Pᵀ·dO, dP = dO·vᵀ,
 * dS = P ⊙ (dP - rowsum(dP ⊙ P))·scale, dQ = dS·k, dK = dSᵀ·q.
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts?: AttentionOptions): Tensor {
  const qd = requireFloat(q, 'attention.q'), kd = requireFloat(k, 'attention.k'), vd = requireFloat(v, 'attention.v');
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) {
    if (t.rank !== 4) throw new ShapeError(`attention.${name}.shape`, t.shape, 'must be [B, H, T, D]');
  }
  const [B, H, Tq, D] = q.shape;
  const Tk = k.shape[2], Dv = v.shape[3];
  if (k.shape[0] !== B || k.shape[1] !== H || k.shape[3] !== D) {
    throw new ShapeError('attention.k.shape', k.shape, `must be [${B}, ${H}, Tk, ${D}] to match q [${q.shape}]`);
  }
  if (v.shape[0] !== B || v.shape[1] !== H || v.shape[2] !== Tk) {
    throw new ShapeError('attention.v.shape', v.shape, `must be [${B}, ${H}, ${Tk}, Dv] to match k [${k.shape}]`);
  }
  const scale = opts?.scale ?? 1 / Math.sqrt(D);
  if (!Number.isFinite(scale)) throw new RangeValueError('attention.scale', scale, 'must be a finite number');
  const causal = opts?.causal ?? false;

  const BH = B * H;
  const qOffs = offsets(BH, Tq * D), kOffs = offsets(BH, Tk * D), vOffs = offsets(BH, Tk * Dv);
  const sOffs = offsets(BH, Tq * Tk), oOffs = offsets(BH, Tq * Dv);

  // S = q·kᵀ, scaled in place (affine may alias) and masked; P = softmax(S) into its own buffer
  // (the softmax kernel does not promise in-place safety). Only P is kept for the backward.
  const S = new Float32Array(BH * Tq * Tk);
  gemmBatched(qd, qOffs, D, false, kd, kOffs, D, true, S, sOffs, Tq, Tk, D, false);
  be().affine(S, scale, 0, S);
  const shift = Tk - Tq; // bottom-right alignment: query i sees keys j <= i + shift
  if (causal) {
    for (let bh = 0; bh < BH; bh++) {
      for (let i = 0; i < Tq; i++) {
        const row = sOffs[bh] + i * Tk;
        for (let j = Math.max(0, i + shift + 1); j < Tk; j++) S[row + j] = -Infinity;
      }
    }
  }
  const P = new Float32Array(S.length);
  be().softmax(S, BH * Tq, Tk, false, P);
  if (causal && shift < 0) {
    // Rows with every key masked came out of softmax as 0/0; make them empty instead.
    for (let bh = 0; bh < BH; bh++) {
      for (let i = 0; i < Math.min(Tq, -shift); i++) P.fill(0, sOffs[bh] + i * Tk, sOffs[bh] + (i + 1) * Tk);
    }
  }

  const O = new Float32Array(BH * Tq * Dv);
  gemmBatched(P, sOffs, Tk, false, vd, vOffs, Dv, false, O, oOffs, Tq, Dv, Tk, false);

  return record('scaledDotProductAttention', [q, k, v], new Tensor(O, [B, H, Tq, Dv]), (g) => {
    const dO = g.f32;
    let dq: Tensor | null = null, dk: Tensor | null = null, dv: Tensor | null = null;
    if (v.requiresGrad) {
      const d = new Float32Array(v.size);
      gemmBatched(P, sOffs, Tk, true, dO, oOffs, Dv, false, d, vOffs, Tk, Dv, Tq, false);
      dv = new Tensor(d, v.shape);
    }
    if (q.requiresGrad || k.requiresGrad) {
      const dP = new Float32Array(P.length);
      gemmBatched(dO, oOffs, Dv, false, vd, vOffs, Dv, true, dP, sOffs, Tq, Tk, Dv, false);
      // Masked entries have P = 0, so the softmax backward already gives them zero gradient.
      const dS = new Float32Array(P.length);
      be().softmaxGrad(P, dP, BH * Tq, Tk, false, dS);
      be().affine(dS, scale, 0, dS);
      if (q.requiresGrad) {
        const d = new Float32Array(q.size);
        gemmBatched(dS, sOffs, Tk, false, kd, kOffs, D, false, d, qOffs, Tq, D, Tk, false);
        dq = new Tensor(d, q.shape);
      }
      if (k.requiresGrad) {
        const d = new Float32Array(k.size);
        gemmBatched(dS, sOffs, Tk, true, qd, qOffs, D, false, d, kOffs, Tk, D, Tq, false);
        dk = new Tensor(d, k.shape);
      }
    }
    return [dq, dk, dv];
  });
}
