/**
 * Decoder-only transformer language model whose feed-forward blocks are MoE layers every
 * `moeEvery` layers (Switch/GShard-style interleaving) and dense otherwise; pre-norm RMSNorm,
 * rotary positions, multi-head causal attention, tied LM head (Llama/Mixtral layout).
 *
 * Optional fields generalise it to the Hugging Face MoE families (src/io/hf-import.ts): grouped-
 * query attention (`nKVHeads`), a head size of its own (`headDim`), q/k/v and output biases
 * (Qwen2), RMSNorm on q and k per head (Qwen3) or over the whole projection (OLMoE), q/k/v
 * clipping (OLMoE `clip_qkv`), an untied `lm_head`, layers forced dense (DeepSeek
 * `first_k_dense_replace`, Qwen `mlp_only_layers`), DeepSeek-V2/V3 multi-head latent
 * attention (`mla`) and YaRN rotary scaling (`ropeYarn`). Left unset, each keeps the original behaviour and the resolved config
 * does not even carry the key (so saved configs of existing models stay byte-identical).
 */
import type { Activation } from '../backend/interface.js';
import { ConfigError, ShapeError } from '../errors.js';
import { ExpertFFN, ModuleList, MoELayer, type MoEOutput } from '../moe/layer.js';
import type { ExpertConfig, LossConfig, MoEConfig, RouterConfig } from '../moe/config.js';
import { add, maximum, minimum, mul, neg } from '../ops/elementwise.js';
import { matmul } from '../ops/matmul.js';
import { applyRotary } from '../ops/rope.js';
import { concat, expand, reshape, slice } from '../ops/shape.js';
import { scaledDotProductAttention } from '../ops/attention.js';
import { crossEntropy } from '../ops/loss.js';
import { Generator } from '../random.js';
import { noGrad } from '../tensor/autodiff.js';
import { Tensor, type IndexLike } from '../tensor/tensor.js';
import { Embedding, Linear, RMSNorm } from './layers.js';
import { Module } from './module.js';

/** The MoE part of a model config: everything of MoEConfig but the sizes the model sets. */
export interface ModelMoEConfig {
  numExperts: number;
  router: RouterConfig;
  /** Expert FFN kind (default: the model's ffn). */
  expert?: ExpertConfig;
  /** Expert hidden size (default: the model's dFF). */
  dFF?: number;
  numSharedExperts?: number;
  sharedDFF?: number;
  /** Qwen2-MoE sigmoid gate on the shared experts' output (see MoEConfig.sharedExpertGate). */
  sharedExpertGate?: boolean;
  losses?: LossConfig;
}

/**
 * DeepSeek-V2/V3 multi-head latent attention sizes (Hugging Face DeepseekV3Config field in
 * brackets). Queries: q_b_proj(RMSNorm(q_a_proj x)) ([q_lora_rank]; or one q_proj when null);
 * keys and values: kv_a_proj_with_mqa x = [c | k_rope], kv_b_proj(RMSNorm(c)) = per head
 * [k_nope | v]; the single k_rope head is shared by every head. Rotary positions act on the
 * rope part only; the score scale is `attentionScale` (default 1/√(qk_nope + qk_rope)).
 */
export interface MLAConfig {
  /** [q_lora_rank] null: a plain q_proj. */
  qLoraRank: number | null;
  /** [kv_lora_rank] */
  kvLoraRank: number;
  /** [qk_nope_head_dim] */
  qkNopeHeadDim: number;
  /** [qk_rope_head_dim] (even) */
  qkRopeHeadDim: number;
  /** [v_head_dim] */
  vHeadDim: number;
}

/**
 * YaRN rotary scaling (Peng et al. 2023) as Hugging Face's `_compute_yarn_parameters` computes it
 * (config.json `rope_scaling` / `rope_parameters` with type "yarn"): per frequency, a ramp between
 * the original inverse frequency (extrapolation) and the frequency divided by `factor`
 * (interpolation) over the dimension range where the original context makes betaFast..betaSlow
 * rotations; cos and sin are multiplied by `attentionFactor`. The importer resolves HF's defaults
 * (factor = max_position_embeddings / original_max_position_embeddings when the latter is given,
 * attentionFactor from mscale / mscale_all_dim).
 */
export interface YarnRopeConfig {
  factor: number;
  originalMaxPositionEmbeddings: number;
  /** Default 32. */
  betaFast?: number;
  /** Default 1. */
  betaSlow?: number;
  /** Multiplier of cos and sin. Default 0.1·ln(factor) + 1 (1 when factor ≤ 1). */
  attentionFactor?: number;
  /** Round the correction range outward to whole dimensions (default true). */
  truncate?: boolean;
}

/** YaRN inverse frequencies [dim/2] in float32 arithmetic, step for step as Hugging Face computes them. */
export function yarnInverseFrequencies(dim: number, base: number, y: YarnRopeConfig): Float32Array {
  const f = Math.fround;
  const half = dim / 2;
  const correctionDim = (rot: number): number => (dim * Math.log(y.originalMaxPositionEmbeddings / (rot * 2 * Math.PI))) / (2 * Math.log(base));
  let low = correctionDim(y.betaFast ?? 32), high = correctionDim(y.betaSlow ?? 1);
  if (y.truncate ?? true) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  low = Math.max(low, 0);
  high = Math.min(high, dim - 1);
  if (low === high) high += 0.001;
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const posFreq = f(Math.pow(base, f((2 * i) / dim)));
    const extrap = f(1 / posFreq), interp = f(1 / f(y.factor * posFreq));
    const ramp = f(Math.min(1, Math.max(0, f(f(i - low) / f(high - low)))));
    const extrapFactor = f(1 - ramp);
    out[i] = f(f(interp * f(1 - extrapFactor)) + f(extrap * extrapFactor));
  }
  return out;
}

