/**
 * Vision Transformer (Dosovitskiy et al. 2021) whose feed-forward blocks are MoE layers every
 * `moeEvery` layers and dense otherwise (V-MoE, Riquelme et al. 2021; Soft MoE, Puigcerver et
 * al. 2023). Patch embedding (a Linear over flattened patches, equivalent to a stride-p Conv2d),
 * learned position embedding, pre-norm LayerNorm encoder blocks with non-causal multi-head
 * self-attention, final LayerNorm, mean pooling over patches (no class token), classifier head.
 *
 * An encoder is not causal, so every router is allowed: top-k token choice, expert choice and
 * Soft MoE. Per-image independence differs by router (see docs on `MoEViT`).
 */
import { ConfigError, ShapeError, describe } from '../errors.js';
import { resolveMoEConfig, type ExpertConfig, type MoEConfig } from '../moe/config.js';
import { ModuleList, MoELayer, type MoEOutput } from '../moe/layer.js';
import { scaledDotProductAttention } from '../ops/attention.js';
import { add } from '../ops/elementwise.js';
import { crossEntropy } from '../ops/loss.js';
import { mean } from '../ops/reduce.js';
import { reshape, transpose } from '../ops/shape.js';
import { Generator } from '../random.js';
import { Tensor, type IndexLike } from '../tensor/tensor.js';
import { LayerNorm, Linear } from './layers.js';
import { Module } from './module.js';
import { DenseFFN, type ModelMoEConfig } from './transformer.js';

export interface ViTConfig {
  /** Side of the (square) input images, in pixels. */
  imageSize: number;
  /** Side of the (square) patches; must divide imageSize. */
  patchSize: number;
  /** Input channels (default 1). */
  channels?: number;
  numClasses: number;
  dModel: number;
  nLayers: number;
  nHeads: number;
  /** Hidden size of dense feed-forward blocks (and of experts unless moe.dFF is set). */
  dFF: number;
  /** Dense FFN kind (default GELU, not gated, as ViT). */
  ffn?: ExpertConfig;
  /** null / absent: a dense model. Any router type is allowed (an encoder is not causal). */
  moe?: ModelMoEConfig | null;
  /** Layer i is MoE when i % moeEvery === moeEvery - 1 (1 = every layer; 2 = every other, as V-MoE). Default 1. */
  moeEvery?: number;
  /** LayerNorm epsilon (default 1e-6, as timm's ViT). */
  normEps?: number;
  seed?: number;
}

/** A config with every default filled in. */
export interface ResolvedViTConfig extends Required<Omit<ViTConfig, 'moe'>> {
  moe: ModelMoEConfig | null;
  /** (imageSize / patchSize)²: tokens per image. */
  numPatches: number;
  /** patchSize² · channels: length of a flattened patch. */
  patchDim: number;
}

function int(v: unknown, field: string, min = 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new ConfigError(field, v, `must be an integer >= ${min}`);
  return v;
}

/** The MoELayer config of a model's MoE block. */
function layerMoEConfig(c: { dModel: number; dFF: number; ffn: ExpertConfig; moe: ModelMoEConfig }, seed: number): MoEConfig {
  const m = c.moe;
  return {
    dModel: c.dModel,
    dFF: m.dFF ?? c.dFF,
    numExperts: m.numExperts,
    expert: m.expert ?? c.ffn,
    router: m.router,
    numSharedExperts: m.numSharedExperts,
    sharedDFF: m.sharedDFF,
    losses: m.losses,
    seed,
  };
}

