/**
 * MoELayer: a drop-in replacement for a transformer's feed-forward block. Data flows one way:
 * config → router (logits, scores, choices) → dispatch plan (per-expert token blocks, capacity)
 * → experts (one grouped GEMM pass) → combine (weighted scatter-add) (+ shared experts).
 */
import type { Activation } from '../backend/interface.js';
import { ShapeError } from '../errors.js';
import { Linear } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import { add, div, mul, sigmoid, softplus } from '../ops/elementwise.js';
import { gatherAlong, gatherRows, scatterAddRows, topK } from '../ops/gather.js';
import { matmul } from '../ops/matmul.js';
import { sum } from '../ops/reduce.js';
import { reshape, transpose } from '../ops/shape.js';
import { softmax } from '../ops/softmax.js';
import { Generator } from '../random.js';
import { noGrad } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';
import { resolveMoEConfig, type MoEConfig, type ResolvedMoEConfig, type ResolvedTopKGroups } from './config.js';
import { expertChoicePlan, tokenChoicePlan, type DispatchPlan } from './dispatch.js';
import { groupedExpertFFN, routedExpertMixture, type ExpertBlockWeights } from './expert-ffn.js';
import { balanceLoss, importanceLoss, loadLoss, routerZLoss, type RouterChoice } from './losses.js';
import { entropyOfRows, routingStats } from './stats.js';

/** Per-forward routing statistics (numbers, not tensors). */
export interface MoEStats {
  /** Assignments each expert processed (after capacity). */
  tokensPerExpert: number[];
  droppedAssignments: number;
  /** Tokens that lost every assignment. */
  droppedTokens: number;
  /** droppedAssignments / (tokens · k). */
  dropFraction: number;
  /** Mean over tokens of the entropy (nats) of the router's distribution. */
  routerEntropy: number;
  /** max / mean of tokensPerExpert (1 = perfectly balanced). */
  loadImbalance: number;
  /** Unweighted balance loss (HF load_balancing_loss_func), whatever its coefficient. */
  balanceLoss: number;
  /** Unweighted router z-loss, whatever its coefficient. */
  zLoss: number;
}

/** What a forward pass returns. */
export interface MoEOutput {
  /** Same shape as the input. */
  output: Tensor;
  /** [tokens, numRouterRows]: numExperts, or numExperts·slotsPerExpert for Soft MoE. */
  routerLogits?: Tensor;
  /** Σ coefficient · loss over the enabled balancing losses (scalar; 0 when none). */
  auxLoss: Tensor;
  stats: MoEStats;
  /** Token choice: each token's chosen experts [tokens·k] in rank order, and k (for inspection). */
  routing?: { experts: Int32Array; k: number; gates: Float32Array };
  /** The dispatch plan used (absent for Soft MoE). */
  plan?: DispatchPlan;
}

/** One expert FFN with HF-style names w1, w2, w3 (no biases). */
export class ExpertFFN extends Module {
  readonly w1: Linear;
  readonly w2: Linear;
  readonly w3: Linear | null;
  constructor(dModel: number, dFF: number, gated: boolean, generator: Generator) {
    super();
    this.w1 = this.registerModule('w1', new Linear(dModel, dFF, { bias: false, generator }));
    this.w2 = this.registerModule('w2', new Linear(dFF, dModel, { bias: false, generator }));
    this.w3 = gated ? this.registerModule('w3', new Linear(dModel, dFF, { bias: false, generator })) : null;
  }

  /** Dense use (a transformer's feed-forward, a shared expert): x [..., dModel] → [..., dModel]. */
  forward(x: Tensor, activation: Activation): Tensor {
    const d = x.shape[x.rank - 1];
    const flat = x.rank === 2 ? x : reshape(x, [x.size / d, d]);
    const weights: ExpertBlockWeights = { w1: [this.w1.weight], w2: [this.w2.weight], w3: this.w3 ? [this.w3.weight] : null };
    const y = groupedExpertFFN(flat, Int32Array.of(0, flat.shape[0]), weights, activation);
    return x.rank === 2 ? y : reshape(y, x.shape);
  }
}

/**
 * Where an MoE layer's routed experts run from instead of its resident parameters (an expert store
 * that keeps them on disk: src/serve/expert-store.ts). Inference only: no gradient reaches the
 * weights a source loads.
 */