/** The default YaRN attention factor: 0.1·ln(factor) + 1 (Hugging Face get_mscale with mscale 1). */
export function yarnMscale(factor: number, mscale = 1): number {
  return factor <= 1 ? 1 : 0.1 * mscale * Math.log(factor) + 1;
}

/** Rotary embedding with a table of its own (YaRN), from differentiable ops, for x [B, T, H, D] at positions start.. */
class ScaledRotary {
  private cos = new Float32Array(0);
  private sin = new Float32Array(0);
  private rows = 0;
  private readonly invFreq: Float32Array;
  private readonly scale: number;
  constructor(readonly dim: number, base: number, yarn: YarnRopeConfig) {
    this.invFreq = yarnInverseFrequencies(dim, base, yarn);
    this.scale = yarn.attentionFactor ?? yarnMscale(yarn.factor);
  }

  private ensure(rows: number): void {
    if (rows <= this.rows) return;
    const n = Math.max(rows, 2 * this.rows), D = this.dim, half = D / 2;
    const cos = new Float32Array(n * D), sin = new Float32Array(n * D);
    for (let p = 0; p < n; p++) {
      for (let i = 0; i < half; i++) {
        const ang = Math.fround(p * this.invFreq[i]);
        const c = Math.fround(Math.cos(ang) * this.scale), s = Math.fround(Math.sin(ang) * this.scale);
        cos[p * D + i] = cos[p * D + half + i] = c;
        sin[p * D + i] = sin[p * D + half + i] = s;
      }
    }
    this.cos = cos;
    this.sin = sin;
    this.rows = n;
  }

  /** x·cos + rotate_half(x)·sin with rotate_half([x₁ | x₂]) = [−x₂ | x₁]. */
  apply(x: Tensor, start: number): Tensor {
    const T = x.shape[1], D = this.dim, half = D / 2;
    this.ensure(start + T);
    const cos = new Tensor(this.cos.slice(start * D, (start + T) * D), [1, T, 1, D]);
    const sin = new Tensor(this.sin.slice(start * D, (start + T) * D), [1, T, 1, D]);
    const rotated = concat([neg(slice(x, 3, half, D)), slice(x, 3, 0, half)], 3);
    return add(mul(x, cos), mul(rotated, sin));
  }
}

export interface TransformerLMConfig {
  vocabSize: number;
  dModel: number;
  nLayers: number;
  nHeads: number;
  /** Hidden size of dense feed-forward blocks (and of experts unless moe.dFF is set). */
  dFF: number;
  maxSeqLen: number;
  /** Dense FFN kind (default SiLU-gated, as Llama/Mixtral). */
  ffn?: ExpertConfig;
  /** null / absent: a dense model. */
  moe?: ModelMoEConfig | null;
  /** Layer i is MoE when i % moeEvery === moeEvery - 1 (1 = every layer; 2 = every other). Default 1. */
  moeEvery?: number;
  ropeTheta?: number;
  normEps?: number;
  seed?: number;
  /** Key/value heads for grouped-query attention (Ainslie et al. 2023; HF `num_key_value_heads`). Default nHeads. */
  nKVHeads?: number;
  /** Per-head size (HF `head_dim`, e.g. Qwen3: 128 with hidden 2048 and 32 heads). Default dModel / nHeads. */
  headDim?: number;
  /** Biases on q/k/v projections (Qwen2-MoE `qkv_bias`; Llama-style `attention_bias`). Default false. */
  attentionBias?: boolean;
  /** Bias on the output projection o_proj (Llama-style `attention_bias`; not Qwen2). Default false. */
  attentionOutputBias?: boolean;
  /**
   * RMSNorm (eps normEps) on queries and keys before rotary positions: 'head' normalises each head
   * with a [headDim] weight (Qwen3 q_norm/k_norm), 'full' the whole projection with a
   * [heads·headDim] weight (OLMoE q_norm/k_norm). Default null (none).
   */
  qkNorm?: 'head' | 'full' | null;
  /** Clamp q, k, v to [-c, c] after the projections (and the 'full' norm) (OLMoE `clip_qkv`). Default null. */
  clipQKV?: number | null;
  /** Multiplier of q·kᵀ (default 1/√(query head size)). */
  attentionScale?: number | null;
  /** The LM head is the embedding matrix (default true); false gives a separate `lm_head.weight` (HF `tie_word_embeddings: false`). */
  tieEmbeddings?: boolean;
  /** Layers whose FFN is dense (size dFF) whatever moeEvery says (DeepSeek `first_k_dense_replace`, Qwen `mlp_only_layers`). */
  denseLayers?: number[];
  /** Multi-head latent attention (DeepSeek-V2/V3) instead of q/k/v/o attention. */
  mla?: MLAConfig | null;
  /** YaRN-scaled rotary positions (HF `rope_scaling` type "yarn"); default null (plain RoPE with ropeTheta). */
  ropeYarn?: YarnRopeConfig | null;
}