/** Validate a ViT config (ConfigError names the field, `moe.`-prefixed for the MoE part) and fill defaults. */
export function resolveViTConfig(c: ViTConfig): ResolvedViTConfig {
  if (typeof c !== 'object' || c === null) throw new ConfigError('config', c, 'must be an object');
  const imageSize = int(c.imageSize, 'imageSize');
  const patchSize = int(c.patchSize, 'patchSize');
  if (imageSize % patchSize !== 0) throw new ConfigError('patchSize', patchSize, `must divide imageSize (${imageSize})`);
  const channels = c.channels === undefined ? 1 : int(c.channels, 'channels');
  const ffn = c.ffn ?? { activation: 'gelu', gated: false };
  if (typeof ffn !== 'object' || ffn === null || !['relu', 'gelu', 'silu'].includes(ffn.activation)) {
    throw new ConfigError('ffn.activation', (ffn as ExpertConfig | null)?.activation, "must be 'relu', 'gelu' or 'silu'");
  }
  if (typeof ffn.gated !== 'boolean') throw new ConfigError('ffn.gated', ffn.gated, 'must be a boolean');
  const normEps = c.normEps ?? 1e-6;
  if (typeof normEps !== 'number' || !Number.isFinite(normEps) || normEps < 0) throw new ConfigError('normEps', normEps, 'must be a finite number >= 0');
  const seed = c.seed ?? 0;
  if (typeof seed !== 'number' || !Number.isFinite(seed)) throw new ConfigError('seed', seed, 'must be a finite number');
  const side = imageSize / patchSize;
  const r: ResolvedViTConfig = {
    imageSize,
    patchSize,
    channels,
    numClasses: int(c.numClasses, 'numClasses', 2),
    dModel: int(c.dModel, 'dModel'),
    nLayers: int(c.nLayers, 'nLayers'),
    nHeads: int(c.nHeads, 'nHeads'),
    dFF: int(c.dFF, 'dFF'),
    ffn: { activation: ffn.activation, gated: ffn.gated },
    moe: c.moe ?? null,
    moeEvery: c.moeEvery === undefined ? 1 : int(c.moeEvery, 'moeEvery'),
    normEps,
    seed,
    numPatches: side * side,
    patchDim: patchSize * patchSize * channels,
  };
  if (r.dModel % r.nHeads !== 0) throw new ConfigError('nHeads', r.nHeads, `must divide dModel (${r.dModel})`);
  if (r.moe) {
    if (r.moeEvery > r.nLayers) throw new ConfigError('moeEvery', r.moeEvery, `no layer would be MoE with nLayers = ${r.nLayers}`);
    // Validate the MoE part now, so a bad value is reported as `moe.<field>` before any weight is built.
    try {
      resolveMoEConfig(layerMoEConfig({ dModel: r.dModel, dFF: r.dFF, ffn: r.ffn, moe: r.moe }, 0));
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      const prefix = `${e.field}=${describe(e.value)}: `;
      throw new ConfigError(`moe.${e.field}`, e.value, e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message);
    }
  }
  return r;
}

/**
 * Average expert applications per token of an MoE config on `numPatches` tokens per image (the
 * number the expert FFN cost is multiplied by): top-k: k (an upper bound when a capacity factor
 * drops assignments); expert choice: capacityFactor (each of E experts takes ⌈cf·T/E⌉ of T
 * tokens, ≈ cf·T in all; the ceiling is ignored); Soft MoE: numExperts·slotsPerExpert / numPatches
 * (each image's E·p slots are each processed by one expert, shared by its numPatches tokens).
 */
export function expertApplicationsPerToken(moe: ModelMoEConfig, numPatches: number): number {
  const r = moe.router;
  if (r.type === 'topk') return r.k;
  if (r.type === 'expert-choice') return r.capacityFactor ?? 1;
  return (moe.numExperts * r.slotsPerExpert) / numPatches;
}

/** Multi-head self-attention without a mask (q/k/v/o projections with biases, as ViT). */
export class ViTSelfAttention extends Module {
  readonly nHeads: number;
  readonly headDim: number;
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly o_proj: Linear;
  constructor(dModel: number, nHeads: number, generator: Generator) {
    super();
    this.nHeads = nHeads;
    this.headDim = dModel / nHeads;
    this.q_proj = this.registerModule('q_proj', new Linear(dModel, dModel, { generator }));
    this.k_proj = this.registerModule('k_proj', new Linear(dModel, dModel, { generator }));
    this.v_proj = this.registerModule('v_proj', new Linear(dModel, dModel, { generator }));
    this.o_proj = this.registerModule('o_proj', new Linear(dModel, dModel, { generator }));
  }