export interface ExpertSource {
  /**
   * Return exactly groupedExpertFFN(xs, offsets, <layer's expert weights>, activation), touching
   * only the experts whose block offsets[e]..offsets[e+1] is non-empty. `input` is the layer's
   * router input [tokens, dModel] (a source may use it to prefetch the next layer's experts).
   */
  runExperts(layer: MoELayer, xs: Tensor, offsets: Int32Array, input: Tensor): Tensor;
}

let deferredExperts = 0;

/**
 * Construct inside `build` with every MoE layer's routed-expert weights left unmaterialised (empty
 * [0, 0] placeholders, no memory): for models whose experts an ExpertSource serves from disk.
 */
export function withDeferredExperts<T>(build: () => T): T {
  deferredExperts++;
  try {
    return build();
  } finally {
    deferredExperts--;
  }
}

/** A numbered list of modules (`experts.0`, `experts.1`, ...). */
export class ModuleList<M extends Module> extends Module {
  readonly items: M[];
  constructor(items: M[]) {
    super();
    this.items = items;
    items.forEach((m, i) => this.registerModule(String(i), m));
  }
}

/** The router's parameters: `gate.weight`, `gate.noise.weight`, `gate.e_score_correction_bias`. */
export class Gate extends Module {
  readonly weight: Tensor;
  readonly noise: Linear | null;
  /** DeepSeek-V3 selection bias (a buffer, updated by updateBiasBalancing, not by gradients). */
  readonly bias: Tensor | null;
  constructor(rows: number, dModel: number, noisy: boolean, biased: boolean, generator: Generator) {
    super();
    const bound = 1 / Math.sqrt(dModel);
    this.weight = this.registerParameter('weight', Tensor.rand([rows, dModel], { generator, low: -bound, high: bound }));
    // Noise weights start at zero (Shazeer et al. 2017 initialise W_noise to zeros).
    this.noise = noisy ? this.registerModule('noise', new Linear(dModel, rows, { bias: false, generator })) : null;
    if (this.noise) (this.noise.weight.data as Float32Array).fill(0);
    this.bias = biased ? this.registerBuffer('e_score_correction_bias', Tensor.zeros([rows])) : null;
  }
}

/**
 * Group-limited top-k (DeepSeek-V2 `group_limited_greedy`, DeepSeek-V3 `noaux_tc`): per row of
 * sel [T, E], score each of the G groups of E/G consecutive experts (sum of its 2 best entries, or
 * its best), keep the best `topkGroups` groups, set the other experts to 0 (as Hugging Face's
 * masked_fill(~mask, 0.0)) and take the top k of what remains. Ties go to the lower index.
 */
export function groupLimitedTopK(sel: Tensor, k: number, groups: ResolvedTopKGroups): Tensor {
  const [T, E] = sel.shape;
  const G = groups.numGroups, size = E / G;
  const src = sel.f32;
  const masked = new Float32Array(src.length);
  const gScore = new Float32Array(G);
  const keep = new Uint8Array(G);
  for (let t = 0; t < T; t++) {
    const row = t * E;
    for (let g = 0; g < G; g++) {
      let best = -Infinity, second = -Infinity;
      for (let j = 0; j < size; j++) {
        const v = src[row + g * size + j];
        if (v > best) {
          second = best;
          best = v;
        } else if (v > second) second = v;
      }
      gScore[g] = groups.groupScore === 'max' ? best : best + second;
    }
    keep.fill(0);
    for (let n = 0; n < groups.topkGroups; n++) {
      let arg = -1;
      for (let g = 0; g < G; g++) if (!keep[g] && (arg < 0 || gScore[g] > gScore[arg])) arg = g;
      keep[arg] = 1;
    }
    for (let g = 0; g < G; g++) {
      for (let j = 0; j < size; j++) masked[row + g * size + j] = keep[g] ? src[row + g * size + j] : 0;
    }
  }
  return topK(new Tensor(masked, [T, E]), k).indices;
}

/** Rows scaled to sum to 1 (for the entropy statistic of sigmoid scores). */
function rowNormalized(p: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(p.length);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < cols; c++) s += p[r * cols + c];
    for (let c = 0; c < cols; c++) out[r * cols + c] = s > 0 ? p[r * cols + c] / s : 0;
  }
  return out;
}

/**
 * A sparse Mixture-of-Experts feed-forward layer (Shazeer et al. 2017; GShard; Switch; Expert
 * Choice; Soft MoE; DeepSeekMoE shared experts). See docs/moe.md for each router's trade-offs.
 */