/** Options of CausalSelfAttention beyond the original (dModel, nHeads, ropeTheta) layout; see TransformerLMConfig. */
export interface SelfAttentionOptions {
  nKVHeads?: number;
  headDim?: number;
  attentionBias?: boolean;
  attentionOutputBias?: boolean;
  qkNorm?: 'head' | 'full' | null;
  clipQKV?: number | null;
  attentionScale?: number | null;
  normEps?: number;
  ropeYarn?: YarnRopeConfig | null;
}

/** One layer's cache slot: keys/values seen so far, and how to replace them. */
export interface AttentionCacheSlot {
  entry: { k: Tensor; v: Tensor } | null;
  set: (kv: { k: Tensor; v: Tensor }) => void;
}

function clip(t: Tensor, c: number): Tensor {
  return minimum(maximum(t, Tensor.scalar(-c)), Tensor.scalar(c));
}

/** Key/value cache for incremental decoding: per layer [B, T, H, Dh] tensors. */
export class KVCache {
  readonly layers: Array<{ k: Tensor; v: Tensor } | null>;
  constructor(nLayers: number) {
    this.layers = new Array(nLayers).fill(null);
  }
  /** Cached positions (0 when empty). */
  get length(): number {
    return this.layers[0]?.k.shape[1] ?? 0;
  }
}

/**
 * Multi-head causal self-attention with rotary positions (q/k/v/o projections, no biases by
 * default), optionally grouped-query (nKVHeads < nHeads; the cache keeps only the KV heads), with
 * biases, q/k RMSNorm and q/k/v clipping (see SelfAttentionOptions).
 */
export class CausalSelfAttention extends Module {
  readonly nHeads: number;
  readonly nKVHeads: number;
  readonly headDim: number;
  readonly ropeTheta: number;
  readonly qkNorm: 'head' | 'full' | null;
  readonly clipQKV: number | null;
  readonly scale: number | undefined;
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly o_proj: Linear;
  readonly q_norm: RMSNorm | null;
  readonly k_norm: RMSNorm | null;
  private readonly yarn: ScaledRotary | null;
  constructor(dModel: number, nHeads: number, ropeTheta: number, generator: Generator, opts: SelfAttentionOptions = {}) {
    super();
    this.nHeads = nHeads;
    this.nKVHeads = opts.nKVHeads ?? nHeads;
    this.headDim = opts.headDim ?? dModel / nHeads;
    this.ropeTheta = ropeTheta;
    this.qkNorm = opts.qkNorm ?? null;
    this.clipQKV = opts.clipQKV ?? null;
    this.scale = opts.attentionScale ?? undefined;
    const qDim = nHeads * this.headDim, kvDim = this.nKVHeads * this.headDim;
    const qkvBias = opts.attentionBias ?? false;
    this.q_proj = this.registerModule('q_proj', new Linear(dModel, qDim, { bias: qkvBias, generator }));
    this.k_proj = this.registerModule('k_proj', new Linear(dModel, kvDim, { bias: qkvBias, generator }));
    this.v_proj = this.registerModule('v_proj', new Linear(dModel, kvDim, { bias: qkvBias, generator }));
    this.o_proj = this.registerModule('o_proj', new Linear(qDim, dModel, { bias: opts.attentionOutputBias ?? false, generator }));
    const eps = opts.normEps ?? 1e-6;
    this.q_norm = this.qkNorm ? this.registerModule('q_norm', new RMSNorm(this.qkNorm === 'head' ? this.headDim : qDim, eps)) : null;
    this.k_norm = this.qkNorm ? this.registerModule('k_norm', new RMSNorm(this.qkNorm === 'head' ? this.headDim : kvDim, eps)) : null;
    this.yarn = opts.ropeYarn ? new ScaledRotary(this.headDim, ropeTheta, opts.ropeYarn) : null;
  }

  /** x [B, T, dModel] → [B, T, dModel]; with a cache entry, attends over cached + new keys. */
  forward(x: Tensor, cache?: AttentionCacheSlot): Tensor {
    const [B, T] = x.shape;
    const H = this.nHeads, Hkv = this.nKVHeads, Dh = this.headDim;
    let q = this.q_proj.forward(x), k = this.k_proj.forward(x), v = this.v_proj.forward(x);
    if (this.qkNorm === 'full' && this.q_norm && this.k_norm) {
      q = this.q_norm.forward(q);
      k = this.k_norm.forward(k);
    }
    if (this.clipQKV !== null) {
      q = clip(q, this.clipQKV);
      k = clip(k, this.clipQKV);
      v = clip(v, this.clipQKV);
    }
    // Heads stay in the projections' [B, T, H, Dh] layout: attention and rotary read it directly.
    let q4 = reshape(q, [B, T, H, Dh]), k4 = reshape(k, [B, T, Hkv, Dh]);
    let v4 = reshape(v, [B, T, Hkv, Dh]);
    if (this.qkNorm === 'head' && this.q_norm && this.k_norm) {
      q4 = this.q_norm.forward(q4);
      k4 = this.k_norm.forward(k4);
    }
    const start = cache?.entry ? cache.entry.k.shape[1] : 0;
    const rope = { startPos: start, base: this.ropeTheta, layout: 'bthd' as const };
    q4 = this.yarn ? this.yarn.apply(q4, start) : applyRotary(q4, rope);
    k4 = this.yarn ? this.yarn.apply(k4, start) : applyRotary(k4, rope);
    if (cache) {
      if (cache.entry) {
        k4 = concat([cache.entry.k, k4], 1);
        v4 = concat([cache.entry.v, v4], 1);
      }
      cache.set({ k: k4.detach(), v: v4.detach() });
    }
    // Grouped-query attention: query head h reads key/value head ⌊h·Hkv/H⌋ (HF repeat_kv), no copies.
    const o = scaledDotProductAttention(q4, k4, v4, { causal: true, layout: 'bthd', scale: this.scale });
    return this.o_proj.forward(reshape(o, [B, T, H * Dh]));
  }
}