  /** x [B, N, dModel] → [B, N, dModel]; every patch attends to every patch of its image. */
  forward(x: Tensor): Tensor {
    const [B, N, d] = x.shape;
    const H = this.nHeads, Dh = this.headDim;
    const heads = (t: Tensor): Tensor => transpose(reshape(t, [B, N, H, Dh]), [0, 2, 1, 3]); // [B, H, N, Dh]
    const o = scaledDotProductAttention(heads(this.q_proj.forward(x)), heads(this.k_proj.forward(x)), heads(this.v_proj.forward(x)), { causal: false });
    return this.o_proj.forward(reshape(transpose(o, [0, 2, 1, 3]), [B, N, d]));
  }
}

/** One pre-norm encoder block: h = x + attn(norm1(x)), then h + mlp(norm2(h)). */
export class ViTBlock extends Module {
  readonly norm1: LayerNorm;
  readonly attn: ViTSelfAttention;
  readonly norm2: LayerNorm;
  readonly mlp: MoELayer | DenseFFN;
  constructor(c: ResolvedViTConfig, isMoE: boolean, generator: Generator, layerSeed: number) {
    super();
    this.norm1 = this.registerModule('norm1', new LayerNorm(c.dModel, c.normEps));
    this.attn = this.registerModule('attn', new ViTSelfAttention(c.dModel, c.nHeads, generator));
    this.norm2 = this.registerModule('norm2', new LayerNorm(c.dModel, c.normEps));
    this.mlp =
      isMoE && c.moe
        ? this.registerModule('mlp', new MoELayer(layerMoEConfig({ dModel: c.dModel, dFF: c.dFF, ffn: c.ffn, moe: c.moe }, layerSeed)))
        : this.registerModule('mlp', new DenseFFN(c.dModel, c.dFF, c.ffn, generator));
  }

  forward(x: Tensor): { h: Tensor; moe: MoEOutput | null } {
    const h = add(x, this.attn.forward(this.norm1.forward(x)));
    const normed = this.norm2.forward(h);
    if (this.mlp instanceof MoELayer) {
      const out = this.mlp.forward(normed);
      return { h: add(h, out.output), moe: out };
    }
    return { h: add(h, this.mlp.forward(normed)), moe: null };
  }
}

/** What a ViT forward returns. */
export interface ViTOutput {
  /** [B, numClasses] */
  logits: Tensor;
  /** Σ of every MoE layer's auxLoss (scalar; 0 for a dense model). */
  auxLoss: Tensor;
  /** Per MoE layer, in depth order: its layer index and forward output (stats, routing). */
  moe: Array<{ layer: number; out: MoEOutput }>;
}

/**
 * Images [B, C, H, W] → flattened patches [B, N, C·p·p], patches in row-major order over the
 * grid and each patch flattened (channel, row, column) — the layout of a Conv2d weight
 * [dModel, C, p, p], so `patch_embed.weight` reshaped to it is the equivalent stride-p conv.
 * Differentiable (reshape/transpose), though an image normally needs no gradient.
 */
export function patchify(images: Tensor, patchSize: number): Tensor {
  if (images.rank !== 4) throw new ShapeError('images', images.shape, 'must be [batch, channels, height, width]');
  const [B, C, H, W] = images.shape;
  const p = patchSize;
  if (H % p !== 0 || W % p !== 0) throw new ShapeError('images', images.shape, `height and width must be multiples of patchSize ${p}`);
  const gh = H / p, gw = W / p;
  const x = transpose(reshape(images, [B, C, gh, p, gw, p]), [0, 2, 4, 1, 3, 5]); // [B, gh, gw, C, p, p]
  return reshape(x, [B, gh * gw, C * p * p]);
}

