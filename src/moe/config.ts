/**
 * MoE layer configuration and its validation. Every invalid value throws a ConfigError whose
 * field is the dotted config path (`router.k`) and whose value is what was given.
 */
import type { Activation } from '../backend/interface.js';
import { ConfigError } from '../errors.js';

/** Expert feed-forward: w2(act(w1 x) ⊙ w3 x) when gated (GLU, Shazeer 2020), else w2(act(w1 x)). */
export interface ExpertConfig {
  activation: 'relu' | 'gelu' | 'silu';
  gated: boolean;
}

/** Router input jitter (Switch, Fedus et al. 2021): x ⊙ U(1-eps, 1+eps), training only. */
export interface JitterNoise {
  type: 'jitter';
  eps: number;
}
/** Noisy top-k gating (Shazeer et al. 2017): logits + N(0,1)·softplus(x·W_noiseᵀ), training only. */
export interface GaussianNoise {
  type: 'gaussian';
}

/** Auxiliary-loss-free balancing (DeepSeek-V3): selection bias b_e += rate·sign(mean load − load_e) per step. */
export interface BiasBalancingConfig {
  rate: number;
}

/** Token choice: each token picks its top-k experts (Shazeer 2017; Switch k=1; Mixtral k=2). */
export interface TopKRouterConfig {
  type: 'topk';
  k: number;
  /** Renormalise the k picked probabilities to sum to 1 (Mixtral). Default: true for k > 1, false for k = 1 (Switch). */
  normalize?: boolean;
  noise?: JitterNoise | GaussianNoise | null;
  /** null (default) = dropless; else C = ceil(capacityFactor · tokens · k / numExperts) per expert. */
  capacityFactor?: number | null;
  /** Which assignments keep their capacity slot: 'position' (slot-major, token order) or 'score' (V-MoE batch-prioritised). */
  dropPolicy?: 'position' | 'score';
  /** Enforce capacity over the whole batch or per sequence of a [batch, seq, dModel] input. */
  capacityScope?: 'batch' | 'sequence';
  biasBalancing?: BiasBalancingConfig | null;
  /**
   * How router logits become scores: 'softmax' over the experts (default; Switch, Mixtral, Qwen-MoE,
   * OLMoE) or an independent 'sigmoid' per expert (DeepSeek-V3 `scoring_func: "sigmoid"`). Selection
   * uses scores (+ the gate's `e_score_correction_bias` when present); combine weights are the
   * unbiased scores of the chosen experts (renormalised when `normalize`).
   */
  scoring?: 'softmax' | 'sigmoid';
  /**
   * Group-limited selection (DeepSeek-V2 `group_limited_greedy`, DeepSeek-V3 `noaux_tc`): the E
   * experts form `numGroups` equal groups, each token keeps its best `topkGroups` groups and picks
   * its k experts inside them. A group's score is the sum of its 2 best selection scores
   * ('top2sum', DeepSeek-V3 `n_group`/`topk_group`) or its best score ('max', DeepSeek-V2).
   * Experts of dropped groups score 0 for selection (as Hugging Face's masked_fill(…, 0.0)).
   */
  groups?: { numGroups: number; topkGroups: number; groupScore?: 'top2sum' | 'max' } | null;
  /** Multiplier of the routed experts' combine weights (DeepSeek `routed_scaling_factor`). Default 1. */
  routedScalingFactor?: number;
  /**
   * Give the gate an `e_score_correction_bias` buffer added to the scores for selection only, even
   * without bias balancing (DeepSeek-V3 inference: the trained bias comes from the checkpoint).
   * Default false; bias balancing implies it.
   */
  selectionBias?: boolean;
}

/** Expert choice (Zhou et al. 2022): each expert picks its top C = ceil(capacityFactor · tokens / numExperts) tokens. */
export interface ExpertChoiceRouterConfig {
  type: 'expert-choice';
  capacityFactor?: number;
}