/**
 * DeepSeek-V2/V3 multi-head latent attention (see MLAConfig), written from Hugging Face's
 * DeepseekV3Attention with rotate-half rotary positions on the rope part (interleaved-rope
 * checkpoints are permuted to this layout at import). Heads stay in [B, T, H, ·] layout; the
 * cache holds the expanded per-head keys and values.
 */
export class MultiHeadLatentAttention extends Module {
  readonly nHeads: number;
  readonly mla: MLAConfig;
  readonly ropeTheta: number;
  readonly scale: number;
  readonly q_proj: Linear | null;
  readonly q_a_proj: Linear | null;
  readonly q_a_layernorm: RMSNorm | null;
  readonly q_b_proj: Linear | null;
  readonly kv_a_proj_with_mqa: Linear;
  readonly kv_a_layernorm: RMSNorm;
  readonly kv_b_proj: Linear;
  readonly o_proj: Linear;
  private readonly yarn: ScaledRotary | null;
  constructor(dModel: number, nHeads: number, mla: MLAConfig, ropeTheta: number, generator: Generator, opts: SelfAttentionOptions = {}) {
    super();
    this.nHeads = nHeads;
    this.mla = mla;
    this.ropeTheta = ropeTheta;
    const qkHead = mla.qkNopeHeadDim + mla.qkRopeHeadDim;
    this.scale = opts.attentionScale ?? 1 / Math.sqrt(qkHead);
    const bias = opts.attentionBias ?? false;
    // HF DeepseekV3RMSNorm(rank) keeps its default eps 1e-6 for the two latent norms.
    if (mla.qLoraRank === null) {
      this.q_proj = this.registerModule('q_proj', new Linear(dModel, nHeads * qkHead, { bias: false, generator }));
      this.q_a_proj = this.q_a_layernorm = this.q_b_proj = null;
    } else {
      this.q_proj = null;
      this.q_a_proj = this.registerModule('q_a_proj', new Linear(dModel, mla.qLoraRank, { bias, generator }));
      this.q_a_layernorm = this.registerModule('q_a_layernorm', new RMSNorm(mla.qLoraRank, 1e-6));
      this.q_b_proj = this.registerModule('q_b_proj', new Linear(mla.qLoraRank, nHeads * qkHead, { bias: false, generator }));
    }
    this.kv_a_proj_with_mqa = this.registerModule('kv_a_proj_with_mqa', new Linear(dModel, mla.kvLoraRank + mla.qkRopeHeadDim, { bias, generator }));
    this.kv_a_layernorm = this.registerModule('kv_a_layernorm', new RMSNorm(mla.kvLoraRank, 1e-6));
    this.kv_b_proj = this.registerModule('kv_b_proj', new Linear(mla.kvLoraRank, nHeads * (mla.qkNopeHeadDim + mla.vHeadDim), { bias: false, generator }));
    this.o_proj = this.registerModule('o_proj', new Linear(nHeads * mla.vHeadDim, dModel, { bias: opts.attentionOutputBias ?? false, generator }));
    this.yarn = opts.ropeYarn ? new ScaledRotary(mla.qkRopeHeadDim, ropeTheta, opts.ropeYarn) : null;
  }

  forward(x: Tensor, cache?: AttentionCacheSlot): Tensor {
    const [B, T] = x.shape;
    const H = this.nHeads, m = this.mla;
    const nope = m.qkNopeHeadDim, rope = m.qkRopeHeadDim, qkHead = nope + rope;
    const start = cache?.entry ? cache.entry.k.shape[1] : 0;
    const ropeOpts = { startPos: start, base: this.ropeTheta, layout: 'bthd' as const };
    const qFlat = this.q_proj ? this.q_proj.forward(x) : (this.q_b_proj as Linear).forward((this.q_a_layernorm as RMSNorm).forward((this.q_a_proj as Linear).forward(x)));
    const q = reshape(qFlat, [B, T, H, qkHead]);
    const rot = (t: Tensor): Tensor => (this.yarn ? this.yarn.apply(t, start) : applyRotary(t, ropeOpts));
    const qRot = rot(slice(q, 3, nope, qkHead));
    const ckv = this.kv_a_proj_with_mqa.forward(x); // [B, T, kvRank + rope]
    const kv = reshape(this.kv_b_proj.forward(this.kv_a_layernorm.forward(slice(ckv, 2, 0, m.kvLoraRank))), [B, T, H, nope + m.vHeadDim]);
    // The single rope key head, shared by every head.
    const kRot = rot(reshape(slice(ckv, 2, m.kvLoraRank, m.kvLoraRank + rope), [B, T, 1, rope]));
    const qs = nope > 0 ? concat([slice(q, 3, 0, nope), qRot], 3) : qRot;
    const kRotH = expand(kRot, [B, T, H, rope]);
    let ks = nope > 0 ? concat([slice(kv, 3, 0, nope), kRotH], 3) : kRotH;
    let vs = slice(kv, 3, nope, nope + m.vHeadDim);
    if (cache) {
      if (cache.entry) {
        ks = concat([cache.entry.k, ks], 1);
        vs = concat([cache.entry.v, vs], 1);
      }
      cache.set({ k: ks.detach(), v: vs.detach() });
    }
    const o = scaledDotProductAttention(qs, ks, vs, { causal: true, layout: 'bthd', scale: this.scale }); // [B, T, H, v]
    return this.o_proj.forward(reshape(o, [B, T, H * m.vHeadDim]));
  }
}

