/**
 * The mixture's router at one adapted Linear: turns that layer's input rows into per-token adapter
 * choices and differentiable gate weights, then a dispatch plan (tokens sorted by adapter, the MoE
 * layer's counting-sort plan). Router rows are one [1, in] tensor per adapter so that rows can be
 * frozen one by one: a frozen row has requiresGrad = false and never changes (no gradient, no
 * optimizer state, no weight decay), which is how an adapter is added without moving old routes.
 */
import { ConfigError } from '../errors.js';
import { tokenChoicePlan, type DispatchPlan } from '../moe/dispatch.js';
import { balanceLoss, routerZLoss } from '../moe/losses.js';
import type { MoEStats } from '../moe/layer.js';
import { routingStats } from '../moe/stats.js';
import { add, div, mul } from '../ops/elementwise.js';
import { gatherAlong, gatherRows, topK } from '../ops/gather.js';
import { matmul } from '../ops/matmul.js';
import { mean, sum } from '../ops/reduce.js';
import { concat, reshape } from '../ops/shape.js';
import { softmax } from '../ops/softmax.js';
import { isGradEnabled, noGrad } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';
import type { ResolvedRouterConfig } from './config.js';

/** Routing statistics of one forward at one site: MoEStats, adapters in place of experts. */
export type AdapterRouteStats = MoEStats;

/** What routing one site's input gives. */
export interface AdapterRoute {
  /** Token-major choices [T·k] (experts[t·k + j] = token t's j-th adapter). */
  experts: Int32Array;
  k: number;
  /** Gate of each choice [T·k] (differentiable when the router trains), or null for 'single' (1). */
  gates: Tensor | null;
  plan: DispatchPlan;
  /** Logits the router was supervised on: [T, n] per token, or [B, n] per sequence ('sequence'). */
  logits: Tensor | null;
  /** Σ coefficient · balancing loss (scalar). */
  auxLoss: Tensor;
  stats: AdapterRouteStats;
}

/** Sequence-level choices pinned for incremental decoding (one choice per sequence, set by the prompt). */
export interface PinnedRoute {
  batch: number;
  choices: Int32Array;
  gates: Float32Array;
}

/**
 * The dispatch plan without capacity (every assignment kept): a counting sort of assignments by
 * adapter. Same blocks as tokenChoicePlan with capacityFactor null; within a block, rows are in
 * token order instead of slot-major order, which changes nothing (rows are independent).
 */
export function droplessPlan(experts: Int32Array, k: number, n: number): DispatchPlan {
  const counts = new Int32Array(n);
  for (let i = 0; i < experts.length; i++) counts[experts[i]]++;
  const expertOffsets = new Int32Array(n + 1);
  for (let e = 0; e < n; e++) expertOffsets[e + 1] = expertOffsets[e] + counts[e];
  const cursor = expertOffsets.slice(0, n);
  const tokenIndex = new Int32Array(experts.length), weightIndex = new Int32Array(experts.length);
  for (let a = 0; a < experts.length; a++) {
    const p = cursor[experts[a]]++;
    tokenIndex[p] = (a / k) | 0;
    weightIndex[p] = a;
  }
  return { numExperts: n, expertOffsets, tokenIndex, weightIndex, tokensPerExpert: Array.from(counts), droppedAssignments: 0, droppedTokens: 0, capacityPerExpert: null };
}

/** Per-site router (see module doc). Gate rows live in `rows`, one per adapter, in adapter order. */
export class AdapterRouter {
  readonly rows: Tensor[];
  readonly config: ResolvedRouterConfig;
  /** Sequence routing: the prompt's choice, reused by later decoding steps while `pinning`. */
  pinned: PinnedRoute | null = null;
  pinning = false;

  constructor(config: ResolvedRouterConfig, rows: Tensor[]) {
    this.config = config;
    this.rows = rows;
  }

  private packed: Float32Array | null = null;

  /** The rows copied into one [n, in] buffer (inference: no concat op, no tape). */
  private packedRows(): Tensor {
    const d = this.rows[0].shape[1], n = this.rows.length;
    if (!this.packed || this.packed.length !== n * d) this.packed = new Float32Array(n * d);
    for (let e = 0; e < n; e++) this.packed.set(this.rows[e].f32, e * d);
    return new Tensor(this.packed, [n, d]);
  }

  /** The gate matrix [n, in] (a differentiable concatenation of the rows). */
  weight(): Tensor {
    // A copy of the list: the tape keeps the inputs array it is given.
    return this.rows.length === 1 ? this.rows[0] : concat([...this.rows], 0);
  }