/** Soft MoE (Puigcerver et al. 2023): every slot is a softmax-weighted mix of a sequence's tokens. */
export interface SoftRouterConfig {
  type: 'soft';
  slotsPerExpert: number;
}

export type RouterConfig = TopKRouterConfig | ExpertChoiceRouterConfig | SoftRouterConfig;

/** Coefficients of the auxiliary losses summed into `auxLoss` (absent or 0 = off). */
export interface LossConfig {
  /** Hugging Face `load_balancing_loss_func`: E · Σ_e f_e · P_e (Switch/Mixtral). */
  balance?: number;
  /** ST-MoE router z-loss: mean over tokens of logsumexp(logits)². */
  zLoss?: number;
  /** Shazeer 2017 importance loss: CV²(Σ_tokens gates). */
  importance?: number;
  /** Shazeer 2017 load loss: CV² of the smooth noisy-top-k load estimator. */
  load?: number;
  /** DeepSeek-V3 auxiliary-loss-free bias balancing (also accepted as router.biasBalancing). */
  biasBalancing?: BiasBalancingConfig | null;
}

export interface MoEConfig {
  dModel: number;
  dFF: number;
  numExperts: number;
  expert: ExpertConfig;
  router: RouterConfig;
  /** Always-active experts added to the output (DeepSeekMoE). Default 0. */
  numSharedExperts?: number;
  /** Hidden size of each shared expert (default dFF). */
  sharedDFF?: number;
  /**
   * Qwen2-MoE shared-expert gate (`mlp.shared_expert_gate`, a [1, dModel] linear): the shared
   * experts' output is scaled per token by sigmoid(x·wᵀ) before it is added. Default false.
   */
  sharedExpertGate?: boolean;
  losses?: LossConfig;
  /** Seed for weight initialisation and training noise (default 0). */
  seed?: number;
}

/** Resolved group-limited selection. */
export interface ResolvedTopKGroups {
  numGroups: number;
  topkGroups: number;
  groupScore: 'top2sum' | 'max';
}

/** A resolved token-choice router: every default filled in. */
export type ResolvedTopKRouter = Required<Omit<TopKRouterConfig, 'biasBalancing' | 'groups'>> & { groups: ResolvedTopKGroups | null };

/** A validated config with every default filled in. */
export interface ResolvedMoEConfig {
  dModel: number;
  dFF: number;
  numExperts: number;
  expert: { activation: Activation; gated: boolean };
  router: ResolvedTopKRouter | Required<ExpertChoiceRouterConfig> | Required<SoftRouterConfig>;
  numSharedExperts: number;
  sharedDFF: number;
  sharedExpertGate: boolean;
  losses: { balance: number; zLoss: number; importance: number; load: number };
  biasBalancing: BiasBalancingConfig | null;
  seed: number;
}

function posInt(v: unknown, field: string, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ConfigError(field, v, `must be an integer in [${min}, ${max}]`);
  }
  return v;
}

function coef(v: unknown, field: string): number {
  if (v === undefined || v === null) return 0;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new ConfigError(field, v, 'must be a finite number >= 0');
  return v;
}

function capacity(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new ConfigError(field, v, 'must be a finite number > 0');
  return v;
}

function bias(v: unknown, field: string): BiasBalancingConfig | null {
  if (v === undefined || v === null) return null;
  const rate = (v as BiasBalancingConfig).rate;
  if (typeof v !== 'object' || typeof rate !== 'number' || !Number.isFinite(rate) || rate < 0) {
    throw new ConfigError(`${field}.rate`, rate, 'must be a finite number >= 0');
  }
  return { rate };
}