/** A dense feed-forward block with the same names as an expert (w1, w2, w3). */
export class DenseFFN extends Module {
  readonly ffn: ExpertFFN;
  readonly activation: Activation;
  constructor(dModel: number, dFF: number, kind: ExpertConfig, generator: Generator) {
    super();
    this.activation = kind.activation;
    this.ffn = new ExpertFFN(dModel, dFF, kind.gated, generator);
    for (const [n, m] of this.ffn.namedChildren()) this.registerModule(n, m);
  }
  forward(x: Tensor): Tensor {
    return this.ffn.forward(x, this.activation);
  }
}

/** One pre-norm decoder block: x + attn(norm(x)), then h + ffn(norm(h)). */
export class DecoderLayer extends Module {
  readonly input_layernorm: RMSNorm;
  readonly self_attn: CausalSelfAttention | MultiHeadLatentAttention;
  readonly post_attention_layernorm: RMSNorm;
  readonly mlp: MoELayer | DenseFFN;
  constructor(c: ResolvedLMConfig, isMoE: boolean, generator: Generator, layerSeed: number) {
    super();
    this.input_layernorm = this.registerModule('input_layernorm', new RMSNorm(c.dModel, c.normEps));
    const attnOpts: SelfAttentionOptions = {
      nKVHeads: c.nKVHeads,
      headDim: c.headDim,
      attentionBias: c.attentionBias,
      attentionOutputBias: c.attentionOutputBias,
      qkNorm: c.qkNorm,
      clipQKV: c.clipQKV,
      attentionScale: c.attentionScale,
      normEps: c.normEps,
      ropeYarn: c.ropeYarn,
    };
    this.self_attn = this.registerModule(
      'self_attn',
      c.mla ? new MultiHeadLatentAttention(c.dModel, c.nHeads, c.mla, c.ropeTheta, generator, attnOpts) : new CausalSelfAttention(c.dModel, c.nHeads, c.ropeTheta, generator, attnOpts),
    );
    this.post_attention_layernorm = this.registerModule('post_attention_layernorm', new RMSNorm(c.dModel, c.normEps));
    if (isMoE && c.moe) {
      const m = c.moe;
      const cfg: MoEConfig = {
        dModel: c.dModel,
        dFF: m.dFF ?? c.dFF,
        numExperts: m.numExperts,
        expert: m.expert ?? c.ffn,
        router: m.router,
        numSharedExperts: m.numSharedExperts,
        sharedDFF: m.sharedDFF,
        sharedExpertGate: m.sharedExpertGate,
        losses: m.losses,
        seed: layerSeed,
      };
      this.mlp = this.registerModule('mlp', new MoELayer(cfg));
    } else {
      this.mlp = this.registerModule('mlp', new DenseFFN(c.dModel, c.dFF, c.ffn, generator));
    }
  }

  forward(x: Tensor, cache?: AttentionCacheSlot): { h: Tensor; moe: MoEOutput | null } {
    const h = add(x, this.self_attn.forward(this.input_layernorm.forward(x), cache));
    const normed = this.post_attention_layernorm.forward(h);
    if (this.mlp instanceof MoELayer) {
      const out = this.mlp.forward(normed);
      return { h: add(h, out.output), moe: out };
    }
    return { h: add(h, this.mlp.forward(normed)), moe: null };
  }
}

/** The optional architecture keys: present in a resolved config only when the input set them. */
type ArchitectureKeys =
  | 'nKVHeads' | 'headDim' | 'attentionBias' | 'attentionOutputBias' | 'qkNorm' | 'clipQKV' | 'attentionScale' | 'tieEmbeddings' | 'denseLayers' | 'mla' | 'ropeYarn';

/** A config with every default filled in (the architecture keys stay absent when unset: see the module doc). */
export interface ResolvedLMConfig extends Required<Omit<TransformerLMConfig, 'moe' | ArchitectureKeys>>, Pick<TransformerLMConfig, ArchitectureKeys> {
  moe: ModelMoEConfig | null;
}

function int(v: unknown, field: string, min = 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new ConfigError(field, v, `must be an integer >= ${min}`);
  return v;
}

