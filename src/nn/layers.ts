/**
 * Basic layers, PyTorch layouts and initialisations: Linear, Embedding, RMSNorm, LayerNorm.
 * Parameter names (`weight`, `bias`) match torch.nn so state dicts map one to one.
 */
import { ValueError } from '../errors.js';
import { gatherRows } from '../ops/gather.js';
import { linear } from '../ops/matmul.js';
import { layerNorm, rmsNorm } from '../ops/norm.js';
import { Generator, defaultGenerator } from '../random.js';
import { Tensor, type IndexLike } from '../tensor/tensor.js';
import { Module } from './module.js';

/** Where a layer's initial values come from: a fresh generator for `seed`, a shared `generator`, or the process-wide one. */
export interface InitOptions {
  /** Seed a fresh generator for this layer (same seed ⇒ same initial weights). */
  seed?: number;
  /** Or draw from this generator, advancing it (build a whole model from one stream). */
  generator?: Generator;
}

function initGenerator(opts: InitOptions | undefined): Generator {
  if (opts?.generator) return opts.generator;
  if (opts?.seed !== undefined) return new Generator(opts.seed);
  return defaultGenerator();
}

function checkDim(field: string, value: number, allowZero = true): void {
  if (!Number.isInteger(value) || value < 0 || (!allowZero && value === 0)) {
    throw new ValueError(field, value, `must be a ${allowZero ? 'non-negative' : 'positive'} integer`);
  }
}

function checkEps(field: string, eps: number): void {
  if (!Number.isFinite(eps) || eps < 0) throw new ValueError(field, eps, 'must be a finite number >= 0');
}

export interface LinearOptions extends InitOptions {
  /** Add a learned bias (default true). */
  bias?: boolean;
}

/**
 * Fully connected layer y = x·Wᵀ + b with W [out, in] (torch.nn.Linear). Initialisation as
 * PyTorch's reset_parameters: kaiming_uniform(a=√5) gives W ~ U(-1/√in, 1/√in), and
 * b ~ U(-1/√in, 1/√in); weight is drawn before bias from the same generator.
 */
export class Linear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(inFeatures: number, outFeatures: number, opts?: LinearOptions) {
    super();
    checkDim('Linear.inFeatures', inFeatures);
    checkDim('Linear.outFeatures', outFeatures);
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    const g = initGenerator(opts);
    // gain(leaky_relu, a=√5)·√(3/fan_in) = √(1/3)·√(3/fan_in) = 1/√fan_in; torch uses bound 0 when fan_in is 0.
    const bound = inFeatures > 0 ? 1 / Math.sqrt(inFeatures) : 0;
    this.weight = this.registerParameter('weight', Tensor.rand([outFeatures, inFeatures], { generator: g, low: -bound, high: bound }));
    this.bias = opts?.bias === false ? null : this.registerParameter('bias', Tensor.rand([outFeatures], { generator: g, low: -bound, high: bound }));
  }

  /** y = x·Wᵀ + b for x [..., in] → [..., out]. */
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

/** Lookup table of `numEmbeddings` learned vectors of size `embeddingDim` (torch.nn.Embedding, N(0, 1) init). */
export class Embedding extends Module {
  readonly numEmbeddings: number;
  readonly embeddingDim: number;
  readonly weight: Tensor;

  constructor(numEmbeddings: number, embeddingDim: number, opts?: InitOptions) {
    super();
    checkDim('Embedding.numEmbeddings', numEmbeddings);
    checkDim('Embedding.embeddingDim', embeddingDim);
    this.numEmbeddings = numEmbeddings;
    this.embeddingDim = embeddingDim;
    this.weight = this.registerParameter('weight', Tensor.randn([numEmbeddings, embeddingDim], { generator: initGenerator(opts) }));
  }

  /** Rows of the table for int32 ids of any shape → [...ids.shape, embeddingDim]. */
  forward(ids: IndexLike): Tensor {
    return gatherRows(this.weight, ids);
  }
}

/** Root-mean-square normalisation (Zhang & Sennrich 2019): y = x / √(mean(x²) + eps) · w over the last axis; w starts at 1. */
export class RMSNorm extends Module {
  readonly dim: number;
  readonly eps: number;
  readonly weight: Tensor;

  constructor(dim: number, eps = 1e-6) {
    super();
    checkDim('RMSNorm.dim', dim, false);
    checkEps('RMSNorm.eps', eps);
    this.dim = dim;
    this.eps = eps;
    this.weight = this.registerParameter('weight', Tensor.ones([dim]));
  }

  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.weight, this.eps);
  }
}

export interface LayerNormOptions {
  /** Learn a bias (default true; false as in torch.nn.LayerNorm(bias=False)). */
  bias?: boolean;
}

/** Layer normalisation (Ba et al. 2016): y = (x - mean) / √(var + eps) · w + b over the last axis; w = 1, b = 0 at init. */
export class LayerNorm extends Module {
  readonly dim: number;
  readonly eps: number;
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(dim: number, eps = 1e-5, opts?: LayerNormOptions) {
    super();
    checkDim('LayerNorm.dim', dim, false);
    checkEps('LayerNorm.eps', eps);
    this.dim = dim;
    this.eps = eps;
    this.weight = this.registerParameter('weight', Tensor.ones([dim]));
    this.bias = opts?.bias === false ? null : this.registerParameter('bias', Tensor.zeros([dim]));
  }

  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}