export class MoELayer extends Module {
  readonly config: ResolvedMoEConfig;
  readonly gate: Gate;
  readonly experts: ModuleList<ExpertFFN>;
  readonly sharedExperts: ModuleList<ExpertFFN> | null;
  /** Qwen2-MoE `shared_expert_gate` ([1, dModel], no bias) when config.sharedExpertGate. */
  readonly sharedExpertGate: Linear | null;
  /** Generator for training noise (jitter, Gaussian gating noise). */
  readonly noiseGenerator: Generator;
  /** Selection counts per expert from the last training forward (for bias balancing). */
  private lastLoad: number[] | null = null;

  constructor(config: MoEConfig) {
    super();
    this.config = resolveMoEConfig(config);
    const c = this.config;
    const init = new Generator(c.seed);
    this.noiseGenerator = new Generator(c.seed + 7919);
    const rows = c.router.type === 'soft' ? c.numExperts * c.router.slotsPerExpert : c.numExperts;
    const noisy = c.router.type === 'topk' && c.router.noise?.type === 'gaussian';
    const biased = c.biasBalancing !== null || (c.router.type === 'topk' && c.router.selectionBias);
    this.gate = this.registerModule('gate', new Gate(rows, c.dModel, noisy, biased, init));
    this.experts = this.registerModule(
      'experts',
      new ModuleList(Array.from({ length: c.numExperts }, () => (deferredExperts ? new ExpertFFN(0, 0, c.expert.gated, init) : new ExpertFFN(c.dModel, c.dFF, c.expert.gated, init)))),
    );
    this.sharedExperts =
      c.numSharedExperts > 0
        ? this.registerModule('shared_experts', new ModuleList(Array.from({ length: c.numSharedExperts }, () => new ExpertFFN(c.dModel, c.sharedDFF, c.expert.gated, init))))
        : null;
    this.sharedExpertGate = c.sharedExpertGate ? this.registerModule('shared_expert_gate', new Linear(c.dModel, 1, { bias: false, generator: init })) : null;
  }

  private expertWeights(list: readonly ExpertFFN[]): ExpertBlockWeights {
    return {
      w1: list.map((e) => e.w1.weight),
      w2: list.map((e) => e.w2.weight),
      w3: this.config.expert.gated ? list.map((e) => (e.w3 as Linear).weight) : null,
    };
  }

  private expertSource: ExpertSource | null = null;

  /** Run the routed experts from `source` (null: from the resident parameters again). */
  setExpertSource(source: ExpertSource | null): void {
    this.expertSource = source;
  }

  /** The grouped expert FFN over per-expert row blocks, from the expert source when one is set. */
  private runExperts(xs: Tensor, offsets: Int32Array, input: Tensor): Tensor {
    if (this.expertSource) return this.expertSource.runExperts(this, xs, offsets, input);
    return groupedExpertFFN(xs, offsets, this.expertWeights(this.experts.items), this.config.expert.activation);
  }

  /** Route x ([tokens, dModel] or [batch, seq, dModel]) through the experts. */
  forward(x: Tensor): MoEOutput {
    const c = this.config;
    if ((x.rank !== 2 && x.rank !== 3) || x.shape[x.rank - 1] !== c.dModel) {
      throw new ShapeError('x', x.shape, `must be [tokens, ${c.dModel}] or [batch, seq, ${c.dModel}]`);
    }
    const seqLen = x.rank === 3 ? x.shape[1] : x.shape[0];
    const T = x.rank === 3 ? x.shape[0] * x.shape[1] : x.shape[0];
    const xf = x.rank === 3 ? reshape(x, [T, c.dModel]) : x;
    const res = c.router.type === 'soft' ? this.forwardSoft(xf, T, seqLen) : this.forwardRouted(xf, T, seqLen);
    let out = res.output;
    if (this.sharedExperts && this.sharedExpertGate) {
      // Qwen2-MoE: output += sigmoid(x·w_gateᵀ) ⊙ shared(x), one gate value per token.
      let shared: Tensor | null = null;
      for (const e of this.sharedExperts.items) {
        const y = e.forward(xf, c.expert.activation);
        shared = shared ? add(shared, y) : y;
      }
      out = add(out, mul(shared as Tensor, sigmoid(matmul(xf, this.sharedExpertGate.weight, { transB: true }))));
    } else if (this.sharedExperts) {
      for (const shared of this.sharedExperts.items) out = add(out, shared.forward(xf, c.expert.activation));
    }
    res.output = x.rank === 3 ? reshape(out, x.shape) : out;
    return res;
  }