/** Validate a language-model config (ConfigError names the field) and fill defaults. */
export function resolveLMConfig(c: TransformerLMConfig): ResolvedLMConfig {
  if (typeof c !== 'object' || c === null) throw new ConfigError('config', c, 'must be an object');
  const r: ResolvedLMConfig = {
    vocabSize: int(c.vocabSize, 'vocabSize'),
    dModel: int(c.dModel, 'dModel'),
    nLayers: int(c.nLayers, 'nLayers'),
    nHeads: int(c.nHeads, 'nHeads'),
    dFF: int(c.dFF, 'dFF'),
    maxSeqLen: int(c.maxSeqLen, 'maxSeqLen'),
    ffn: c.ffn ?? { activation: 'silu', gated: true },
    moe: c.moe ?? null,
    moeEvery: c.moeEvery === undefined ? 1 : int(c.moeEvery, 'moeEvery'),
    ropeTheta: c.ropeTheta ?? 10000,
    normEps: c.normEps ?? 1e-6,
    seed: c.seed ?? 0,
  };
  resolveArchitecture(c, r);
  if (r.mla) {
    // MLA has its own head sizes (checked in resolveArchitecture).
  } else if (r.headDim !== undefined) {
    if (r.headDim % 2 !== 0) throw new ConfigError('headDim', r.headDim, 'must be even for rotary positions');
  } else {
    if (r.dModel % r.nHeads !== 0) throw new ConfigError('nHeads', r.nHeads, `must divide dModel (${r.dModel})`);
    if ((r.dModel / r.nHeads) % 2 !== 0) throw new ConfigError('nHeads', r.nHeads, `head size dModel/nHeads = ${r.dModel / r.nHeads} must be even for rotary positions`);
  }
  if (r.moe) {
    const t = r.moe.router?.type;
    if (t === 'expert-choice' || t === 'soft') {
      throw new ConfigError('moe.router.type', t, "is not causal (it mixes tokens across the sequence/batch); a language model needs a token-choice router ('topk')");
    }
  }
  return r;
}

function bool(v: unknown, field: string): boolean {
  if (typeof v !== 'boolean') throw new ConfigError(field, v, 'must be a boolean');
  return v;
}

/** Validate the optional architecture keys of `c` and copy the ones that are set into `r`. */
function resolveArchitecture(c: TransformerLMConfig, r: ResolvedLMConfig): void {
  if (c.nKVHeads !== undefined) {
    r.nKVHeads = int(c.nKVHeads, 'nKVHeads');
    if (r.nHeads % r.nKVHeads !== 0) throw new ConfigError('nKVHeads', r.nKVHeads, `must divide nHeads (${r.nHeads})`);
  }
  if (c.headDim !== undefined) r.headDim = int(c.headDim, 'headDim');
  if (c.attentionBias !== undefined) r.attentionBias = bool(c.attentionBias, 'attentionBias');
  if (c.attentionOutputBias !== undefined) r.attentionOutputBias = bool(c.attentionOutputBias, 'attentionOutputBias');
  if (c.qkNorm !== undefined) {
    if (c.qkNorm !== null && c.qkNorm !== 'head' && c.qkNorm !== 'full') throw new ConfigError('qkNorm', c.qkNorm, "must be 'head', 'full' or null");
    r.qkNorm = c.qkNorm;
  }
  if (c.clipQKV !== undefined) {
    if (c.clipQKV !== null && !(typeof c.clipQKV === 'number' && Number.isFinite(c.clipQKV) && c.clipQKV > 0)) throw new ConfigError('clipQKV', c.clipQKV, 'must be a finite number > 0 or null');
    r.clipQKV = c.clipQKV;
  }
  if (c.attentionScale !== undefined) {
    if (c.attentionScale !== null && !(typeof c.attentionScale === 'number' && Number.isFinite(c.attentionScale) && c.attentionScale > 0)) {
      throw new ConfigError('attentionScale', c.attentionScale, 'must be a finite number > 0 or null');
    }
    r.attentionScale = c.attentionScale;
  }
  if (c.tieEmbeddings !== undefined) r.tieEmbeddings = bool(c.tieEmbeddings, 'tieEmbeddings');
  if (c.denseLayers !== undefined) {
    if (!Array.isArray(c.denseLayers)) throw new ConfigError('denseLayers', c.denseLayers, 'must be an array of layer indices');
    c.denseLayers.forEach((l, i) => int(l, `denseLayers[${i}]`, 0));
    const bad = c.denseLayers.find((l) => l >= r.nLayers);
    if (bad !== undefined) throw new ConfigError('denseLayers', c.denseLayers, `layer ${bad} is beyond nLayers (${r.nLayers})`);
    r.denseLayers = [...c.denseLayers];
  }
  if (c.mla !== undefined && c.mla !== null) {
    const m = c.mla;
    if (typeof m !== 'object') throw new ConfigError('mla', m, 'must be { qLoraRank, kvLoraRank, qkNopeHeadDim, qkRopeHeadDim, vHeadDim } or null');
    const mla: MLAConfig = {
      qLoraRank: m.qLoraRank === null ? null : int(m.qLoraRank, 'mla.qLoraRank'),
      kvLoraRank: int(m.kvLoraRank, 'mla.kvLoraRank'),
      qkNopeHeadDim: int(m.qkNopeHeadDim, 'mla.qkNopeHeadDim', 0),
      qkRopeHeadDim: int(m.qkRopeHeadDim, 'mla.qkRopeHeadDim'),
      vHeadDim: int(m.vHeadDim, 'mla.vHeadDim'),
    };
    if (mla.qkRopeHeadDim % 2 !== 0) throw new ConfigError('mla.qkRopeHeadDim', mla.qkRopeHeadDim, 'must be even for rotary positions');
    for (const k of ['nKVHeads', 'headDim', 'qkNorm', 'clipQKV'] as const) {
      if (c[k] !== undefined && c[k] !== null && !(k === 'nKVHeads' && c[k] === r.nHeads)) throw new ConfigError(k, c[k], 'does not apply to multi-head latent attention (mla)');
    }
    r.mla = mla;
  } else if (c.mla === null) r.mla = null;
  if (c.ropeYarn !== undefined && c.ropeYarn !== null) {
    const y = c.ropeYarn;
    const pos = (v: unknown, field: string, optional = false): void => {
      if (optional && v === undefined) return;
      if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new ConfigError(field, v, 'must be a finite number > 0');
    };
    if (typeof y !== 'object') throw new ConfigError('ropeYarn', y, 'must be { factor, originalMaxPositionEmbeddings, ... } or null');
    pos(y.factor, 'ropeYarn.factor');
    pos(y.originalMaxPositionEmbeddings, 'ropeYarn.originalMaxPositionEmbeddings');
    pos(y.betaFast, 'ropeYarn.betaFast', true);
    pos(y.betaSlow, 'ropeYarn.betaSlow', true);
    pos(y.attentionFactor, 'ropeYarn.attentionFactor', true);
    if (y.truncate !== undefined && typeof y.truncate !== 'boolean') throw new ConfigError('ropeYarn.truncate', y.truncate, 'must be a boolean');
    r.ropeYarn = { ...y };
  } else if (c.ropeYarn === null) r.ropeYarn = null;
}

