/**
 * Decoder-only transformer language model whose feed-forward blocks are MoE layers every
 * `moeEvery` layers (Switch/GShard-style interleaving) and dense otherwise; pre-norm RMSNorm,
 * rotary positions, multi-head causal attention, tied LM head (Llama/Mixtral layout).
 */
import type { Activation } from '../backend/interface.js';
import { ConfigError, ShapeError } from '../errors.js';
import { ExpertFFN, ModuleList, MoELayer, type MoEOutput } from '../moe/layer.js';
import type { ExpertConfig, LossConfig, MoEConfig, RouterConfig } from '../moe/config.js';
import { add } from '../ops/elementwise.js';
import { matmul } from '../ops/matmul.js';
import { applyRotary } from '../ops/rope.js';
import { concat, reshape, transpose } from '../ops/shape.js';
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
  losses?: LossConfig;
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
}

/** Key/value cache for incremental decoding: per layer [B, H, T, Dh] tensors. */
export class KVCache {
  readonly layers: Array<{ k: Tensor; v: Tensor } | null>;
  constructor(nLayers: number) {
    this.layers = new Array(nLayers).fill(null);
  }
  /** Cached positions (0 when empty). */
  get length(): number {
    return this.layers[0]?.k.shape[2] ?? 0;
  }
}

/** Multi-head causal self-attention with rotary positions (q/k/v/o projections, no biases). */
export class CausalSelfAttention extends Module {
  readonly nHeads: number;
  readonly headDim: number;
  readonly ropeTheta: number;
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly o_proj: Linear;
  constructor(dModel: number, nHeads: number, ropeTheta: number, generator: Generator) {
    super();
    this.nHeads = nHeads;
    this.headDim = dModel / nHeads;
    this.ropeTheta = ropeTheta;
    this.q_proj = this.registerModule('q_proj', new Linear(dModel, dModel, { bias: false, generator }));
    this.k_proj = this.registerModule('k_proj', new Linear(dModel, dModel, { bias: false, generator }));
    this.v_proj = this.registerModule('v_proj', new Linear(dModel, dModel, { bias: false, generator }));
    this.o_proj = this.registerModule('o_proj', new Linear(dModel, dModel, { bias: false, generator }));
  }

  /** x [B, T, dModel] → [B, T, dModel]; with a cache entry, attends over cached + new keys. */
  forward(x: Tensor, cache?: { entry: { k: Tensor; v: Tensor } | null; set: (kv: { k: Tensor; v: Tensor }) => void }): Tensor {
    const [B, T, d] = x.shape;
    const H = this.nHeads, Dh = this.headDim;
    const heads = (t: Tensor): Tensor => transpose(reshape(t, [B, T, H, Dh]), [0, 2, 1, 3]); // [B, H, T, Dh]
    const start = cache?.entry ? cache.entry.k.shape[2] : 0;
    const q = applyRotary(heads(this.q_proj.forward(x)), { startPos: start, base: this.ropeTheta });
    let k = applyRotary(heads(this.k_proj.forward(x)), { startPos: start, base: this.ropeTheta });
    let v = heads(this.v_proj.forward(x));
    if (cache) {
      if (cache.entry) {
        k = concat([cache.entry.k, k], 2);
        v = concat([cache.entry.v, v], 2);
      }
      cache.set({ k: k.detach(), v: v.detach() });
    }
    const o = scaledDotProductAttention(q, k, v, { causal: true });
    return this.o_proj.forward(reshape(transpose(o, [0, 2, 1, 3]), [B, T, d]));
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
  readonly self_attn: CausalSelfAttention;
  readonly post_attention_layernorm: RMSNorm;
  readonly mlp: MoELayer | DenseFFN;
  constructor(c: ResolvedLMConfig, isMoE: boolean, generator: Generator, layerSeed: number) {
    super();
    this.input_layernorm = this.registerModule('input_layernorm', new RMSNorm(c.dModel, c.normEps));
    this.self_attn = this.registerModule('self_attn', new CausalSelfAttention(c.dModel, c.nHeads, c.ropeTheta, generator));
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
        losses: m.losses,
        seed: layerSeed,
      };
      this.mlp = this.registerModule('mlp', new MoELayer(cfg));
    } else {
      this.mlp = this.registerModule('mlp', new DenseFFN(c.dModel, c.dFF, c.ffn, generator));
    }
  }

  forward(x: Tensor, cache?: Parameters<CausalSelfAttention['forward']>[1]): { h: Tensor; moe: MoEOutput | null } {
    const h = add(x, this.self_attn.forward(this.input_layernorm.forward(x), cache));
    const normed = this.post_attention_layernorm.forward(h);
    if (this.mlp instanceof MoELayer) {
      const out = this.mlp.forward(normed);
      return { h: add(h, out.output), moe: out };
    }
    return { h: add(h, this.mlp.forward(normed)), moe: null };
  }
}

/** A config with every default filled in. */
export interface ResolvedLMConfig extends Required<Omit<TransformerLMConfig, 'moe'>> {
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
  if (r.dModel % r.nHeads !== 0) throw new ConfigError('nHeads', r.nHeads, `must divide dModel (${r.dModel})`);
  if ((r.dModel / r.nHeads) % 2 !== 0) throw new ConfigError('nHeads', r.nHeads, `head size dModel/nHeads = ${r.dModel / r.nHeads} must be even for rotary positions`);
  if (r.moe) {
    const t = r.moe.router?.type;
    if (t === 'expert-choice' || t === 'soft') {
      throw new ConfigError('moe.router.type', t, "is not causal (it mixes tokens across the sequence/batch); a language model needs a token-choice router ('topk')");
    }
  }
  return r;
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
      new ModuleList(Array.from({ length: c.nLayers }, (_, i) => new DecoderLayer(c, c.moe !== null && i % c.moeEvery === c.moeEvery - 1, g, c.seed * 1000 + i + 1))),
    );
    this.norm = this.registerModule('norm', new RMSNorm(c.dModel, c.normEps));
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
    const logits = reshape(matmul(reshape(h, [B * T, c.dModel]), this.embed_tokens.weight, { transB: true }), [B, T, c.vocabSize]);
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
