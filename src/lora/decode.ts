/**
 * The decode path of one mixture site: for a few token rows (a decoding step) the router (logits,
 * top-k with ties to the lower index, softmax gates) and the low-rank update
 *   y_t += Σ_j g_j · scale_e · B_e A_e x_t
 * run as one backend call (`Backend.loraMixture`), added in place onto the base output. The site's
 * adapter factors and router rows are views into packed buffers (`SitePack`), so the kernel reads
 * them without copying and training or loading that writes the tensors in place stays visible.
 * What the slower tensor path reports is kept: the route (choices, gates, logits) and its stats,
 * the dispatch plan and stats built only when read.
 */
import { LORA_MIX_ALL, LORA_MIX_DENSE, LORA_MIX_TOPK, LORA_MIX_TOPK_SOFTMAX } from '../backend/interface.js';
import type { DispatchPlan } from '../moe/dispatch.js';
import { routingStats } from '../moe/stats.js';
import { be } from '../ops/util.js';
import { Tensor } from '../tensor/tensor.js';
import type { ResolvedRouterConfig } from './config.js';
import type { LowRankFactors } from './grouped.js';
import { droplessPlan, type AdapterRoute, type AdapterRouteStats } from './router.js';

/**
 * At most this many token rows take the one-call decode path; longer prompts use the grouped GEMMs,
 * whose fixed cost (gather, two task lists, scatter, thread hand-offs) only pays off beyond a few
 * dozen rows (measured on the demo model's 128-wide sites: the kernel was cheaper per row at 17-32 rows).
 */
export const DECODE_ROWS = 32;

/**
 * One site's adapters and router rows in packed buffers: A holds every A_e [r_e, in] in adapter
 * order, B every B_e [out, r_e], R the router rows [n, in]. `factors` and `rows` are tensors over
 * views of them (trainable parameters like any other).
 */
export class SitePack {
  readonly A: Float32Array;
  readonly B: Float32Array;
  readonly R: Float32Array | null;
  readonly factors: LowRankFactors[];
  readonly rows: Tensor[];
  readonly scales: Float32Array;
  private readonly dims: Int32Array;
  private readonly k: number;

  /**
   * Copy `factors` (A [r_e, in], B [out, r_e]) and router `rows` ([1, in] each; none for a single
   * adapter) into packed buffers and make tensors over them with the same values and requiresGrad.
   */
  constructor(inF: number, outF: number, factors: ReadonlyArray<{ A: Tensor; B: Tensor }>, rows: readonly Tensor[], scales: readonly number[], router: ResolvedRouterConfig) {
    const n = factors.length;
    const ranks = factors.map((f) => f.A.shape[0]);
    const sumR = ranks.reduce((a, b) => a + b, 0);
    this.A = new Float32Array(sumR * inF);
    this.B = new Float32Array(sumR * outF);
    let off = 0;
    this.factors = factors.map((f, e) => {
      const r = ranks[e];
      const a = this.A.subarray(off * inF, (off + r) * inF), b = this.B.subarray(off * outF, (off + r) * outF);
      off += r;
      a.set(f.A.f32);
      b.set(f.B.f32);
      return { A: new Tensor(a, f.A.shape, f.A.requiresGrad), B: new Tensor(b, f.B.shape, f.B.requiresGrad) };
    });
    this.R = rows.length ? new Float32Array(rows.length * inF) : null;
    this.rows = rows.map((row, e) => {
      const v = (this.R as Float32Array).subarray(e * inF, (e + 1) * inF);
      v.set(row.f32);
      return new Tensor(v, row.shape, row.requiresGrad);
    });
    this.scales = Float32Array.from(scales);
    const mode = router.type === 'single' ? LORA_MIX_ALL : router.type === 'dense' ? LORA_MIX_DENSE : router.normalize ? LORA_MIX_TOPK : LORA_MIX_TOPK_SOFTMAX;
    this.k = mode === LORA_MIX_ALL || mode === LORA_MIX_DENSE ? n : Math.min(router.k, n);
    this.dims = new Int32Array([0, inF, outF, n, this.k, mode, ...ranks]);
  }

  /**
   * Whether the given factors and rows are still the packed views (nothing replaced them): the
   * decode path reads the packed buffers, so it must not run otherwise.
   */
  intact(factors: readonly LowRankFactors[], rows: readonly Tensor[]): boolean {
    if (factors.length !== this.factors.length || rows.length !== this.rows.length) return false;
    for (let e = 0; e < factors.length; e++) {
      const f = factors[e], p = this.factors[e];
      if (!f || !p || f.A.data !== p.A.data || f.B.data !== p.B.data) return false;
    }
    for (let e = 0; e < rows.length; e++) if (rows[e].data !== this.rows[e].data) return false;
    return true;
  }

  /** y [T, out] += the mixture's low-rank update for x [T, in] (T <= DECODE_ROWS); returns the route taken. */
  run(x: Float32Array, T: number, y: Float32Array, single: boolean): AdapterRoute {
    const n = this.factors.length, k = this.k;
    this.dims[0] = T;
    const experts = new Int32Array(T * k), gates = new Float32Array(T * k), logits = this.R ? new Float32Array(T * n) : null;
    be().loraMixture(x, this.R, this.A, this.B, this.scales, this.dims, experts, gates, logits, y);
    return new DecodeRoute(experts, k, n, single ? null : gates, logits);
  }
}

/** The route of a decode-path call; the plan, stats and tensors are built when first read. */
class DecodeRoute implements AdapterRoute {
  readonly experts: Int32Array;
  readonly k: number;
  private readonly n: number;
  private readonly g: Float32Array | null;
  private readonly l: Float32Array | null;
  private planMemo: DispatchPlan | null = null;
  private gatesMemo: Tensor | null = null;
  private logitsMemo: Tensor | null = null;
  private statsMemo: AdapterRouteStats | null = null;

  constructor(experts: Int32Array, k: number, n: number, gates: Float32Array | null, logits: Float32Array | null) {
    this.experts = experts;
    this.k = k;
    this.n = n;
    this.g = gates;
    this.l = logits;
  }

  /** Gate of each choice [T·k], or null for a single adapter (gate 1). */
  get gates(): Tensor | null {
    if (this.g && !this.gatesMemo) this.gatesMemo = new Tensor(this.g, [this.g.length]);
    return this.gatesMemo;
  }

  /** The dispatch plan of the choices (every assignment kept). */
  get plan(): DispatchPlan {
    return (this.planMemo ??= droplessPlan(this.experts, this.k, this.n));
  }

  /** Router logits [T, n] (null for a single adapter). */
  get logits(): Tensor | null {
    if (this.l && !this.logitsMemo) this.logitsMemo = new Tensor(this.l, [this.l.length / this.n, this.n]);
    return this.logitsMemo;
  }

  /** No balancing loss at inference. */
  get auxLoss(): Tensor {
    return Tensor.scalar(0);
  }

  /** As the tensor path's inference stats: every assignment kept, router entropy left at 0. */
  get stats(): AdapterRouteStats {
    const T = this.experts.length / this.k;
    return (this.statsMemo ??= routingStats(this.plan, T * this.k, null, T, 0, 0));
  }
}