/** What a language-model forward returns. */
export interface LMOutput {
  /** [B, T, vocabSize] */
  logits: Tensor;
  /** Σ of every MoE layer's auxLoss (scalar; 0 for a dense model). */
  auxLoss: Tensor;
  /** Per MoE layer, in depth order: its layer index and forward output (stats, routing). */
  moe: Array<{ layer: number; out: MoEOutput }>;
}

/** Decoder-only MoE transformer LM (Mixtral-like layout; see module doc). */
export class MoETransformerLM extends Module {
  readonly config: ResolvedLMConfig;
  readonly embed_tokens: Embedding;
  readonly layers: ModuleList<DecoderLayer>;
  readonly norm: RMSNorm;
  /** The untied output projection [vocab, dModel] when config.tieEmbeddings is false, else null. */
  readonly lm_head: Linear | null;

  constructor(config: TransformerLMConfig) {
    super();
    const c = (this.config = resolveLMConfig(config));
    const g = new Generator(c.seed);
    this.embed_tokens = this.registerModule('embed_tokens', new Embedding(c.vocabSize, c.dModel, { generator: g }));
    // GPT-2 style N(0, 0.02) embeddings: with a tied head, N(0, 1) would start with huge logits.
    const w = this.embed_tokens.weight.data as Float32Array;
    for (let i = 0; i < w.length; i++) w[i] *= 0.02;
    this.layers = this.registerModule(
      'layers',
      new ModuleList(
        Array.from({ length: c.nLayers }, (_, i) => {
          const isMoE = c.moe !== null && i % c.moeEvery === c.moeEvery - 1 && !(c.denseLayers ?? []).includes(i);
          return new DecoderLayer(c, isMoE, g, c.seed * 1000 + i + 1);
        }),
      ),
    );
    this.norm = this.registerModule('norm', new RMSNorm(c.dModel, c.normEps));
    this.lm_head = c.tieEmbeddings === false ? this.registerModule('lm_head', new Linear(c.dModel, c.vocabSize, { bias: false, generator: g })) : null;
  }

  /** Indices of the layers whose feed-forward is an MoE layer. */
  moeLayerIndices(): number[] {
    return this.layers.items.flatMap((l, i) => (l.mlp instanceof MoELayer ? [i] : []));
  }

  /** The MoE layers themselves (for bias balancing updates, stats). */
  moeLayers(): MoELayer[] {
    return this.layers.items.flatMap((l) => (l.mlp instanceof MoELayer ? [l.mlp] : []));
  }