  /**
   * The logits a supervised warm start trains on, from a site's recorded input x2 [T, in]: per
   * token [T, n] ('topk', 'dense'), or per sequence [batch, n] from the mean input ('sequence').
   * Differentiable in the router rows only when x2 is detached (a local classifier per site).
   */
  supervisionLogits(x2: Tensor, batch: number): Tensor {
    const W = this.weight();
    if (this.config.type !== 'sequence') return matmul(x2, W, { transB: true });
    const T = x2.shape[0];
    return matmul(mean(reshape(x2, [batch, T / batch, x2.shape[1]]), 1), W, { transB: true });
  }

  /** Route x2 [T, in] where T = batch · seq (sequence routing needs batch). */
  route(x2: Tensor, batch: number, training: boolean): AdapterRoute {
    const c = this.config;
    const T = x2.shape[0], n = Math.max(1, this.rows.length);
    if (c.type === 'single') {
      const experts = new Int32Array(T);
      const plan = tokenChoicePlan(experts, 1, null, { numExperts: 1, capacityFactor: null, dropPolicy: 'position', scopeTokens: T });
      return { experts, k: 1, gates: null, plan, logits: null, auxLoss: Tensor.scalar(0), stats: this.stats(plan, T, 1, null, 0, 0) };
    }
    if (!training && c.type !== 'sequence' && !(isGradEnabled() && (x2.requiresGrad || this.rows.some((r) => r.requiresGrad)))) return this.routeFast(x2, n);
    const W = this.weight();
    if (c.type === 'sequence') return this.routeSequence(x2, batch, W, n);
    const logits = matmul(x2, W, { transB: true }); // [T, n]
    const probs = softmax(logits, -1);
    let experts: Int32Array, gates: Tensor, k: number;
    if (c.type === 'dense') {
      k = n;
      experts = new Int32Array(T * n);
      for (let t = 0; t < T; t++) for (let e = 0; e < n; e++) experts[t * n + e] = e;
      gates = reshape(probs, [T * n]);
    } else {
      k = c.k;
      const choices = noGrad(() => topK(probs, k).indices);
      let g = gatherAlong(probs, 1, choices);
      if (c.normalize && k > 1) g = div(g, sum(g, -1, true));
      else if (c.normalize) g = div(g, g.detach()); // k = 1: value exactly 1, gradient of p/stop(p) so the LM loss still trains the router
      experts = choices.i32;
      gates = reshape(g, [T * k]);
    }
    const plan = tokenChoicePlan(experts, k, null, { numExperts: n, capacityFactor: null, dropPolicy: 'position', scopeTokens: Math.max(1, T) });
    const terms: Tensor[] = [];
    let bal = 0, z = 0;
    if (training) {
      const b = c.balance > 0 ? balanceLoss(logits, Math.min(k, n)) : noGrad(() => balanceLoss(logits, Math.min(k, n)));
      const zz = c.zLoss > 0 ? routerZLoss(logits) : noGrad(() => routerZLoss(logits));
      if (c.balance > 0) terms.push(mul(b, c.balance));
      if (c.zLoss > 0) terms.push(mul(zz, c.zLoss));
      bal = b.item();
      z = zz.item();
    }
    const auxLoss = terms.length === 0 ? Tensor.scalar(0) : terms.length === 1 ? terms[0] : add(terms[0], terms[1]);
    return { experts, k, gates, plan, logits, auxLoss, stats: this.stats(plan, T, k, probs.f32, bal, z) };
  }