/**
 * Vision Transformer with MoE feed-forward blocks (see module doc). Parameter names:
 * `patch_embed.{weight,bias}`, `pos_embed` [numPatches, dModel], `blocks.{i}.norm1`,
 * `blocks.{i}.attn.{q,k,v,o}_proj.{weight,bias}`, `blocks.{i}.norm2`, `blocks.{i}.mlp.*` (an
 * MoELayer's `gate.weight`, `experts.{e}.w1.weight`, ... or a dense FFN's `w1.weight`,
 * `w2.weight`; FFNs have no biases, like the experts, so dense and expert blocks count alike),
 * `norm`, `head.{weight,bias}`.
 *
 * Batch dependence, by router: top-k token choice without capacity (dropless) routes each token
 * on its own, and Soft MoE mixes tokens only within an image (its dispatch softmax runs over one
 * image's patches), so an image's logits do not depend on the rest of the batch. Expert choice
 * picks each expert's top ⌈cf·T/E⌉ tokens over the whole batch of T = B·numPatches tokens, and
 * top-k with a capacity factor (capacityScope 'batch') drops assignments over the whole batch:
 * with these an image's logits depend on which other images share its batch. Expert choice and
 * capacity with dropPolicy 'score' are still permutation-equivariant (reordering the batch
 * reorders the logits, score ties aside); dropPolicy 'position' fills capacity in token order,
 * so there even the order of the images in the batch changes who is dropped. Use
 * capacityScope 'sequence' (capacity per image) for per-image independence with capacity.
 */
export class MoEViT extends Module {
  readonly config: ResolvedViTConfig;
  readonly patch_embed: Linear;
  readonly pos_embed: Tensor;
  readonly blocks: ModuleList<ViTBlock>;
  readonly norm: LayerNorm;
  readonly head: Linear;

  constructor(config: ViTConfig) {
    super();
    const c = (this.config = resolveViTConfig(config));
    const g = new Generator(c.seed);
    this.patch_embed = this.registerModule('patch_embed', new Linear(c.patchDim, c.dModel, { generator: g }));
    // Learned position embedding, N(0, 0.02) (timm's trunc_normal_(std=.02), untruncated).
    const pos = Tensor.randn([c.numPatches, c.dModel], { generator: g });
    const pd = pos.data as Float32Array;
    for (let i = 0; i < pd.length; i++) pd[i] *= 0.02;
    this.pos_embed = this.registerParameter('pos_embed', pos);
    this.blocks = this.registerModule(
      'blocks',
      new ModuleList(Array.from({ length: c.nLayers }, (_, i) => new ViTBlock(c, c.moe !== null && i % c.moeEvery === c.moeEvery - 1, g, c.seed * 1000 + i + 1))),
    );
    this.norm = this.registerModule('norm', new LayerNorm(c.dModel, c.normEps));
    this.head = this.registerModule('head', new Linear(c.dModel, c.numClasses, { generator: g }));
  }

  /** Tokens per image. */
  get numPatches(): number {
    return this.config.numPatches;
  }

  /** Indices of the blocks whose feed-forward is an MoE layer. */
  moeLayerIndices(): number[] {
    return this.blocks.items.flatMap((b, i) => (b.mlp instanceof MoELayer ? [i] : []));
  }

  /** The MoE layers themselves (for bias balancing updates, stats). */
  moeLayers(): MoELayer[] {
    return this.blocks.items.flatMap((b) => (b.mlp instanceof MoELayer ? [b.mlp] : []));
  }

  private checkImages(images: Tensor): Tensor {
    const c = this.config;
    if (!(images instanceof Tensor) || images.dtype !== 'float32') throw new ShapeError('images', (images as Tensor | undefined)?.shape, 'must be a float32 tensor');
    const want = `[batch, ${c.channels}, ${c.imageSize}, ${c.imageSize}]${c.channels === 1 ? ` or [batch, ${c.imageSize}, ${c.imageSize}]` : ''}`;
    let x = images;
    if (x.rank === 3 && c.channels === 1) x = reshape(x, [x.shape[0], 1, x.shape[1], x.shape[2]]);
    if (x.rank !== 4 || x.shape[1] !== c.channels || x.shape[2] !== c.imageSize || x.shape[3] !== c.imageSize) {
      throw new ShapeError('images', images.shape, `must be ${want}`);
    }
    return x;
  }