  /** ids [B, T] (int32) → logits [B, T, vocab]; with a cache, T new tokens after the cached ones. */
  forward(ids: Tensor, opts?: { cache?: KVCache }): LMOutput {
    const c = this.config;
    if (ids.rank !== 2 || ids.dtype !== 'int32') throw new ShapeError('ids', ids.shape, 'must be an int32 tensor [batch, seq]');
    const [B, T] = ids.shape;
    const past = opts?.cache?.length ?? 0;
    if (past + T > c.maxSeqLen) throw new ShapeError('ids', ids.shape, `sequence length ${past + T} exceeds maxSeqLen ${c.maxSeqLen}`);
    let h = this.embed_tokens.forward(ids); // [B, T, d]
    const moe: LMOutput['moe'] = [];
    let auxLoss: Tensor | null = null;
    this.layers.items.forEach((layer, i) => {
      const cache = opts?.cache;
      const res = layer.forward(h, cache ? { entry: cache.layers[i], set: (kv) => (cache.layers[i] = kv) } : undefined);
      h = res.h;
      if (res.moe) {
        moe.push({ layer: i, out: res.moe });
        auxLoss = auxLoss ? add(auxLoss, res.moe.auxLoss) : res.moe.auxLoss;
      }
    });
    h = this.norm.forward(h);
    const head = this.lm_head ? this.lm_head.weight : this.embed_tokens.weight;
    const logits = reshape(matmul(reshape(h, [B * T, c.dModel]), head, { transB: true }), [B, T, c.vocabSize]);
    return { logits, auxLoss: auxLoss ?? Tensor.scalar(0), moe };
  }

  /** Mean next-token cross-entropy of ids [B, T] predicting targets [B, T] (ignoreIndex -100), plus the output. */
  loss(ids: Tensor, targets: IndexLike): { loss: Tensor; out: LMOutput } {
    const out = this.forward(ids);
    const [B, T] = ids.shape;
    const loss = crossEntropy(reshape(out.logits, [B * T, this.config.vocabSize]), targets);
    return { loss, out };
  }

  /** Active parameters per token: embeddings + attention + norms + k experts (+ shared) per MoE layer. */
  activeParameters(): number {
    let total = 0;
    for (const [name, t] of this.namedParameters()) {
      const m = /^layers\.(\d+)\.mlp\.experts\.(\d+)\./.exec(name);
      if (!m) {
        if (!name.includes('.mlp.gate.noise.')) total += t.size;
        continue;
      }
      const layer = this.layers.items[Number(m[1])].mlp as MoELayer;
      const r = layer.config.router;
      const k = r.type === 'topk' ? r.k : 1;
      total += (t.size * k) / layer.config.numExperts;
    }
    return Math.round(total);
  }

  /** Sample `maxNewTokens` tokens after `prompt` (temperature 0 = greedy), using a KV cache. */
  generate(prompt: number[], maxNewTokens: number, opts?: { temperature?: number; topP?: number; seed?: number }): number[] {
    const temperature = opts?.temperature ?? 1;
    const gen = new Generator(opts?.seed ?? 0);
    const out = [...prompt];
    const wasTraining = this.training;
    this.eval();
    try {
      noGrad(() => {
        const cache = new KVCache(this.config.nLayers);
        let next = out.slice(-this.config.maxSeqLen);
        for (let step = 0; step < maxNewTokens; step++) {
          if (cache.length + next.length > this.config.maxSeqLen) {
            // Context full: restart the cache on the most recent window.
            cache.layers.fill(null);
            next = out.slice(-Math.floor(this.config.maxSeqLen / 2));
          }
          const { logits } = this.forward(Tensor.indices(next, [1, next.length]), { cache });
          const V = this.config.vocabSize;
          const last = logits.f32.subarray((next.length - 1) * V, next.length * V);
          const tok = sampleToken(last, temperature, opts?.topP ?? 1, gen);
          out.push(tok);
          next = [tok];
        }
      });
    } finally {
      this.train(wasTraining);
    }
    return out.slice(prompt.length);
  }
}

/** Sample from logits with temperature and nucleus (top-p) filtering; temperature 0 is argmax. */
export function sampleToken(logits: Float32Array, temperature: number, topP: number, gen: Generator): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  if (temperature <= 0) return best;
  const probs = new Float64Array(logits.length);
  let total = 0;
  for (let i = 0; i < logits.length; i++) {
    probs[i] = Math.exp((logits[i] - logits[best]) / temperature);
    total += probs[i];
  }
  const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b);
  let kept = 0, mass = 0;
  for (const i of order) {
    mass += probs[i] / total;
    kept++;
    if (mass >= topP) break;
  }
  const nucleus = order.slice(0, kept);
  const z = nucleus.reduce((s, i) => s + probs[i], 0);
  let u = gen.uniform() * z;
  for (const i of nucleus) {
    u -= probs[i];
    if (u <= 0) return i;
  }
  return nucleus[nucleus.length - 1];
}

/**
 * The dense baseline with the same active parameters per token: every MoE block becomes a dense
 * FFN of hidden size k·dFF_expert (+ shared experts' hidden sizes).
 */
export function denseBaselineConfig(c: TransformerLMConfig): TransformerLMConfig {
  if (!c.moe) return { ...c };
  const m = c.moe;
  const k = m.router.type === 'topk' ? m.router.k : 1;
  const expertDFF = m.dFF ?? c.dFF;
  const shared = (m.numSharedExperts ?? 0) * (m.sharedDFF ?? expertDFF);
  const moeEvery = c.moeEvery ?? 1;
  if (moeEvery !== 1 && c.dFF !== k * expertDFF + shared) {
    // One dense width cannot match both the interleaved dense layers and the MoE layers' active width.
    throw new ConfigError('moeEvery', moeEvery, `a dense baseline of an interleaved model needs dFF (${c.dFF}) = k·expert dFF + shared dFF (${k * expertDFF + shared}); set moe.dFF accordingly`);
  }
  return { ...c, moe: null, dFF: k * expertDFF + shared, moeEvery: 1 };
}
