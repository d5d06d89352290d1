/**
 * Rotary position embedding (Su et al. 2021, RoFormer), in the "rotate half" layout of
 * Llama/Mixtral: with x = [x₁ | x₂] split along the head dimension D and θ_i = base^(-2i/D),
 *   rope(x)_pos = x ⊙ cos(pos·θ) + rotateHalf(x) ⊙ sin(pos·θ),   rotateHalf([x₁|x₂]) = [-x₂|x₁].
 * It is a rotation, so the backward is the inverse rotation of the gradient.
 */
import { RangeValueError, ShapeError } from '../errors.js';
import { acquireScratch } from '../backend/scratch.js';
import { record } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';
import { be, requireFloat } from './util.js';

const tableCache = new Map<string, { cos: Float32Array; sin: Float32Array }>();

/** cos/sin tables [positions, D/2] for base θ (cached: models call this every step). */
function rotaryTable(positions: number, half: number, base: number): { cos: Float32Array; sin: Float32Array } {
  const key = `${half}:${base}`;
  let t = tableCache.get(key);
  if (!t || t.cos.length < positions * half) {
    const n = Math.max(positions, t ? (t.cos.length / half) * 2 : 0);
    const cos = new Float32Array(n * half), sin = new Float32Array(n * half);
    for (let i = 0; i < half; i++) {
      // Same float32 rounding as HF: inv_freq in fp32, then pos·inv_freq in fp32.
      const invFreq = Math.fround(1 / Math.pow(base, (2 * i) / (2 * half)));
      for (let p = 0; p < n; p++) {
        const ang = Math.fround(p * invFreq);
        cos[p * half + i] = Math.cos(ang);
        sin[p * half + i] = Math.sin(ang);
      }
    }
    t = { cos, sin };
    tableCache.set(key, t);
  }
  return t;
}

/** Rows are (..., t) with `heads` = 1, or (b, t, h) with `heads` = H (layout [B, T, H, D]). */
function rotate(src: Float32Array, out: Float32Array, rows: number, T: number, heads: number, D: number, start: number, base: number, inverse: boolean): void {
  if (rows === 0) return;
  const { cos, sin } = rotaryTable(start + T, D / 2, base);
  be().rotary(src, out, cos, sin, rows, T, heads, D, start, inverse);
}

/**
 * Apply rotary embeddings to x [..., T, D] (D even; typically [B, H, T, D]), or to x [B, T, H, D]
 * with layout 'bthd', for positions startPos .. startPos+T-1 (startPos > 0 with a KV cache).
 */
export function applyRotary(x: Tensor, opts?: { startPos?: number; base?: number; layout?: 'bhtd' | 'bthd' }): Tensor {
  const xd = requireFloat(x, 'applyRotary.x');
  const bthd = opts?.layout === 'bthd';
  if (bthd ? x.rank !== 4 : x.rank < 2) throw new ShapeError('applyRotary.x', x.shape, bthd ? 'must be [B, T, H, D]' : 'must be [..., T, D]');
  const D = x.shape[x.rank - 1];
  const T = bthd ? x.shape[1] : x.shape[x.rank - 2];
  const heads = bthd ? x.shape[2] : 1;
  if (D % 2 !== 0) throw new ShapeError('applyRotary.x', x.shape, `head dimension ${D} must be even`);
  const start = opts?.startPos ?? 0, base = opts?.base ?? 10000;
  if (!Number.isInteger(start) || start < 0) throw new RangeValueError('applyRotary.startPos', start, 'must be a non-negative integer');
  if (!(base > 0)) throw new RangeValueError('applyRotary.base', base, 'must be > 0');
  const rows = D === 0 ? 0 : x.size / D;
  const out = new Float32Array(x.size);
  rotate(xd, out, rows, T, heads, D, start, base, false);
  return record('applyRotary', [x], new Tensor(out, x.shape), (g) => {
    const dx = acquireScratch(x.size); // every element written by rotate
    rotate(g.f32, dx, rows, T, heads, D, start, base, true);
    return [new Tensor(dx, x.shape)];
  });
}