  private auxAndStats(
    logits: Tensor,
    k: number,
    extra: { importance?: () => Tensor; load?: () => Tensor; choice?: RouterChoice },
  ): { auxLoss: Tensor; balance: number; z: number } {
    const c = this.config.losses;
    const terms: Tensor[] = [];
    const balanceT = c.balance > 0 ? balanceLoss(logits, k, extra.choice) : noGrad(() => balanceLoss(logits, k, extra.choice));
    const zT = c.zLoss > 0 ? routerZLoss(logits) : noGrad(() => routerZLoss(logits));
    if (c.balance > 0) terms.push(mul(balanceT, c.balance));
    if (c.zLoss > 0) terms.push(mul(zT, c.zLoss));
    if (c.importance > 0 && extra.importance) terms.push(mul(extra.importance(), c.importance));
    if (c.load > 0 && extra.load) terms.push(mul(extra.load(), c.load));
    let auxLoss = terms.length ? terms[0] : Tensor.scalar(0);
    for (let i = 1; i < terms.length; i++) auxLoss = add(auxLoss, terms[i]);
    return { auxLoss, balance: balanceT.item(), z: zT.item() };
  }

  private forwardRouted(xf: Tensor, T: number, seqLen: number): MoEOutput {
    const c = this.config;
    const E = c.numExperts;
    const r = c.router;
    let routerIn = xf;
    if (this.training && r.type === 'topk' && r.noise?.type === 'jitter' && r.noise.eps > 0) {
      const eps = r.noise.eps;
      routerIn = mul(xf, Tensor.rand(xf.shape, { generator: this.noiseGenerator, low: 1 - eps, high: 1 + eps }));
    }
    const logits = matmul(routerIn, this.gate.weight, { transB: true }); // [T, E], fp32
    if (r.type === 'expert-choice') {
      const scores = softmax(logits, -1);
      const plan = expertChoicePlan(scores.f32, T, E, r.capacityFactor);
      const output = this.combine(xf, T, plan, reshape(scores, [T * E, 1]));
      const { auxLoss, balance, z } = this.auxAndStats(logits, 1, {});
      return { output, routerLogits: logits, auxLoss, plan, stats: routingStats(plan, T, scores.f32, T, balance, z) };
    }
    if (r.type !== 'topk') throw new Error('unreachable');
    const k = r.k;
    let selectLogits = logits;
    let noisy: { noisy: Tensor; std: Tensor } | null = null;
    if (this.training && r.noise?.type === 'gaussian' && this.gate.noise) {
      const std = softplus(matmul(xf, this.gate.noise.weight, { transB: true }));
      const eps = Tensor.randn([T, E], { generator: this.noiseGenerator });
      selectLogits = add(logits, mul(eps, std));
      noisy = { noisy: selectLogits, std };
    }
    // Scores: softmax over experts, or DeepSeek-V3's independent sigmoid per expert.
    const probs = r.scoring === 'sigmoid' ? sigmoid(selectLogits) : softmax(selectLogits, -1);
    const choices = noGrad(() => {
      const sel = this.gate.bias ? add(probs, this.gate.bias) : probs;
      return r.groups ? groupLimitedTopK(sel, k, r.groups) : topK(sel, k).indices;
    });
    let gates = gatherAlong(probs, 1, choices); // [T, k]
    // DeepSeek-V3 adds 1e-20 to the denominator (sigmoid scores need not sum to anything).
    if (r.normalize) gates = div(gates, r.scoring === 'sigmoid' ? add(sum(gates, -1, true), 1e-20) : sum(gates, -1, true));
    if (r.routedScalingFactor !== 1) gates = mul(gates, r.routedScalingFactor);
    const experts = choices.i32;
    let priority: Float32Array | null = null;
    if (r.dropPolicy === 'score') {
      // V-MoE batch-prioritised routing: tokens ordered by their top-1 router probability.
      const p = probs.f32;
      priority = new Float32Array(T);
      for (let t = 0; t < T; t++) priority[t] = p[t * E + experts[t * k]];
    }
    const plan = tokenChoicePlan(experts, k, priority, {
      numExperts: E,
      capacityFactor: r.capacityFactor,
      dropPolicy: r.dropPolicy,
      scopeTokens: r.capacityScope === 'sequence' ? seqLen : T,
    });
    if (this.training) {
      const load = new Array<number>(E).fill(0);
      for (let i = 0; i < experts.length; i++) load[experts[i]]++;
      this.lastLoad = load;
    }
    const output = this.combine(xf, T, plan, reshape(gates, [T * k, 1]));
    const { auxLoss, balance, z } = this.auxAndStats(logits, k, {
      importance: () => importanceLoss(gates, experts, E),
      load: () => (noisy ? loadLoss(logits, noisy.noisy, noisy.std, k) : Tensor.scalar(0)),
      // The balance loss wants softmax(logits) and its plain top-k: the selection's own, unless
      // noise, a selection bias, group limits or sigmoid scores made them differ.
      choice: selectLogits === logits && !this.gate.bias && !r.groups && r.scoring !== 'sigmoid' ? { probs, topK: experts } : undefined,
    });
    return {
      output,
      routerLogits: logits,
      auxLoss,
      plan,
      routing: { experts, k, gates: gates.f32 },
      stats: r.scoring === 'sigmoid' ? routingStats(plan, T * k, rowNormalized(probs.f32, T, E), T, balance, z) : routingStats(plan, T * k, probs.f32, T, balance, z, selectLogits.f32),
    };
  }