  /** images [B, C, H, W] (or [B, H, W] when channels = 1) → logits [B, numClasses]. */
  forward(images: Tensor): ViTOutput {
    const x = this.checkImages(images);
    let h = add(this.patch_embed.forward(patchify(x, this.config.patchSize)), this.pos_embed); // [B, N, d]
    const moe: ViTOutput['moe'] = [];
    let auxLoss: Tensor | null = null;
    this.blocks.items.forEach((block, i) => {
      const res = block.forward(h);
      h = res.h;
      if (res.moe) {
        moe.push({ layer: i, out: res.moe });
        auxLoss = auxLoss ? add(auxLoss, res.moe.auxLoss) : res.moe.auxLoss;
      }
    });
    const pooled = mean(this.norm.forward(h), 1); // [B, d]
    return { logits: this.head.forward(pooled), auxLoss: auxLoss ?? Tensor.scalar(0), moe };
  }

  /** Mean cross-entropy of the logits against int32 class labels [B] (aux loss not added), plus the output. */
  loss(images: Tensor, labels: IndexLike): { loss: Tensor; out: ViTOutput } {
    const out = this.forward(images);
    return { loss: crossEntropy(out.logits, labels), out };
  }

  /**
   * Active parameters per token: everything but the experts, plus each MoE layer's expert
   * parameters × (expert applications per token / numExperts) — see expertApplicationsPerToken
   * (k for top-k, capacityFactor for expert choice, E·slotsPerExpert/numPatches for Soft MoE).
   * Shared experts and the router count in full; the Gaussian-noise weights (training only) do not.
   */
  activeParameters(): number {
    let total = 0;
    for (const [name, t] of this.namedParameters()) {
      const m = /^blocks\.(\d+)\.mlp\.experts\.(\d+)\./.exec(name);
      if (!m) {
        if (!name.includes('.mlp.gate.noise.')) total += t.size;
        continue;
      }
      const layer = this.blocks.items[Number(m[1])].mlp as MoELayer;
      const moe = this.config.moe as ModelMoEConfig;
      total += (t.size * expertApplicationsPerToken(moe, this.config.numPatches)) / layer.config.numExperts;
    }
    return Math.round(total);
  }
}

/**
 * The dense baseline with the same active FFN width per token: every MoE block becomes a dense
 * FFN of hidden size round(a · dFF_expert) + shared experts' hidden sizes, where a is the
 * average expert applications per token (expertApplicationsPerToken): k for top-k (capacity
 * drops ignored: k is what the compute is provisioned for), capacityFactor for expert choice,
 * numExperts·slotsPerExpert/numPatches for Soft MoE. This matches the experts' parameters used
 * per token and their FLOPs (2·3 or 2·2 multiply-adds per weight, gated or not). Not matched: the
 * router (E·dModel weights, or E·p·dModel for Soft MoE) and, for Soft MoE, the dispatch/combine
 * products (≈ 4·E·p·dModel FLOPs per token); a fractional width is rounded to the nearest integer
 * (at least 1). The dense FFN takes the experts' kind (moe.expert ?? ffn).
 */
export function denseViTConfig(c: ViTConfig): ViTConfig {
  const r = resolveViTConfig(c);
  if (!r.moe) return { ...c, moe: null };
  const m = r.moe;
  const expertDFF = m.dFF ?? r.dFF;
  const shared = (m.numSharedExperts ?? 0) * (m.sharedDFF ?? expertDFF);
  const width = Math.max(1, Math.round(expertApplicationsPerToken(m, r.numPatches) * expertDFF)) + shared;
  const kind = m.expert ?? r.ffn;
  if (r.moeEvery !== 1) {
    // One dense width cannot match both the interleaved dense layers and the MoE layers' active width.
    if (r.dFF !== width) {
      throw new ConfigError('moeEvery', r.moeEvery, `a dense baseline of an interleaved model needs dFF (${r.dFF}) = the MoE layers' active width (${width}); set moe.dFF accordingly`);
    }
    if (kind.activation !== r.ffn.activation || kind.gated !== r.ffn.gated) {
      throw new ConfigError('moe.expert', kind, `a dense baseline of an interleaved model needs the experts' kind to equal ffn (${JSON.stringify(r.ffn)})`);
    }
  }
  return { ...c, moe: null, dFF: width, ffn: { ...kind }, moeEvery: 1 };
}