/** Validate a config and fill defaults; throws ConfigError naming the field and value. */
export function resolveMoEConfig(config: MoEConfig): ResolvedMoEConfig {
  if (typeof config !== 'object' || config === null) throw new ConfigError('config', config, 'must be an object');
  const dModel = posInt(config.dModel, 'dModel');
  const dFF = posInt(config.dFF, 'dFF');
  const numExperts = posInt(config.numExperts, 'numExperts', 2, 1024);
  const ex = config.expert;
  if (typeof ex !== 'object' || ex === null) throw new ConfigError('expert', ex, "must be { activation: 'relu' | 'gelu' | 'silu', gated: boolean }");
  if (!['relu', 'gelu', 'silu'].includes(ex.activation)) throw new ConfigError('expert.activation', ex.activation, "must be 'relu', 'gelu' or 'silu'");
  if (typeof ex.gated !== 'boolean') throw new ConfigError('expert.gated', ex.gated, 'must be a boolean');
  const numSharedExperts = config.numSharedExperts === undefined ? 0 : posInt(config.numSharedExperts, 'numSharedExperts', 0, 64);
  const sharedDFF = config.sharedDFF === undefined ? dFF : posInt(config.sharedDFF, 'sharedDFF');
  const sharedExpertGate = config.sharedExpertGate ?? false;
  if (typeof sharedExpertGate !== 'boolean') throw new ConfigError('sharedExpertGate', sharedExpertGate, 'must be a boolean');
  if (sharedExpertGate && numSharedExperts === 0) throw new ConfigError('sharedExpertGate', sharedExpertGate, 'needs numSharedExperts >= 1');
  const r = config.router as RouterConfig | undefined;
  if (typeof r !== 'object' || r === null) throw new ConfigError('router', r, 'must be an object with a type');
  let router: ResolvedMoEConfig['router'];
  let biasCfg = bias(config.losses?.biasBalancing, 'losses.biasBalancing');
  switch (r.type) {
    case 'topk': {
      const k = posInt(r.k, 'router.k', 1, numExperts);
      const normalize = r.normalize === undefined ? k > 1 : r.normalize;
      if (typeof normalize !== 'boolean') throw new ConfigError('router.normalize', r.normalize, 'must be a boolean');
      let noise: TopKRouterConfig['noise'] = null;
      if (r.noise !== undefined && r.noise !== null) {
        if (r.noise.type === 'jitter') {
          const eps = r.noise.eps;
          if (typeof eps !== 'number' || !(eps >= 0 && eps < 1)) throw new ConfigError('router.noise.eps', eps, 'must be a number in [0, 1)');
          noise = { type: 'jitter', eps };
        } else if (r.noise.type === 'gaussian') noise = { type: 'gaussian' };
        else throw new ConfigError('router.noise.type', (r.noise as { type: unknown }).type, "must be 'jitter' or 'gaussian'");
      }
      const capacityFactor = r.capacityFactor === undefined || r.capacityFactor === null ? null : capacity(r.capacityFactor, 'router.capacityFactor');
      const dropPolicy = r.dropPolicy ?? 'position';
      if (dropPolicy !== 'position' && dropPolicy !== 'score') throw new ConfigError('router.dropPolicy', dropPolicy, "must be 'position' or 'score'");
      const capacityScope = r.capacityScope ?? 'batch';
      if (capacityScope !== 'batch' && capacityScope !== 'sequence') throw new ConfigError('router.capacityScope', capacityScope, "must be 'batch' or 'sequence'");
      const rb = bias(r.biasBalancing, 'router.biasBalancing');
      if (rb && biasCfg) throw new ConfigError('router.biasBalancing', r.biasBalancing, 'set biasBalancing in router or in losses, not both');
      biasCfg = rb ?? biasCfg;
      const scoring = r.scoring ?? 'softmax';
      if (scoring !== 'softmax' && scoring !== 'sigmoid') throw new ConfigError('router.scoring', scoring, "must be 'softmax' or 'sigmoid'");
      let groups: ResolvedTopKGroups | null = null;
      if (r.groups !== undefined && r.groups !== null) {
        if (typeof r.groups !== 'object') throw new ConfigError('router.groups', r.groups, 'must be { numGroups, topkGroups, groupScore? } or null');
        const numGroups = posInt(r.groups.numGroups, 'router.groups.numGroups', 1, numExperts);
        if (numExperts % numGroups !== 0) throw new ConfigError('router.groups.numGroups', numGroups, `must divide numExperts (${numExperts})`);
        const topkGroups = posInt(r.groups.topkGroups, 'router.groups.topkGroups', 1, numGroups);
        const groupScore = r.groups.groupScore ?? 'top2sum';
        if (groupScore !== 'top2sum' && groupScore !== 'max') throw new ConfigError('router.groups.groupScore', groupScore, "must be 'top2sum' or 'max'");
        if (groupScore === 'top2sum' && numExperts / numGroups < 2) throw new ConfigError('router.groups.numGroups', numGroups, "'top2sum' needs at least 2 experts per group");
        if (k > topkGroups * (numExperts / numGroups)) throw new ConfigError('router.k', k, `exceeds the experts of the ${topkGroups} kept groups (${topkGroups * (numExperts / numGroups)})`);
        groups = { numGroups, topkGroups, groupScore };
      }
      const routedScalingFactor = r.routedScalingFactor ?? 1;
      if (typeof routedScalingFactor !== 'number' || !Number.isFinite(routedScalingFactor) || routedScalingFactor <= 0) {
        throw new ConfigError('router.routedScalingFactor', routedScalingFactor, 'must be a finite number > 0');
      }
      const selectionBias = r.selectionBias ?? false;
      if (typeof selectionBias !== 'boolean') throw new ConfigError('router.selectionBias', selectionBias, 'must be a boolean');
      router = { type: 'topk', k, normalize, noise, capacityFactor, dropPolicy, capacityScope, scoring, groups, routedScalingFactor, selectionBias } as ResolvedMoEConfig['router'];
      break;
    }
    case 'expert-choice': {
      const capacityFactor = r.capacityFactor === undefined ? 1 : capacity(r.capacityFactor, 'router.capacityFactor');
      router = { type: 'expert-choice', capacityFactor };
      break;
    }
    case 'soft': {
      if (r.slotsPerExpert === undefined) throw new ConfigError('router.slotsPerExpert', undefined, "is required for router.type 'soft'");
      router = { type: 'soft', slotsPerExpert: posInt(r.slotsPerExpert, 'router.slotsPerExpert') };
      break;
    }
    default:
      throw new ConfigError('router.type', (r as { type: unknown }).type, "must be 'topk', 'expert-choice' or 'soft'");
  }
  if (biasCfg && router.type !== 'topk') throw new ConfigError('losses.biasBalancing', biasCfg, "bias balancing applies to router.type 'topk' only");
  const l = config.losses ?? {};
  const losses = {
    balance: coef(l.balance, 'losses.balance'),
    zLoss: coef(l.zLoss, 'losses.zLoss'),
    importance: coef(l.importance, 'losses.importance'),
    load: coef(l.load, 'losses.load'),
  };
  if (router.type === 'soft' && (losses.balance || losses.importance || losses.load)) {
    throw new ConfigError('losses', l, 'Soft MoE does not drop or pick experts: only zLoss applies');
  }
  if (router.type === 'expert-choice' && losses.importance) {
    // The layer has no importance term for expert choice: reject rather than silently ignore the coefficient.
    throw new ConfigError('losses.importance', l.importance, "applies to router.type 'topk' only (expert choice balances by construction)");
  }
  if (losses.load && !(router.type === 'topk' && router.noise?.type === 'gaussian')) {
    throw new ConfigError('losses.load', l.load, "the smooth load estimator needs router.noise { type: 'gaussian' }");
  }
  const seed = config.seed ?? 0;
  if (typeof seed !== 'number' || !Number.isFinite(seed)) throw new ConfigError('seed', seed, 'must be a finite number');
  return { dModel, dFF, numExperts, expert: { activation: ex.activation, gated: ex.gated }, router, numSharedExperts, sharedDFF, sharedExpertGate, losses, biasBalancing: biasCfg, seed };
}