  /** Gather each expert's rows, run the grouped FFN, and scatter-add back weighted. */
  private combine(xf: Tensor, T: number, plan: DispatchPlan, flatWeights: Tensor): Tensor {
    const w = reshape(gatherRows(flatWeights, plan.weightIndex), [plan.tokenIndex.length]);
    // Resident experts: one fused op whose gathered rows and expert outputs stay in pooled scratch.
    if (!this.expertSource) {
      return routedExpertMixture(xf, plan.tokenIndex, plan.expertOffsets, w, this.expertWeights(this.experts.items), this.config.expert.activation);
    }
    const xs = gatherRows(xf, plan.tokenIndex);
    const ys = this.runExperts(xs, plan.expertOffsets, xf);
    return scatterAddRows(ys, plan.tokenIndex, T, w);
  }

  private forwardSoft(xf: Tensor, T: number, seqLen: number): MoEOutput {
    const c = this.config;
    if (c.router.type !== 'soft') throw new Error('unreachable');
    const E = c.numExperts, p = c.router.slotsPerExpert, d = c.dModel;
    const B = seqLen === 0 ? 0 : T / seqLen, m = seqLen, S = E * p;
    const x3 = reshape(xf, [B, m, d]);
    const logits = matmul(x3, this.gate.weight, { transB: true }); // [B, m, S]
    const dispatch = softmax(logits, 1); // over the m tokens, per slot
    const combineW = softmax(logits, 2); // over the S slots, per token
    const slots = matmul(dispatch, x3, { transA: true }); // [B, S, d]
    // Expert-major slot rows so each expert's slots (for every sequence) form one block.
    const slotsByExpert = reshape(transpose(reshape(slots, [B, E, p, d]), [1, 0, 2, 3]), [E * B * p, d]);
    const offsets = new Int32Array(E + 1);
    for (let e = 0; e <= E; e++) offsets[e] = e * B * p;
    const ys = this.runExperts(slotsByExpert, offsets, xf);
    const slotOut = reshape(transpose(reshape(ys, [E, B, p, d]), [1, 0, 2, 3]), [B, S, d]);
    const out = reshape(matmul(combineW, slotOut), [T, d]);
    const logits2 = reshape(logits, [T, S]);
    const zT = c.losses.zLoss > 0 ? routerZLoss(logits2) : noGrad(() => routerZLoss(logits2));
    const auxLoss = c.losses.zLoss > 0 ? mul(zT, c.losses.zLoss) : Tensor.scalar(0);
    const perExpert = new Array<number>(E).fill(B * p);
    return {
      output: out,
      routerLogits: logits2,
      auxLoss,
      stats: {
        tokensPerExpert: perExpert,
        droppedAssignments: 0,
        droppedTokens: 0,
        dropFraction: 0,
        routerEntropy: entropyOfRows(combineW.f32, T, S),
        loadImbalance: 1,
        balanceLoss: 0,
        zLoss: zT.item(),
      },
    };
  }

  /**
   * DeepSeek-V3 auxiliary-loss-free balancing: after a training step, b_e += rate·sign(mean load − load_e)
   * using the selection counts of the last training forward. No-op unless biasBalancing is configured.
   */
  updateBiasBalancing(): void {
    const bias = this.gate.bias;
    const rate = this.config.biasBalancing?.rate ?? 0;
    if (!bias || !this.lastLoad) return;
    const load = this.lastLoad;
    const meanLoad = load.reduce((a, b) => a + b, 0) / load.length;
    const b = bias.data as Float32Array;
    for (let e = 0; e < load.length; e++) b[e] += rate * Math.sign(meanLoad - load[e]);
    this.lastLoad = null;
  }
}
