/**
 * MoELayer: a drop-in replacement for a transformer's feed-forward block. Data flows one way:
 * config → router (logits, scores, choices) → dispatch plan (per-expert token blocks, capacity)
 * → experts (one grouped GEMM pass) → combine (weighted scatter-add) (+ shared experts).
 */
import type { Activation } from '../backend/interface.js';
import { ShapeError } from '../errors.js';
import { Linear } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import { add, div, mul, softplus } from '../ops/elementwise.js';
import { gatherAlong, gatherRows, scatterAddRows, topK } from '../ops/gather.js';
import { matmul } from '../ops/matmul.js';
import { sum } from '../ops/reduce.js';
import { reshape, transpose } from '../ops/shape.js';
import { softmax } from '../ops/softmax.js';
import { Generator } from '../random.js';
import { noGrad } from '../tensor/autodiff.js';
import { Tensor } from '../tensor/tensor.js';
import { resolveMoEConfig, type MoEConfig, type ResolvedMoEConfig } from './config.js';
import { expertChoicePlan, tokenChoicePlan, type DispatchPlan } from './dispatch.js';
import { groupedExpertFFN, type ExpertBlockWeights } from './expert-ffn.js';
import { balanceLoss, importanceLoss, loadLoss, routerZLoss } from './losses.js';

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

function entropyOfRows(p: Float32Array, rows: number, cols: number): number {
  if (rows === 0) return 0;
  let total = 0;
  for (let r = 0; r < rows; r++) {
    let h = 0;
    for (let c = 0; c < cols; c++) {
      const v = p[r * cols + c];
      if (v > 0) h -= v * Math.log(v);
    }
    total += h;
  }
  return total / rows;
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
    this.gate = this.registerModule('gate', new Gate(rows, c.dModel, noisy, c.biasBalancing !== null, init));
    this.experts = this.registerModule(
      'experts',
      new ModuleList(Array.from({ length: c.numExperts }, () => new ExpertFFN(c.dModel, c.dFF, c.expert.gated, init))),
    );
    this.sharedExperts =
      c.numSharedExperts > 0
        ? this.registerModule('shared_experts', new ModuleList(Array.from({ length: c.numSharedExperts }, () => new ExpertFFN(c.dModel, c.sharedDFF, c.expert.gated, init))))
        : null;
  }

  private expertWeights(list: readonly ExpertFFN[]): ExpertBlockWeights {
    return {
      w1: list.map((e) => e.w1.weight),
      w2: list.map((e) => e.w2.weight),
      w3: this.config.expert.gated ? list.map((e) => (e.w3 as Linear).weight) : null,
    };
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
    if (this.sharedExperts) {
      for (const shared of this.sharedExperts.items) out = add(out, shared.forward(xf, c.expert.activation));
    }
    res.output = x.rank === 3 ? reshape(out, x.shape) : out;
    return res;
  }

  private auxAndStats(
    logits: Tensor,
    k: number,
    extra: { importance?: () => Tensor; load?: () => Tensor },
  ): { auxLoss: Tensor; balance: number; z: number } {
    const c = this.config.losses;
    const terms: Tensor[] = [];
    const balanceT = c.balance > 0 ? balanceLoss(logits, k) : noGrad(() => balanceLoss(logits, k));
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
      return { output, routerLogits: logits, auxLoss, plan, stats: this.stats(plan, T, 1, scores.f32, E, balance, z) };
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
    const probs = softmax(selectLogits, -1);
    const choices = noGrad(() => {
      const sel = this.gate.bias ? add(probs, this.gate.bias) : probs;
      return topK(sel, k).indices;
    });
    let gates = gatherAlong(probs, 1, choices); // [T, k]
    if (r.normalize) gates = div(gates, sum(gates, -1, true));
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
    });
    return {
      output,
      routerLogits: logits,
      auxLoss,
      plan,
      routing: { experts, k, gates: gates.f32 },
      stats: this.stats(plan, T, k, probs.f32, E, balance, z),
    };
  }

  /** Gather each expert's rows, run the grouped FFN, and scatter-add back weighted. */
  private combine(xf: Tensor, T: number, plan: DispatchPlan, flatWeights: Tensor): Tensor {
    const xs = gatherRows(xf, plan.tokenIndex);
    const ys = groupedExpertFFN(xs, plan.expertOffsets, this.expertWeights(this.experts.items), this.config.expert.activation);
    const w = reshape(gatherRows(flatWeights, plan.weightIndex), [plan.tokenIndex.length]);
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
    const ys = groupedExpertFFN(slotsByExpert, offsets, this.expertWeights(this.experts.items), c.expert.activation);
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

  private stats(plan: DispatchPlan, T: number, k: number, probs: Float32Array, E: number, balance: number, z: number): MoEStats {
    const tpe = plan.tokensPerExpert;
    const total = tpe.reduce((a, b) => a + b, 0);
    const meanLoad = total / E;
    const assignments = T * k;
    return {
      tokensPerExpert: tpe,
      droppedAssignments: plan.droppedAssignments,
      droppedTokens: plan.droppedTokens,
      dropFraction: assignments === 0 ? 0 : plan.droppedAssignments / assignments,
      routerEntropy: entropyOfRows(probs, T, E),
      loadImbalance: meanLoad === 0 ? 0 : Math.max(...tpe) / meanLoad,
      balanceLoss: balance,
      zLoss: z,
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