  /**
   * Inference routing with nothing to differentiate: the same softmax, top-k (ties to the lower
   * index) and renormalisation as the tensor path, in one pass over the [T, n] logits.
   */
  private routeFast(x2: Tensor, n: number): AdapterRoute {
    const c = this.config;
    const T = x2.shape[0];
    let logits: Tensor;
    if (T <= 16) {
      // Decoding: n·d multiply-adds per token, cheaper as a loop over the rows than a kernel call.
      const xd = x2.f32, d = x2.shape[1], out = new Float32Array(T * n);
      for (let e = 0; e < n; e++) {
        const wd = this.rows[e].f32;
        for (let t = 0; t < T; t++) {
          let acc = 0;
          for (let i = 0, xo = t * d; i < d; i++) acc += xd[xo + i] * wd[i];
          out[t * n + e] = acc;
        }
      }
      logits = new Tensor(out, [T, n]);
    } else {
      const W = this.packedRows();
      logits = noGrad(() => matmul(x2, W, { transB: true }));
    }
    const l = logits.f32;
    const k = c.type === 'dense' ? n : c.k;
    const experts = new Int32Array(T * k), gates = new Float32Array(T * k);
    for (let t = 0; t < T; t++) {
      const row = t * n;
      let m = -Infinity;
      for (let e = 0; e < n; e++) if (l[row + e] > m) m = l[row + e];
      if (c.type === 'dense') {
        let z = 0;
        for (let e = 0; e < n; e++) z += gates[row + e] = Math.exp(l[row + e] - m);
        for (let e = 0; e < n; e++) {
          experts[row + e] = e;
          gates[row + e] /= z;
        }
        continue;
      }
      // Top-k on the logits (softmax is monotonic) by insertion into the k best; ties keep the lower index as topK.
      let s = 0;
      const o = t * k;
      for (let e = 0; e < n; e++) {
        const v = l[row + e];
        const filled = Math.min(e, k);
        if (filled === k && v <= l[row + experts[o + k - 1]]) continue;
        let j = filled === k ? k - 1 : filled;
        while (j > 0 && v > l[row + experts[o + j - 1]]) {
          experts[o + j] = experts[o + j - 1];
          j--;
        }
        experts[o + j] = e;
      }
      for (let j = 0; j < k; j++) s += gates[o + j] = Math.exp(l[row + experts[o + j]] - m);
      if (c.normalize) {
        // Renormalised over the k picked: only their k exponentials are needed.
        for (let j = 0; j < k; j++) gates[t * k + j] = k === 1 ? 1 : gates[t * k + j] / s;
      } else {
        let z = 0;
        for (let e = 0; e < n; e++) z += Math.exp(l[row + e] - m);
        for (let j = 0; j < k; j++) gates[t * k + j] /= z;
      }
    }
    const plan = droplessPlan(experts, k, n);
    // Router entropy is a training statistic: left at 0 here rather than paying n exponentials per token.
    return { experts, k, gates: new Tensor(gates, [T * k]), plan, logits, auxLoss: Tensor.scalar(0), stats: this.stats(plan, T, k, null, 0, 0) };
  }

  private routeSequence(x2: Tensor, batch: number, W: Tensor, n: number): AdapterRoute {
    const c = this.config;
    const T = x2.shape[0];
    if (batch < 1 || T % batch !== 0) throw new ConfigError('router.type', 'sequence', `needs [batch, seq] inputs: ${T} rows do not split into ${batch} sequences`);
    const S = T / batch, k = c.k;
    let choices: Int32Array, gatesSeq: Tensor, logits: Tensor | null = null, probsF: Float32Array | null = null;
    const pin = this.pinning && this.pinned && this.pinned.batch === batch ? this.pinned : null;
    if (pin) {
      choices = pin.choices;
      gatesSeq = new Tensor(pin.gates, [batch * k, 1]);
    } else {
      const m = mean(reshape(x2, [batch, S, x2.shape[1]]), 1); // [B, in]: the sequence's mean hidden state
      logits = matmul(m, W, { transB: true }); // [B, n]
      const probs = softmax(logits, -1);
      probsF = probs.f32;
      const idx = noGrad(() => topK(probs, k).indices);
      let g = gatherAlong(probs, 1, idx);
      if (c.normalize) g = k > 1 ? div(g, sum(g, -1, true)) : div(g, g.detach());
      choices = idx.i32;
      gatesSeq = reshape(g, [batch * k, 1]);
      if (this.pinning) this.pinned = { batch, choices: choices.slice(), gates: g.f32.slice() };
    }
    const experts = new Int32Array(T * k);
    const from = new Int32Array(T * k);
    for (let b = 0; b < batch; b++) {
      for (let s = 0; s < S; s++) {
        for (let j = 0; j < k; j++) {
          experts[(b * S + s) * k + j] = choices[b * k + j];
          from[(b * S + s) * k + j] = b * k + j;
        }
      }
    }
    const gates = reshape(gatherRows(gatesSeq, from), [T * k]);
    const plan = tokenChoicePlan(experts, k, null, { numExperts: n, capacityFactor: null, dropPolicy: 'position', scopeTokens: Math.max(1, T) });
    return { experts, k, gates, plan, logits, auxLoss: Tensor.scalar(0), stats: this.stats(plan, T, k, probsF, 0, 0, batch) };
  }

  /** Site statistics: every assignment is kept (no capacity), so nothing is dropped. */
  private stats(plan: DispatchPlan, T: number, k: number, probs: Float32Array | null, bal: number, z: number, rows = T): AdapterRouteStats {
    return routingStats(plan, T * k, probs, rows, bal, z);
  }
}
